"""Bad input met as a user meets it (``python -m minivae`` as a subprocess): one line, exit status 2, no traceback.

Tampered checkpoints (each value one that ``minivae train`` never writes), sizes no machine holds, paths and
permissions the system refuses. docs/reliability.md names each case against its test.
"""
import json
import os
import shutil
import types

import numpy as np
import pytest

from checkpoint_files import altered, encoded_meta, write_npz
from minivae.app import runconfig, training
from minivae.app.checkpoint import MAX_META_BYTES, load_checkpoint, save_checkpoint
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from runs import assert_refused, minivae, write_fake_mnist


def set_in(*keys, value):
    """A change to a checkpoint: the metadata's ``keys`` path set to ``value``."""
    def change(arrays, meta):
        *parents, last = keys
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value
    return change


def half_precision(arrays, meta):
    for name in arrays:
        if name.startswith(("model/", "optimizer/")):
            arrays[name] = arrays[name].astype(np.float16)


def drop_the_last_epoch(arrays, meta):
    meta["history"].pop()


# name: (the 2-epoch checkpoint it alters: digits or mnist, the change, the command that meets it: train --resume
# or sample, which draws with the stored image shape)
TAMPERED = {
    "test images [1]": ("mnist", set_in("data", "test_images", value=[1]), "resume"),
    "image shape [-8, -8]": ("digits", set_in("image_shape", value=[-8, -8]), "sample"),
    "image shape [true, 64]": ("digits", set_in("image_shape", value=[True, 64]), "sample"),
    "history value x": ("digits", set_in("history", 0, "test_elbo", value="x"), "resume"),
    "history value null": ("digits", set_in("history", 1, "train_kl", value=None), "resume"),
    "test_examples '5'": ("digits", set_in("config", "test_examples", value="5"), "resume"),
    "test_examples -5": ("digits", set_in("config", "test_examples", value=-5), "resume"),
    "binarize sometimes": ("digits", set_in("config", "binarize", value="sometimes"), "resume"),
    "sigma 1e-9": ("digits", set_in("config", "sigma", value=1e-9), "resume"),  # positive, below --sigma's least
    "empty history": ("digits", set_in("history", value=[]), "resume"),
    "a history one epoch short": ("digits", drop_the_last_epoch, "resume"),
    "float16 weights": ("digits", half_precision, "sample"),
    "a test fingerprint beside digits": ("digits", set_in("data", "test_images", value={
        "file": "t10k-images-idx3-ubyte.gz", "bytes": 4422102, "sha256_first_mib": "0" * 64}), "resume"),
}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """2-epoch runs on digits and on fake MNIST, each tampered checkpoint in its own folder, odd files."""
    tmp = tmp_path_factory.mktemp("crafted")
    mnist = write_fake_mnist(tmp / "mnist")
    runs = {}
    for data, data_dir in (("digits", None), ("mnist", str(mnist))):
        runs[data] = tmp / data
        config = runconfig.TrainConfig(data=data, data_dir=data_dir, hidden=(8,), epochs=2, plot_interval=0,
                                       out=str(runs[data]))
        training.train(config, progress=False, log=lambda line: None)
    for name, (data, change, _) in TAMPERED.items():
        (tmp / name).mkdir()
        altered(runs[data] / CHECKPOINT_NAME, tmp / name / CHECKPOINT_NAME, change)
    arrays, _ = load_checkpoint(runs["digits"] / CHECKPOINT_NAME)
    (tmp / "meta [1]").mkdir()
    save_checkpoint(tmp / "meta [1]" / CHECKPOINT_NAME, arrays, [1])
    huge = np.zeros(MAX_META_BYTES + 1, np.uint8)  # JSON padded with spaces
    document = json.dumps({"format_version": 1, "meta": {}}).encode()
    huge[:len(document)], huge[len(document):] = np.frombuffer(document, np.uint8), ord(" ")
    write_npz(tmp / "huge-meta.npz", __meta__=huge)
    write_npz(tmp / "float-meta.npz", __meta__=encoded_meta({"format_version": 1, "meta": {}}).astype(np.float64))
    return types.SimpleNamespace(tmp=tmp, runs=runs)


