"""Tiny training runs for the tests of ``minivae train``, and what to read back from them.

A run on the bundled digits with 16 hidden units takes a few hundredths of a
second per epoch; the figures written after the last epoch take a second, so
tests that do not look at them call ``skip_figures`` first.

``minivae(*argv)`` runs the command as a subprocess, the way a user meets it;
``assert_refused`` checks what it printed.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae import cli
from minivae.app import idx, run_checkpoint, training
from minivae.app.checkpoint import load_checkpoint
from minivae.commands import train as train_command

TINY = ["--hidden", "16", "--plot-interval", "0", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]


def train_argv(out, epochs, *extra):
    """``minivae train`` with tiny settings for ``epochs`` epochs into ``out``."""
    return ["train", *TINY, "--epochs", str(epochs), "--out", str(out), *extra]


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of ``minivae.cli.main(argv)``; argparse's exit counts as a status."""
    try:
        status = cli.main(argv)
    except SystemExit as exited:
        status = exited.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status, err, *fragments, code=2):
    """Exit status ``code`` and a single stderr line starting ``minivae`` and holding every fragment."""
    assert status == code, err
    (line,) = err.splitlines()
    assert line.startswith("minivae")
    for fragment in fragments:
        assert fragment in line, line


def subprocess_env(**extra):
    """The environment of a ``python -m minivae`` subprocess: this checkout first on the path, and ``extra``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def minivae(*argv, timeout=120, env=None, module="minivae", prefix=(), **popen):
    """``python -m minivae ARGV`` (or ``-m module``) from this checkout, run by the command ``prefix`` if one is
    given (e.g. setpriv): the finished process (text stdout and stderr)."""
    return subprocess.run([*prefix, sys.executable, "-m", module, *map(str, argv)], capture_output=True,
                          text=True, env=subprocess_env(**(env or {})), timeout=timeout, **popen)


def assert_refused(result, *fragments, code=2):
    """Exit ``code``, one stderr line starting ``minivae`` holding each fragment, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert_one_line_error(result.returncode, result.stderr, *fragments, code=code)


def ended_pid():
    """The PID of a process that has just ended (what a killed run's temporary files name)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def skip_figures(monkeypatch):
    """Replace the figures (a second each run) by a no-op; tests of the figures do not call this."""
    monkeypatch.setattr(training, "write_figures", lambda *args, **kwargs: None)


def run_state(path):
    """What a checkpoint says about its run: every array, and the metadata without wall-clock times."""
    arrays, meta = load_checkpoint(path)
    meta["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in meta["history"]]
    return arrays, meta


def assert_same_run(path_a, path_b):
    """Two checkpoints hold bit-identical weights, optimizer state, generators and history."""
    (arrays_a, meta_a), (arrays_b, meta_b) = run_state(path_a), run_state(path_b)
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name, strict=True)
    for part in ("history", "optimizer", "rng", "model"):
        assert meta_a[part] == meta_b[part], part


def write_fake_mnist(directory, train_count=40, test_count=10, side=6):
    """The four MNIST IDX files (gzip) with random ``side`` x ``side`` uint8 images; returns ``directory``."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train_count), ("t10k", test_count)):
        images = rng.integers(0, 256, (count, side, side), np.uint8)
        idx.write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        idx.write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count, np.uint8))
    return directory


_REFERENCES = {}


def reference_checkpoint(tmp_path_factory, epochs):
    """The checkpoint of an uninterrupted tiny run of ``epochs`` epochs, trained once per session, silently.

    Call it before patching anything a run uses: the reference must be a plain run.
    """
    if epochs not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"reference{epochs}")
        config = train_command.config_from_args(cli.parse_args(train_argv(out, epochs)))
        with pytest.MonkeyPatch.context() as patch:
            skip_figures(patch)
            training.train(config, progress=False, log=lambda line: None)
        _REFERENCES[epochs] = out / run_checkpoint.CHECKPOINT_NAME
    return _REFERENCES[epochs]
