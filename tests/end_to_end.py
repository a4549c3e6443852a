"""The whole user path on one backend, through the command line: train, resume, evaluate, sample, reconstruct, graph.

Shared by ``cudasim/test_commands.py`` (numba-cuda under the simulator, in
CI) and ``test_gpu.py`` (cupy and numba-cuda on a real device, marked
``gpu``). The run is tiny because the simulator runs each CUDA thread in
Python: 8 training and 8 test images, one step per epoch.
"""
import math
import re

from minivae import backend
from minivae.app.checkpoint import load_checkpoint
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from runs import assert_same_run, run_cli, skip_figures

SMALL = ["--train-examples", "8", "--test-examples", "8", "--batch-size", "8", "--hidden", "8",
         "--plot-interval", "0", "--quiet"]


def check_user_path(name, tmp_path, capsys, monkeypatch):
    """Every command a user runs after training, on backend ``name``; training's own figures are skipped."""
    skip_figures(monkeypatch)
    try:
        checkpoint = check_exact_resume(name, tmp_path, capsys)
        check_evaluate(name, checkpoint, capsys)
        for command, figure in (("sample", "sample_epoch2_seed0.png"), ("reconstruct", "reconstruction_epoch2.png")):
            status, out, err = run_cli([command, str(checkpoint), "--backend", name], capsys)
            assert status == 0, err
            assert (checkpoint.parent / figure).stat().st_size > 0, out
        check_graph(name, checkpoint, capsys)
    finally:
        backend.set_backend("numpy")


def check_exact_resume(name, tmp_path, capsys, *options):
    """1 epoch, then --resume to 2, ends bit-identical to 2 epochs straight; returns the resumed checkpoint.

    ``options`` go to every ``minivae train`` (e.g. ``--cuda-graph``).
    """
    def train(out, epochs, *extra):
        status, _, err = run_cli(["train", "--backend", name, *SMALL, *options, "--epochs", str(epochs),
                                  "--out", str(out), *extra], capsys)
        assert status == 0, err
        return out / CHECKPOINT_NAME

    straight = train(tmp_path / "straight", 2)
    stopped = train(tmp_path / "stopped", 1)
    resumed = train(tmp_path / "stopped", 2, "--resume", str(stopped))
    assert_same_run(straight, resumed)
    _, meta = load_checkpoint(resumed)
    assert meta["backend"] == name
    if name in ("cupy", "numba-cuda"):
        assert meta["rng"]["sample"]["generator"] == "Philox4x32-10", meta["rng"]
    return resumed


def check_evaluate(name, checkpoint, capsys):
    """``evaluate --iw-samples 4`` prints a finite test ELBO and a finite importance-weighted NLL."""
    status, out, err = run_cli(["evaluate", str(checkpoint), "--backend", name, "--iw-samples", "4",
                                "--limit", "4", "--batch-size", "4"], capsys)
    assert status == 0, err
    elbo = re.search(r"test ELBO \(K=1\): (\S+) nats", out)
    nll = re.search(r"K=4 .*: (\S+) \+- (\S+) nats", out)
    assert elbo and nll, out
    assert all(math.isfinite(float(value)) for value in (elbo[1], nll[1], nll[2])), out


def check_graph(name, checkpoint, capsys):
    """``graph --only elbo`` draws the checkpoint's ELBO tape: the device's noise eps is a leaf with no gradient."""
    out_dir = checkpoint.parent / "graphs"
    status, out, err = run_cli(["graph", "--checkpoint", str(checkpoint), "--backend", name, "--only", "elbo",
                                "--examples", "2", "--out", str(out_dir)], capsys)
    assert status == 0, err
    assert "elbo: " in out and "no gradient reaches x, eps" in out, out
    assert (out_dir / "tape_elbo.png").stat().st_size > 0 and (out_dir / "tape_elbo.dot").stat().st_size > 0
