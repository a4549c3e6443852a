"""Choosing a backend: `minivae backends`, refusals in one line, and the CPU backends agreeing.

The numba backend draws its noise from the same NumPy generator as the numpy
backend, so the same seed gives the same eps, and a training run must follow
the same ELBO curve up to float32 rounding.
"""
import json

import numpy as np
import pytest

from minivae import backend
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
