"""No run loses another's work, nothing is trusted before it is checked, and every refusal is one line.

The first part runs ``minivae`` in this process (fast); the second runs the
command as a subprocess, the way a user meets it, and asserts the exit
status, a single stderr line and no traceback. docs/reliability.md names
each test here against the case it covers.
"""
import errno
import fcntl
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from checkpoint_files import altered
from minivae.app import idx, run_checkpoint, runconfig, threads, training
from minivae.app.checkpoint import load_checkpoint, save_checkpoint
from minivae.app.rundir import LOCK_NAME
from runs import (assert_one_line_error, assert_refused, ended_pid, minivae, reference_checkpoint, run_cli, skip_figures,
                  subprocess_env, train_argv, write_fake_mnist)


# ----- A run directory is owned -----

def test_a_directory_held_by_another_run_is_refused_naming_its_pid(tmp_path, capsys):
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        status, _, err = run_cli(train_argv(tmp_path, 1), capsys)
    finally:
        os.close(fd)
    assert_one_line_error(status, err, f"{tmp_path} is in use by another minivae train (PID 4242)")
    assert not (tmp_path / run_checkpoint.CHECKPOINT_NAME).exists()


def test_stale_temporaries_are_removed_and_planted_links_are_replaced_not_followed(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    stale = run / f".checkpoint.npz.minivae-{ended_pid()}-k1ll3d_0.tmp"
    stale.write_bytes(b"half a checkpoint")
    (run / "metrics.jsonl.tmp").symlink_to(outside / "metrics-target")  # the old fixed temporary name
    (run / "sample_1.png").symlink_to(outside / "sample-target.png")
    (run / "metrics.jsonl").symlink_to(outside / "metrics-final")
    status, out, err = run_cli(["train", "--hidden", "16", "--latent-dim", "3", "--epochs", "1", "--overwrite",
                                "--out", str(run)], capsys)
    assert status == 0, err
    assert "removed 1 temporary file(s)" in out and not stale.exists()
    assert list(outside.iterdir()) == []  # nothing written through a link
    for name in ("sample_1.png", "metrics.jsonl"):
        assert not (run / name).is_symlink() and (run / name).stat().st_size > 0
    assert not list(run.glob(".*.tmp")) and not (run / LOCK_NAME).exists()


def test_sample_and_reconstruct_never_replace_the_runs_figures(tmp_path, capsys):
    run_cli(["train", "--hidden", "16", "--epochs", "1", "--out", str(tmp_path)], capsys)
    figures = {name: (tmp_path / name).read_bytes() for name in ("sample_1.png", "reconstruction_1.png")}
    for command in ("sample", "reconstruct"):
        status, _, err = run_cli([command, str(tmp_path / run_checkpoint.CHECKPOINT_NAME)], capsys)
        assert status == 0, err
    assert {name: (tmp_path / name).read_bytes() for name in figures} == figures
    assert (tmp_path / "sample_epoch1_seed0.png").exists() and (tmp_path / "reconstruction_epoch1.png").exists()


def test_a_full_disk_while_drawing_a_figure_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    run_cli(["train", "--hidden", "16", "--epochs", "1", "--plot-interval", "0", "--out", str(tmp_path)], capsys)
    run_cli(["sample", str(tmp_path / run_checkpoint.CHECKPOINT_NAME)], capsys)
    figure = tmp_path / "sample_epoch1_seed0.png"
    before = figure.read_bytes()

    def half_then_full(self, f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(FigureCanvasAgg, "print_png", half_then_full)
    status, _, err = run_cli(["sample", str(tmp_path / run_checkpoint.CHECKPOINT_NAME), "--seed", "0"], capsys)
    assert_one_line_error(status, err, f"cannot write {figure}", "No space left on device")
    assert figure.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


# ----- Checked before trusted -----

def grow_the_model(arrays, meta):
    meta["config"]["hidden"] = [300_000_000]
    meta["model"].update(encoder_sizes=[64, 300_000_000], decoder_sizes=[300_000_000, 64])


def add_an_array(arrays, meta):
    arrays["junk"] = np.zeros(3, np.float32)


@pytest.mark.parametrize("change, fragments", [
    (grow_the_model, ["its metadata describes a model of", "parameters but its arrays hold"]),
    (add_an_array, ["unexpected array 'junk', which minivae train never writes"]),
])
def test_a_checkpoint_is_checked_before_a_model_is_built(tmp_path, tmp_path_factory, monkeypatch, capsys, change,
                                                         fragments):
    crafted = altered(reference_checkpoint(tmp_path_factory, 3), tmp_path / "crafted.npz", change)
    monkeypatch.setattr(run_checkpoint, "VAE", lambda **kwargs: pytest.fail("a model was built"))
    status, _, err = run_cli(["sample", str(crafted)], capsys)
    assert_one_line_error(status, err, *fragments)


def test_a_compressed_member_is_refused_unread(tmp_path, tmp_path_factory, capsys):
    arrays, meta = load_checkpoint(reference_checkpoint(tmp_path_factory, 3))
    save_checkpoint(tmp_path / "plain.npz", arrays, meta)
    with np.load(tmp_path / "plain.npz") as plain:
        np.savez_compressed(tmp_path / "zipped.npz", **{name: plain[name] for name in plain.files},
                            bomb=np.zeros(1 << 20, np.float32))
    status, _, err = run_cli(["sample", str(tmp_path / "zipped.npz")], capsys)
    assert_one_line_error(status, err, "is compressed, and minivae writes checkpoints uncompressed")


@pytest.fixture
def mnist_run(tmp_path, monkeypatch, capsys):
    """A 1-epoch run on fake MNIST given by a relative --data-dir, and a second, different data directory."""
    monkeypatch.chdir(tmp_path)
    write_fake_mnist(tmp_path / "data")
    other = tmp_path / "other"
    write_fake_mnist(other, test_count=11)
    status, _, err = run_cli(train_argv("run", 1, "--data", "mnist", "--data-dir", "data"), capsys)
    assert status == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return types.SimpleNamespace(tmp=tmp_path, checkpoint=tmp_path / "run" / run_checkpoint.CHECKPOINT_NAME, other=other)


def test_the_data_directory_is_stored_absolute_and_checked(mnist_run, capsys):
    status, out, err = run_cli(["evaluate", str(mnist_run.checkpoint)], capsys)
    assert status == 0, err
    assert out.splitlines()[0].startswith(f"mnist test images from {mnist_run.tmp / 'data'}: 10 examples; 1 thread")
    for argv in (["evaluate", str(mnist_run.checkpoint), "--data-dir", str(mnist_run.other)],
                 train_argv(mnist_run.tmp / "run", 2, "--data", "mnist", "--data-dir", str(mnist_run.other),
                            "--resume", str(mnist_run.checkpoint))):
        status, _, err = run_cli(argv, capsys)
        assert_one_line_error(status, err, f"was trained with the test images in {mnist_run.tmp / 'data'}",
                              f"but {mnist_run.other} holds other ones", f"pass --data-dir {mnist_run.tmp / 'data'}")


def test_evaluate_reads_only_the_test_files(mnist_run, capsys):
    test_only = mnist_run.tmp / "test-only"
    test_only.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_run.tmp / "data" / name, test_only / name)
    status, out, err = run_cli(["evaluate", str(mnist_run.checkpoint), "--data-dir", str(test_only)], capsys)
    assert status == 0, err
    assert "test ELBO (K=1)" in out


def huge_weights(arrays, meta):
    for name in arrays:
        if name.startswith("model/"):
            arrays[name] = np.full_like(arrays[name], 3e38)


def test_a_result_that_is_not_finite_is_exit_status_3(tmp_path, tmp_path_factory, capsys):
    absurd = altered(reference_checkpoint(tmp_path_factory, 3), tmp_path / "absurd.npz", huge_weights)
    status, out, err = run_cli(["evaluate", str(absurd)], capsys)
    assert_one_line_error(status, err, "the test ELBO is", "(not finite); the checkpoint's weights are too large",
                          code=3)
    assert "nan" not in out


# ----- Threads and the progress bar -----

def test_threads_fit_the_work_and_the_machine():
    assert threads.choose_threads(3, 1)[0] == 3
    assert threads.choose_threads(None, threads.product_size(128, (64, 256)))[0] == 1
    count, reason = threads.choose_threads(None, threads.product_size(128, (784, 1024, 1024)))
    assert count == threads.usable_cores() and "--threads N" in reason
    assert threads.choose_threads(None, 1 << 30, trained=3) == (3, "3 threads (the run's own, stored in its checkpoint)")
    assert threads.choose_threads(3, 1, trained=3)[0] == 3
    from threadpoolctl import threadpool_info
    before = [pool["num_threads"] for pool in threadpool_info()]
    with threads.threads_limited(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert [pool["num_threads"] for pool in threadpool_info()] == before


def test_progress_is_forced_with_the_option(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    status, _, err = run_cli(["train", "--hidden", "16", "--epochs", "1", "--progress", "--out", str(tmp_path)],
                             capsys)
    assert status == 0 and "epoch 1/1" in err


# ----- Through a subprocess, as a user runs it -----

def test_a_second_run_leaves_the_first_runs_checkpoint_intact(tmp_path, monkeypatch, capsys):
    run = tmp_path / "D"
    first = minivae("train", "--epochs", 5, "--hidden", 64, "--out", run)
    assert first.returncode == 0 and first.stderr == ""  # piped: no progress bar
    assert "1 thread (products of" in first.stdout.splitlines()[0]
    checkpoint = (run / run_checkpoint.CHECKPOINT_NAME).read_bytes()
    second = minivae("train", "--epochs", 1, "--hidden", 64, "--seed", 7, "--out", run)
    assert_refused(second, f"{run} already holds a run", f"--resume {run / run_checkpoint.CHECKPOINT_NAME}", "--overwrite")
    assert (run / run_checkpoint.CHECKPOINT_NAME).read_bytes() == checkpoint
    skip_figures(monkeypatch)
    status, out, _ = run_cli(train_argv(run, 1, "--seed", "7", "--overwrite"), capsys)
    assert status == 0 and f"--overwrite: checkpoint.npz, metrics.jsonl, loss_curves.png and 2 more in {run} will" in out
    assert len(load_checkpoint(run / run_checkpoint.CHECKPOINT_NAME)[1]["history"]) == 1


def test_sigterm_says_how_to_resume(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "minivae", "train", "--hidden", "16", "--plot-interval", "0",
                                "--epochs", "100000", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    deadline = time.monotonic() + 60
    while not (tmp_path / run_checkpoint.CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    result = types.SimpleNamespace(returncode=process.returncode, stderr=err)
    assert_refused(result, "interrupted in epoch", "is intact; continue with the same options and --resume "
                   f"{tmp_path / run_checkpoint.CHECKPOINT_NAME}", code=130)


# Ctrl-C at the moment NumPy starts to load, under the entry point: no sleep to guess when that is.
INTERRUPTED_WHILE_LOADING = """
import importlib.abc, runpy, signal, sys

class InterruptAtNumpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "numpy":
            signal.raise_signal(signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAtNumpy())
sys.argv = ["minivae", "train", "--out", sys.argv[1]]
runpy.run_module("minivae", run_name="__main__")
"""


def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_WHILE_LOADING, str(tmp_path)], capture_output=True,
                          text=True, env=subprocess_env(), timeout=60)
    assert_refused(done, "interrupted", code=130)
    assert list(tmp_path.iterdir()) == []  # interrupted before anything was written


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Files for the refusals below: a non-square IDX run, empty IDX files, a damaged gzip, odd checkpoints."""
    tmp = tmp_path_factory.mktemp("bad")
    wide = write_fake_mnist(tmp / "wide", train_count=20, test_count=8)
    rng = np.random.default_rng(1)
    for prefix, count in (("train", 20), ("t10k", 8)):
        idx.write_idx(wide / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 20, 30), np.uint8))
    empty = tmp / "empty"
    empty.mkdir()
    for prefix in ("train", "t10k"):
        idx.write_idx(empty / f"{prefix}-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
        idx.write_idx(empty / f"{prefix}-labels-idx1-ubyte", np.zeros(0, np.uint8))
    crc = write_fake_mnist(tmp / "crc")
    images = crc / "t10k-images-idx3-ubyte.gz"  # one byte more than the header says, and a wrong CRC
    payload = gzip.decompress(images.read_bytes()) + b"\x00"
    damaged = bytearray(gzip.compress(payload))
    damaged[-8] ^= 0xFF
    images.write_bytes(bytes(damaged))
    run = tmp / "run"
    config = runconfig.TrainConfig(data="mnist", data_dir=str(wide), hidden=(8,), epochs=1, plot_interval=0, out=str(run))
    training.train(config, progress=False, log=lambda line: None)

    def shorten_the_key(arrays, meta):
        meta["rng"]["data"] = {"bit_generator": "MT19937", "state": {"key": [1, 2, 3], "pos": 624}}

    (tmp / "mt").mkdir()
    mt = altered(run / run_checkpoint.CHECKPOINT_NAME, tmp / "mt" / run_checkpoint.CHECKPOINT_NAME, shorten_the_key)
    (tmp / "absurd").mkdir()
    altered(run / run_checkpoint.CHECKPOINT_NAME, tmp / "absurd" / run_checkpoint.CHECKPOINT_NAME, huge_weights)
    (tmp / "text.npz").write_text("epoch,loss\n1,93.2\n")
    (tmp / "a-file").write_text("not a directory")
    return types.SimpleNamespace(tmp=tmp, wide=wide, empty=empty, crc=crc, run=run, mt=mt, absurd=tmp / "absurd")


# id: (argv, with {tmp}, {wide}, ... filled from ``bad``; exit status; fragments of the one stderr line)
REFUSALS = {
    "IDX files of 0 images": (["train", "--data", "mnist", "--data-dir", "{empty}", "--out", "{tmp}/o1"], 2,
                              ["holds 0x28x28 images, that is none"]),
    "sigma 1e300": (["train", "--likelihood", "gaussian", "--sigma", "1e300"], 2,
                    ["argument --sigma: 1e300 must be between 1e-06 and 1e+06"]),
    "sigma 1e-300": (["train", "--likelihood", "gaussian", "--sigma", "1e-300"], 2,
                     ["argument --sigma: 1e-300 must be between 1e-06 and 1e+06"]),
    "negative seed, evaluate": (["evaluate", "{run}/checkpoint.npz", "--seed=-1"], 2,
                                ["argument --seed: -1 must be zero or more"]),
    "negative seed, estimators": (["estimators", "--seed=-1"], 2, ["argument --seed: -1 must be zero or more"]),
    "negative seed, bound-gap": (["bound-gap", "--seed=-1"], 2, ["argument --seed: -1 must be zero or more"]),
    "extent 1e300": (["bound-gap", "--extent", "1e300"], 2, ["argument --extent: 1e300 must be between"]),
    "short MT19937 state": (["train", "--data", "mnist", "--data-dir", "{wide}", "--hidden", "8", "--epochs", "2",
                             "--plot-interval", "0", "--resume", "{mt}", "--out", "{tmp}/mt"], 2,
                            ["random state for MT19937 is corrupt"]),
    "text file as checkpoint": (["sample", "{tmp}/text.npz"], 2, ["is not a minivae checkpoint (not an .npz file"]),
    "directory as checkpoint": (["sample", "{run}"], 2, ["is a directory, not a checkpoint; pass the checkpoint.npz"]),
    "--out naming a file": (["train", "--out", "{tmp}/a-file"], 2, ["a-file is a file, not a directory"]),
    "corrupt gzip CRC": (["evaluate", "{run}/checkpoint.npz", "--data-dir", "{crc}"], 2,
                         ["t10k-images-idx3-ubyte.gz: cannot read it (CRC check failed"]),
    "estimators --out a file": (["estimators", "--out", "{tmp}/a-file"], 2, ["a-file is a file, not a directory"]),
    # Results that are not finite: exit status 3, nothing written
    "reconstruct absurd weights": (["reconstruct", "{tmp}/absurd/checkpoint.npz"], 3,
                                   ["reconstructions: a code z is inf (not finite); the checkpoint's weights are too"]),
    "sample absurd weights": (["sample", "{tmp}/absurd/checkpoint.npz"], 3,
                              ["samples: the decoder's output is", "(not finite)"]),
    "diverging --lr 1e300": (["train", "--hidden", "16", "--epochs", "2", "--lr", "1e300", "--plot-interval", "0",
                              "--out", "{tmp}/diverged"], 3, ["training diverged at epoch 1, step 1"]),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_is_one_line_without_a_traceback(bad, case):
    argv, code, fragments = REFUSALS[case]
    places = {name: str(value) for name, value in vars(bad).items()}
    result = minivae(*[arg.format(**places) for arg in argv])
    assert_refused(result, *fragments, code=code)
    assert not list(bad.absurd.glob("*.png"))
    assert not list((bad.tmp / "diverged").glob("*"))  # the diverged run wrote no checkpoint, nor anything else


def test_sample_draws_non_square_images_and_the_command_answers_version_and_defaults(bad):
    sampled = minivae("sample", bad.run / run_checkpoint.CHECKPOINT_NAME)
    assert sampled.returncode == 0 and sampled.stderr == "" and "sample_epoch1_seed0.png" in sampled.stdout
    assert minivae("--version").stdout.strip().startswith("minivae ")
    help_text = " ".join(minivae("train", "--help").stdout.split())
    for default in ("--latent-dim LATENT_DIM size of z (default: 2)", "examples per step (default: 128)",
                    "(default: 150)", "learning rate (default: 0.003)", "(default 256)"):
        assert default in help_text
