"""``python -m minivae.benchmarks.registers``: ptxas's report read right, the CUDA C draw compiled where nvcc is,
the numba-cuda kernels where numba-cuda is, and one line naming what is missing elsewhere."""
import shutil
import subprocess
import sys

import pytest

from minivae.benchmarks import registers
from minivae.versions import installed_version

HAS_NUMBA_CUDA = installed_version("numba-cuda") is not None

PTXAS_REPORT = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'philox_advance' for 'sm_90'
ptxas info    : Function properties for philox_advance
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 14 registers, used 0 barriers
ptxas info    : Compiling entry function '_Z13matmul_kernel' for 'sm_90'
ptxas info    : Used 80 registers, used 1 barriers, 4096 bytes smem
"""


def test_ptxas_report_gives_each_entry_its_registers_and_shared_memory():
    assert registers.ptxas_usage(PTXAS_REPORT) == {"philox_advance": (14, 0), "_Z13matmul_kernel": (80, 4096)}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_the_cuda_c_draw_compiles_within_a_threads_register_file():
    ((name, (used, shared)),) = registers.cuda_c_usage().items()
    assert name == "philox_normals_f32 (CUDA C)" and 0 < used <= 255 and shared == 0


@pytest.mark.gpu  # where numba-cuda is installed: gpu_check's `pytest -m gpu` runs it
@pytest.mark.skipif(not HAS_NUMBA_CUDA or shutil.which("ptxas") is None, reason="needs numba-cuda and ptxas")
def test_the_numba_cuda_kernels_compile_for_sm_90_without_a_gpu():
    usage = registers.numba_cuda_usage()
    assert set(usage) == {"matmul 16x16", "matmul 8x8", "normals (numba-cuda)"}
    assert all(0 < used <= 255 for used, _ in usage.values())
    assert usage["matmul 16x16"][1] == 2 * usage["matmul 8x8"][1] > 0  # two shared tiles, twice as wide


@pytest.mark.skipif(HAS_NUMBA_CUDA, reason="numba-cuda is installed: the command runs")
def test_without_numba_cuda_it_says_so_in_one_line():
    done = subprocess.run([sys.executable, "-m", "minivae.benchmarks.registers"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "numba-cuda is not installed" in line and "pip install numba-cuda" in line
