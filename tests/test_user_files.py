"""Nothing of the user's is deleted or replaced: each case runs ``python -m minivae`` as a subprocess.

docs/reliability.md names each test here against the case it covers.
"""
import os
import subprocess
import sys

import pytest

from minivae.app.checkpoint import load_checkpoint
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from runs import assert_refused, ended_pid, minivae, subprocess_env, train_argv


def users_files(run, **contents):
    """``run`` created holding the user's files (name: bytes); {path: bytes} to compare with later."""
    run.mkdir()
    files = {run / name: content for name, content in contents.items()}
    for path, content in files.items():
        path.write_bytes(content)
    return files


def unchanged(files):
    return {path: path.read_bytes() for path in files} == files


# ----- Temporary files -----

def test_only_minivaes_own_temporaries_of_ended_runs_are_removed_and_only_by_an_accepted_run(tmp_path):
    run = tmp_path / "d"
    users = users_files(run, **{".settings.json.tmp": b"x\n", ".draft.v2.tmp": b"draft\n"})
    live = run / f".metrics.jsonl.minivae-{os.getpid()}-abcd_123.tmp"  # a live minivae's (this process)
    live.write_bytes(b"being written")
    killed = run / f".checkpoint.npz.minivae-{ended_pid()}-abcd_123.tmp"
    killed.write_bytes(b"half a checkpoint")
    first = minivae(*train_argv(run, 1))
    assert first.returncode == 0, first.stderr
    assert f"removed 1 temporary file(s) a killed run left in {run}: {killed.name}" in first.stdout
    assert not killed.exists() and live.exists() and unchanged(users)
    killed.write_bytes(b"half a checkpoint")
    refused = minivae(*train_argv(run, 1))  # the directory holds a run: refused before anything is removed
    assert_refused(refused, f"{run} already holds a run")
    assert killed.exists() and live.exists() and unchanged(users)


# ----- Files a run would write -----

def test_a_directory_holding_a_file_the_run_would_write_is_refused_unless_overwrite(tmp_path):
    run = tmp_path / "d"
    users = users_files(run, **{"metrics.jsonl": b"my own metrics\n", "loss_curves.png": b"my own figure"})
    refused = minivae(*train_argv(run, 1))
    assert_refused(refused, f"{run} holds metrics.jsonl, loss_curves.png, which this run would replace",
                   "--overwrite")
    assert unchanged(users) and not (run / CHECKPOINT_NAME).exists()
    replaced = minivae(*train_argv(run, 2, "--overwrite"))
    assert replaced.returncode == 0, replaced.stderr
    assert f"--overwrite: metrics.jsonl, loss_curves.png in {run} will be replaced" in replaced.stdout
    assert replaced.stdout.splitlines()[-1] == (
        f"outputs in {run}/: checkpoint.npz, metrics.jsonl, loss_curves.png, latent_scatter.png, manifold.png, "
        "reconstruction_2.png, sample_2.png")
    written = replaced.stdout.splitlines()[-1].split(": ", 1)[1].split(", ")
    assert sorted(written) == sorted(path.name for path in run.iterdir() if not path.name.startswith("."))


# ----- Interrupts -----

# SIGTERM delivered while matplotlib's ft2font (a pybind11 extension) initializes: its init creates Python enums,
# and the signal is raised in the first one. A handler that raises there breaks the import ("ImportError:
# initialization failed"), and the half-built extension can abort the interpreter at exit.
SIGTERM_IN_FT2FONT = """
import enum, importlib.abc, runpy, signal, sys

create = enum.EnumType.__call__

def signalled_once(*args, **kwargs):
    enum.EnumType.__call__ = create
    signal.raise_signal(signal.SIGTERM)
    return create(*args, **kwargs)

class SignalInFt2font(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "matplotlib.ft2font":
            enum.EnumType.__call__ = signalled_once
        return None

sys.meta_path.insert(0, SignalInFt2font())
sys.argv = ["minivae", *sys.argv[1:]]
runpy.run_module("minivae", run_name="__main__")
"""


