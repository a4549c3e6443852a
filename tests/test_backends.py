"""Choosing a backend: `minivae backends`, refusals in one line, and the CPU backends agreeing.

The numba backend draws its noise from the same NumPy generator as the numpy
backend, so the same seed gives the same eps, and a training run must follow
the same ELBO curve up to float32 rounding.
"""
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from numba.cuda.cudadrv.error import NvvmSupportError
from numba.cuda.cudadrv.nvvm import MISSING_LIBDEVICE_FILE_MSG

from minivae import backend, versions
from minivae.kernels import reference
from runs import assert_one_line_error, run_cli, skip_figures, train_argv


def test_backends_lists_every_backend_with_a_status(capsys):
    status, out, _ = run_cli(["backends"], capsys)
    assert status == 0
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert set(lines) == set(backend.BACKEND_NAMES)
    assert lines["numpy"].startswith("available")
    for name, reason in backend.available_backends().items():
        assert lines[name].startswith("available" if reason is None else reason)


@pytest.mark.parametrize("name", ["cupy", "numba-cuda"])
def test_a_gpu_backend_without_a_gpu_is_refused_in_one_line(name, tmp_path, capsys):
    reason = backend.available_backends()[name]
    if reason is None:
        pytest.skip(f"{name} can run here")
    status, _, err = run_cli(train_argv(tmp_path, 1, "--backend", name), capsys)
    assert_one_line_error(status, err, name, "--backend numpy")


def test_environment_variable_selects_the_backend(monkeypatch):
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.setenv(backend.ENV_VAR, "numba")
    try:
        assert backend.get_backend().name == "numba"
    finally:
        backend.set_backend("numpy")


def elbo_curve(out, name, capsys):
    status, _, err = run_cli(train_argv(out, 3, "--backend", name), capsys)
    backend.set_backend("numpy")
    assert status == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(row["train_elbo"], row["test_elbo"]) for row in rows]


def test_numba_trains_along_the_numpy_curve(tmp_path, capsys, monkeypatch):
    skip_figures(monkeypatch)
    numpy_curve = elbo_curve(tmp_path / "numpy", "numpy", capsys)
    numba_curve = elbo_curve(tmp_path / "numba", "numba", capsys)
    np.testing.assert_allclose(numba_curve, numpy_curve, rtol=1e-4)
    assert numpy_curve[-1][0] > numpy_curve[0][0]  # and the curve is a real training curve


# ----- Versions that do not work together, found without a device -----

def fake_numba_cuda_with_numpy_2_5(monkeypatch, version="0.30.4"):
    """Pretend numba-cuda ``version`` is installed beside a numpy without np.row_stack (as numpy 2.5 is)."""
    monkeypatch.setattr(versions, "installed_version", lambda package: version if package == "numba-cuda" else None)
    monkeypatch.delattr(versions.np, "row_stack", raising=False)
    monkeypatch.setattr(versions.np, "__version__", "2.5.2")


def test_backends_reports_numba_cuda_too_old_for_numpy_in_one_line(monkeypatch, capsys):
    fake_numba_cuda_with_numpy_2_5(monkeypatch)
    status, out, _ = run_cli(["backends"], capsys)
    line = dict(line.split(None, 1) for line in out.splitlines())["numba-cuda"]
    assert status == 0
    for fragment in ("numba-cuda 0.30.4 needs numpy < 2.5", "np.row_stack", "numpy 2.5.2",
                     "pip install 'numpy<2.5'", versions.GPU_INSTALL):
        assert fragment in line, line


def test_train_on_that_combination_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    fake_numba_cuda_with_numpy_2_5(monkeypatch)
    status, _, err = run_cli(train_argv(tmp_path, 1, "--backend", "numba-cuda"), capsys)
    assert_one_line_error(status, err, "needs numpy < 2.5", "pip install 'numpy<2.5'")


@pytest.mark.parametrize("version, has_row_stack", [("0.31.0", False), ("0.30.4", True), (None, False)])
def test_other_combinations_are_not_flagged(monkeypatch, version, has_row_stack):
    fake_numba_cuda_with_numpy_2_5(monkeypatch, version)
    if has_row_stack:
        monkeypatch.setattr(versions.np, "row_stack", np.vstack, raising=False)
    assert versions.numpy_too_new_for_numba_cuda() is None


# ----- The first product on a GPU backend: a library or a compiler missing, in one line -----

def gpu_backend_whose_product(raises=None, gives=None):
    """A stand-in for a GPU backend (NumPy arrays) whose matmul raises ``raises``, or returns ``gives``."""
    def matmul(a, b, trans_a=False, trans_b=False):
        if raises is not None:
            raise raises
        return reference.matmul(a, b, trans_a, trans_b) if gives is None else gives
    return backend.Backend("numba-cuda", np, types.SimpleNamespace(matmul=matmul))


