"""Every CUDA C source of the CuPy kernels compiles to PTX with nvcc, for Ampere (sm_80) and Hopper (sm_90).

No GPU is needed: this checks syntax, types and template instantiation, and
that each ``extern "C"`` kernel CuPy looks up by name is in the PTX.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import minivae.kernels
from minivae.kernels import cupy_kernels

KERNEL_DIR = Path(minivae.kernels.__file__).parent
SOURCES = sorted(KERNEL_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")
ARCHS = ("sm_80", "sm_90")

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH: install the CUDA toolkit "
                                                      "to compile-check kernels/*.cu")

# pointwise.cu holds only templates, which nvcc checks fully only once instantiated.
POINTWISE_PROBE = """#include "pointwise.cu"
template <typename T>
__global__ void probe(const T* a, T* out, int code) {
    int i = threadIdx.x;
    out[i] = mv_activate(code, a[i]) + mv_activate_grad(code, a[i])
           + mv_kl_term(a[i], a[i]) + mv_bernoulli_term(a[i], a[i]);
}
template __global__ void probe<float>(const float*, float*, int);
template __global__ void probe<double>(const double*, double*, int);
"""


def _ptx(source, arch, tmp_path, include_path=True):
    out = tmp_path / f"{source.stem}-{arch}.ptx"
    cmd = [NVCC, "-ptx", f"-arch={arch}", *([f"-I{KERNEL_DIR}"] if include_path else []), "-o", str(out), str(source)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return out.read_text()


def test_the_cupy_kernels_sources_are_all_here():
    assert {p.name for p in SOURCES} >= {"pointwise.cu", "reduce.cu", "optim.cu", "random.cu"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_source_compiles_to_ptx(source, arch, tmp_path):
    ptx = _ptx(source, arch, tmp_path)
    for kernel in re.findall(r'extern "C" __global__ void (\w+)', source.read_text()):
        assert f".entry {kernel}(" in ptx, f"{kernel} missing from the PTX of {source.name}"


@pytest.mark.parametrize("arch", ARCHS)
def test_pointwise_formulas_instantiate_for_float_and_double(arch, tmp_path):
    probe = tmp_path / "pointwise_probe.cu"
    probe.write_text(POINTWISE_PROBE)
    assert ".entry" in _ptx(probe, arch, tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_generator_source_cupy_compiles_needs_no_include_path(arch, tmp_path):
    """CuPy is handed random.cu with philox.cuh inlined: it compiles on its own, with every draw kernel in it."""
    inlined = tmp_path / "random_inlined.cu"
    inlined.write_text(cupy_kernels._source("random.cu"))
    ptx = _ptx(inlined, arch, tmp_path, include_path=False)
    for kernel in ("philox_normals_f32", "philox_normals_f64", "philox_advance"):
        assert f".entry {kernel}(" in ptx
