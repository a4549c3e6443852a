"""A run's numbers do not depend on the machine's load, and a resume continues the run it names, on its data.

Each case runs ``python -m minivae`` as a subprocess; docs/reliability.md names each test here against
the case it covers.
"""
import subprocess
import sys

import pytest

from minivae.app import idx
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from minivae.app.threads import usable_cores
from runs import TINY, assert_refused, assert_same_run, minivae, subprocess_env, write_fake_mnist

# minivae on a machine whose 1-minute load average says 50 other jobs run.
UNDER_LOAD = """
import os, runpy, sys
os.getloadavg = lambda: (50.0, 50.0, 50.0)
sys.argv = ["minivae", *sys.argv[1:]]
runpy.run_module("minivae", run_name="__main__")
"""


@pytest.fixture(scope="module")
def mnist_sized(tmp_path_factory):
    """Fake 28x28 MNIST files: with 400 hidden units a product is 128 x 784 x 400, above what one thread takes."""
    return write_fake_mnist(tmp_path_factory.mktemp("mnist28"), train_count=160, test_count=16, side=28)


def mnist_train(data, out, epochs, *extra):
    return ["train", *TINY, "--data", "mnist", "--data-dir", data, "--hidden", "400", "--epochs", epochs,
            "--out", out, *extra]


def test_the_automatic_thread_count_depends_on_the_cores_not_the_load(mnist_sized, tmp_path):
    argv = mnist_train(mnist_sized, tmp_path / "run", 1)
    done = subprocess.run([sys.executable, "-c", UNDER_LOAD, *map(str, argv)], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    cores = usable_cores()
    assert f"{cores} thread{'s' * (cores > 1)} (one per core; --threads N to change)" in done.stdout.splitlines()[0]


def test_resume_takes_the_runs_thread_count_and_refuses_another(mnist_sized, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert minivae(*mnist_train(mnist_sized, whole, 2, "--threads", 2)).returncode == 0
    assert minivae(*mnist_train(mnist_sized, part, 1, "--threads", 2)).returncode == 0
    resumed = minivae(*mnist_train(mnist_sized, part, 2, "--resume", part / CHECKPOINT_NAME))
    assert resumed.returncode == 0, resumed.stderr
    assert "2 threads (the run's own, stored in its checkpoint)" in resumed.stdout.splitlines()[0]
    assert_same_run(whole / CHECKPOINT_NAME, part / CHECKPOINT_NAME)
    other = minivae(*mnist_train(mnist_sized, part, 3, "--resume", part / CHECKPOINT_NAME, "--threads", 1))
    assert_refused(other, "--threads 1: the run being resumed was trained with 2 threads",
                   "resume without --threads (it takes the run's 2)")


# ----- The data a run trained on -----

def test_resume_refuses_other_training_images(tmp_path):
    data, other = write_fake_mnist(tmp_path / "a"), write_fake_mnist(tmp_path / "b")
    images = other / "train-images-idx3-ubyte.gz"
    changed = idx.read_idx(images)
    changed[-1, -1, -1] ^= 1  # one pixel of the last training image; the test files are the same
    idx.write_idx(images, changed)
    first = minivae("train", *TINY, "--data", "mnist", "--data-dir", data, "--epochs", 1, "--out", tmp_path / "run")
    assert first.returncode == 0, first.stderr
    checkpoint = tmp_path / "run" / CHECKPOINT_NAME
    resumed = minivae("train", *TINY, "--data", "mnist", "--data-dir", other, "--epochs", 2, "--out",
                      tmp_path / "run", "--resume", checkpoint)
    assert_refused(resumed, f"{checkpoint} was trained with the training images in {data}",
                   f"but {other} holds other ones (40 images, SHA-256", f"pass --data-dir {data}")
    assert minivae("evaluate", checkpoint, "--data-dir", other).returncode == 0  # the test images are the same