def test_a_kernel_failing_to_compile_on_row_stack_gives_the_same_line(monkeypatch):
    fake_numba_cuda_with_numpy_2_5(monkeypatch)
    failing = gpu_backend_whose_product(AttributeError("module 'numpy' has no attribute 'row_stack'"))
    assert backend.product_failure(failing) == versions.numpy_too_new_for_numba_cuda()
    assert backend.product_failure(gpu_backend_whose_product()) is None  # it compiled, and computed right


@pytest.mark.parametrize("failure, cause", [
    (NvvmSupportError("libNVVM is not available"), "NvvmSupportError: libNVVM is not available"),
    (RuntimeError(MISSING_LIBDEVICE_FILE_MSG), "RuntimeError: Missing libdevice file."),
], ids=["no NVVM", "no libdevice"])
def test_numba_cuda_without_nvvm_or_libdevice_says_so_in_one_line(failure, cause):
    """What numba-cuda raises (cudadrv/nvvm.py) when libNVVM or the libdevice file cannot be found."""
    line = backend.product_failure(gpu_backend_whose_product(failure))
    assert "\n" not in line and line.startswith("numba-cuda: a 2x3 product on the device failed")
    assert cause in line and versions.GPU_INSTALL in line


def test_a_product_that_comes_out_wrong_is_refused():
    wrong = gpu_backend_whose_product(gives=np.zeros((2, 2), np.float32))
    assert backend.product_failure(wrong) == "numba-cuda: a 2x3 product on the device came out [[0.0, 0.0], " \
                                             "[0.0, 0.0]], not [[5.0, 14.0], [14.0, 50.0]]"


class DynamicLibNotFoundError(RuntimeError):
    """cuda.pathfinder's error, raised through nvmath's bindings when a library such as libcublas is not found."""


@pytest.fixture
def fake_gpu(monkeypatch):
    """The fake CuPy and cuBLAS bindings installed; numpy the backend again afterwards."""
    import fake_cupy
    import fake_nvmath
    fake_cupy.install(monkeypatch)
    yield fake_nvmath.install(monkeypatch)
    backend.set_backend("numpy")


def backends_lines(capsys):
    status, out, _ = run_cli(["backends"], capsys)
    assert status == 0
    return dict(line.split(None, 1) for line in out.splitlines())


def test_cupy_with_its_libraries_is_available(fake_gpu, capsys):
    assert backends_lines(capsys)["cupy"] == "available"


def test_cupy_without_cublas_says_so_in_one_line(fake_gpu, monkeypatch, capsys, tmp_path):
    def create():
        raise DynamicLibNotFoundError('Failure finding "libcublas.so": No such file: libcublas.so*\n'
                                      '  listdir("/usr/local/cuda/lib64"): ...')
    monkeypatch.setattr(fake_gpu, "create", create)
    line = backends_lines(capsys)["cupy"]
    assert line == ('cupy: a 2x3 product on the device failed (DynamicLibNotFoundError: Failure finding "libcublas.so": '
                    f'No such file: libcublas.so*); {versions.GPU_INSTALL} installs what the GPU backends load '
                    '(cuBLAS, nvmath-python, NVVM and libdevice)')
    status, _, err = run_cli(train_argv(tmp_path, 1, "--backend", "cupy"), capsys)
    assert_one_line_error(status, err, "cupy: a 2x3 product on the device failed", "libcublas.so")


def test_cupy_without_nvmath_says_so_in_one_line(fake_gpu, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvmath", None)  # import nvmath: ModuleNotFoundError, as when not installed
    assert backends_lines(capsys)["cupy"] == (f"cupy: needs nvmath-python (cuBLAS's bindings): not installed "
                                              f"({versions.GPU_INSTALL})")


def test_every_gpu_install_hint_is_the_readmes():
    """One install command for the GPU backends, written once (``versions.GPU_INSTALL``) and shown in the README."""
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    command, alternative = re.fullmatch(r'(pip install -e "\S+") \(or ("\S+" for a CUDA 13 driver)\)',
                                        versions.GPU_INSTALL).groups()
    assert f"{command}    # or {alternative}" in readme
    elsewhere = [f"{path.relative_to(root)}: {match}" for folder in ("minivae", "kernels", "benchmarks")
                 for path in (root / folder).rglob("*.py") if path.name != "versions.py"
                 for match in re.findall(r"\[gpu[\w-]*\]", path.read_text())]
    assert not elsewhere, "install hints not taken from versions.GPU_INSTALL:\n" + "\n".join(elsewhere)