def test_sigterm_while_a_figure_module_loads_stops_after_the_epochs_figures(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--hidden", "16", "--epochs", "2", "--plot-interval", "1", "--out", run]
    done = subprocess.run([sys.executable, "-c", SIGTERM_IN_FT2FONT, *map(str, argv)], capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)
    assert_refused(done, "interrupted in epoch 2", f"the checkpoint {run / CHECKPOINT_NAME} (epoch 1) is intact",
                   f"--resume {run / CHECKPOINT_NAME}", code=130)
    assert (run / "reconstruction_1.png").exists() and (run / "manifold.png").exists()


# ----- Checkpoints that are not files -----

def test_a_fifo_as_the_checkpoint_is_refused_before_any_lock(tmp_path):
    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    assert_refused(minivae("sample", fifo, timeout=30), f"{fifo} is not a regular file (a FIFO")
    out = tmp_path / "X"
    assert_refused(minivae("train", "--resume", fifo, "--out", out, timeout=30), f"{fifo} is not a regular file")
    assert not out.exists()
    assert_refused(minivae("evaluate", "/dev/null", timeout=30), "/dev/null is not a regular file")


def test_a_resume_that_is_no_checkpoint_is_refused_before_the_output_directory_is_made(tmp_path):
    notes = tmp_path / "notes.npz"
    notes.write_bytes(b"my own notes\n")
    out = tmp_path / "X"
    assert_refused(minivae(*train_argv(out, 2, "--resume", notes)), f"{notes} is not a minivae checkpoint (not an .npz file")
    assert not out.exists()


# ----- Output a reader closed, paths a terminal cannot print -----

def test_training_goes_on_when_its_output_pipe_is_closed(tmp_path):
    """``minivae train --epochs 3 --out bp | head -1``: head leaves after the first line; the run finishes."""
    run = tmp_path / "bp"
    process = subprocess.Popen([sys.executable, "-m", "minivae", "train", "--hidden", "16", "--epochs", "3",
                                "--plot-interval", "0", "--out", str(run)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=subprocess_env(PYTHONUNBUFFERED="1"))
    assert process.stdout.readline().startswith("digits from")
    process.stdout.close()  # as head -1 exits: every later write meets a closed pipe
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0 and err == ""
    assert len(load_checkpoint(run / CHECKPOINT_NAME)[1]["history"]) == 3


@pytest.mark.parametrize("module", ["minivae", "minivae.cli"])
def test_a_path_the_terminals_encoding_cannot_print_is_escaped(tmp_path, module):
    out = os.fsdecode(os.fsencode(tmp_path) + b"/o/\xff-run")  # a byte that is no character in ASCII or UTF-8
    done = minivae(*train_argv(out, 1), env={"PYTHONIOENCODING": "ascii"}, module=module)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[-1].startswith(f"outputs in {tmp_path}/o/\\udcff-run/: checkpoint.npz")
    assert (tmp_path / "o" / os.fsdecode(b"\xff-run") / CHECKPOINT_NAME).exists()


# ----- A run cut off while writing its last epoch's figures -----

# The last figure of the run (manifold.png) meets a fault: a full disk, or Ctrl-C pressed twice (a second
# signal stops at once, wherever the run is).
FAULT_IN_THE_LAST_FIGURE = """
import errno, os, runpy, signal, sys
from minivae.app import plots

fault = sys.argv[1]

def faulty(*args, **kwargs):
    if fault == "full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGINT)

plots.save_manifold = faulty
sys.argv = ["minivae", *sys.argv[2:]]
runpy.run_module("minivae", run_name="__main__")
"""


@pytest.mark.parametrize("fault, code, advice", [
    ("full", 2, "No space left on device"),
    ("interrupt", 130, "interrupted while writing the outputs of epoch 2, the last"),
])
def test_resume_writes_what_a_run_cut_off_in_its_last_figures_left_unwritten(tmp_path, fault, code, advice):
    run = tmp_path / "run"
    argv = ["train", "--hidden", "16", "--epochs", "2", "--plot-interval", "0", "--out", run]
    cut = subprocess.run([sys.executable, "-c", FAULT_IN_THE_LAST_FIGURE, fault, *map(str, argv)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=120)
    checkpoint = run / CHECKPOINT_NAME
    assert_refused(cut, advice, f"the checkpoint {checkpoint} (epoch 2) is intact",
                   f"the same options and --resume {checkpoint}", code=code)
    assert not (run / "manifold.png").exists()
    resumed = minivae(*argv, "--resume", checkpoint)
    assert resumed.returncode == 0, resumed.stderr
    assert "wrote what the run had left unwritten after epoch 2: manifold.png" in resumed.stdout
    assert (run / "manifold.png").exists()
    assert_refused(minivae(*argv, "--resume", checkpoint), f"{checkpoint} already holds 2 epochs; pass --epochs above 2")