@pytest.mark.parametrize("name", TAMPERED)
def test_a_tampered_checkpoint_is_refused_in_one_line(crafted, name):
    data, _, command = TAMPERED[name]
    checkpoint = crafted.tmp / name / CHECKPOINT_NAME
    mnist = ["--data", "mnist", "--data-dir", crafted.tmp / "mnist"] if data == "mnist" else []
    argv = (["train", "--resume", checkpoint, "--hidden", "8", "--epochs", "3", "--plot-interval", "0", "--out",
             checkpoint.parent, *mnist] if command == "resume" else ["sample", checkpoint])
    assert_refused(minivae(*argv), f"{checkpoint}", "use another checkpoint")
    assert sorted(path.name for path in checkpoint.parent.iterdir()) == [CHECKPOINT_NAME]


# name: (argv with {tmp} filled in, fragments of the line)
REFUSED_FILES = {
    "meta [1]": (["sample", "{tmp}/meta [1]/checkpoint.npz"], ["its metadata is a list, not a dict"]),
    "metadata over 16 MiB": (["sample", "{tmp}/huge-meta.npz"], ["its __meta__ entry is uint8 of shape (16777217,)",
                                                               "not at most 16,777,216 bytes of JSON"]),
    "metadata of floats": (["sample", "{tmp}/float-meta.npz"], ["its __meta__ entry is float64"]),
    "a digits checkpoint naming MNIST test images": (
        ["evaluate", "{tmp}/a test fingerprint beside digits/checkpoint.npz"],
        ["its record of the test images does not fit digits (scikit-learn (bundled)); it is damaged"]),
}


@pytest.mark.parametrize("name", REFUSED_FILES)
def test_an_odd_checkpoint_file_is_refused_in_one_line(crafted, name):
    argv, fragments = REFUSED_FILES[name]
    assert_refused(minivae(*[arg.format(tmp=crafted.tmp) for arg in argv]), *fragments)


# ----- Sizes no machine holds, paths the system refuses -----

# name: (argv with {tmp} filled in, fragments of the line)
REFUSED_OPTIONS = {
    "--out over the file-name length limit": (["train", "--out", "{tmp}/" + "x" * 300],
                                              ["cannot write to directory", "(File name too long)"]),
    "--samples 100000000": (["train", "--samples", "100000000", "--out", "{tmp}/s"],
                            ["this run needs about", "--samples 100000000", "choose smaller sizes"]),
    "--latent-dim 1000000000": (["train", "--latent-dim", "1000000000", "--out", "{tmp}/l"],
                                ["this run needs about", "--latent-dim 1000000000", "choose smaller sizes"]),
    "--hidden 1000000000": (["train", "--hidden", "1000000000", "--out", "{tmp}/h"],
                            ["this run needs about", "--hidden 1000000000", "choose smaller sizes"]),
    "--threads 10**30": (["train", "--threads", "1" + "0" * 30], ["argument --threads", "threads: at most 1024"]),
}


@pytest.mark.parametrize("name", REFUSED_OPTIONS)
def test_an_impossible_option_is_refused_in_one_line(tmp_path, name):
    argv, fragments = REFUSED_OPTIONS[name]
    done = minivae(*[arg.format(tmp=tmp_path) for arg in argv])
    assert_refused(done, *fragments)
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]


def test_an_unknown_backend_variable_is_refused_before_anything_is_written(tmp_path):
    done = minivae("train", "--out", tmp_path / "run", env={"MINIVAE_BACKEND": "bogus"})
    assert_refused(done, "MINIVAE_BACKEND='bogus' names no backend; set it to one of numpy")
    assert not (tmp_path / "run").exists()


def test_bound_gap_with_one_seed_is_refused_before_its_output_folder_is_made(tmp_path):
    done = minivae("bound-gap", "--seeds", 1, "--out", tmp_path / "gap")
    assert_refused(done, "--seeds 1: a spread needs at least 2 seeds")
    assert not (tmp_path / "gap").exists()


def test_an_out_folder_without_read_permission_is_refused_in_one_line(tmp_path):
    out = tmp_path / "unreadable"
    out.mkdir(mode=0o300)
    as_owner = []  # root reads any folder: run it without the capabilities that override permissions
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and no setpriv to drop the capability to read any folder")
        as_owner = ["setpriv", "--bounding-set=-all", "--"]
    done = minivae("train", "--hidden", "16", "--epochs", "1", "--out", out, prefix=as_owner)
    assert_refused(done, f"cannot list the files in {out} (Permission denied)", "fix the directory's permissions")
    out.chmod(0o700)
    assert list(out.iterdir()) == []
