"""Choosing a backend: `minivae backends`, refusals in one line, and the CPU backends agreeing.

The numba backend draws its noise from the same NumPy generator as the numpy
backend, so the same seed gives the same eps, and a training run must follow
the same ELBO curve up to float32 rounding.
"""
import json

import numpy as np
import pytest

from minivae import backend, versions
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
                     "pip install 'numpy<2.5'", "minivae[gpu-cuda12]"):
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


def test_a_kernel_failing_to_compile_on_row_stack_gives_the_same_line(monkeypatch):
    fake_numba_cuda_with_numpy_2_5(monkeypatch)

    def jit(signature):
        def compile_now(function):
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return compile_now
    assert versions.numba_cuda_compile_failure(jit) == versions.numpy_too_new_for_numba_cuda()
    assert versions.numba_cuda_compile_failure(lambda signature: lambda function: function) is None  # it compiled
