"""``minivae train``, ``sample`` and ``reconstruct`` through ``minivae.cli.main``: resume, figures, bad input.

Every bad input is one line on stderr starting ``minivae`` and exit status 2.
"""
import argparse
import json
import types

import numpy as np
import pytest

from minivae import cli
from minivae.app import plots, run_checkpoint, runconfig, training
from minivae.backend import get_backend
from minivae.app.data import load_digits
from runs import (assert_one_line_error, assert_same_run, reference_checkpoint, run_cli, skip_figures, train_argv,
                  write_fake_mnist)


@pytest.fixture
def files(tmp_path, tmp_path_factory):
    """A good checkpoint (3 epochs), a truncated one, and MNIST-style directories: good, corrupt, lying."""
    good = reference_checkpoint(tmp_path_factory, 3)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    corrupt = write_fake_mnist(tmp_path / "corrupt")
    (corrupt / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    lying = write_fake_mnist(tmp_path / "lying")
    (lying / "t10k-labels-idx1-ubyte.gz").unlink()
    (lying / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (10**9).to_bytes(4, "big") + bytes(10))
    (tmp_path / "a-file").write_text("not a directory")
    return types.SimpleNamespace(tmp=tmp_path, good=good, truncated=truncated, corrupt=corrupt, lying=lying,
                                 mnist=write_fake_mnist(tmp_path / "mnist"))


# ----- Training, resuming, figures -----

def test_resume_through_the_cli_ends_where_an_uninterrupted_run_ends(tmp_path, tmp_path_factory, monkeypatch,
                                                                      capsys):
    reference = reference_checkpoint(tmp_path_factory, 3)
    skip_figures(monkeypatch)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    for epochs, resume in ((1, []), (2, ["--resume", str(checkpoint)]), (3, ["--resume", str(checkpoint)])):
        status, out, _ = run_cli(train_argv(tmp_path, epochs, *resume), capsys)
        assert status == 0 and out.splitlines()[2].startswith(f"epoch {epochs:3d}  train ELBO")
    assert_same_run(checkpoint, reference)


@pytest.mark.parametrize("latent_dim, latent_figures", [(3, []), (2, ["latent_scatter.png", "manifold.png"])])
def test_a_run_on_idx_files_and_its_figures(files, capsys, latent_dim, latent_figures):
    run = files.tmp / f"run{latent_dim}"
    status, out, err = run_cli(train_argv(run, 1, "--data", "mnist", "--data-dir", str(files.mnist),
                                          "--latent-dim", str(latent_dim), "--likelihood", "gaussian",
                                          "--sigma", "0.5"), capsys)
    assert status == 0, err
    written = sorted(p.name for p in run.iterdir())
    assert written == sorted(["checkpoint.npz", "loss_curves.png", "metrics.jsonl", "reconstruction_1.png",
                              "sample_1.png"] + latent_figures)
    assert out.splitlines()[-1].startswith(f"outputs in {run}/: ")
    assert sorted(out.splitlines()[-1].split(": ", 1)[1].split(", ")) == written  # the last line lists them all


@pytest.mark.parametrize("command, figure", [("sample", "sample_epoch3_seed0.png"),
                                             ("reconstruct", "reconstruction_epoch3.png")])
def test_sample_and_reconstruct_write_their_figure(files, capsys, command, figure):
    status, out, err = run_cli([command, str(files.good), "--out", str(files.tmp / "figures")], capsys)
    assert status == 0, err
    assert out.splitlines()[-1] == f"wrote {files.tmp / 'figures' / figure}"
    assert (files.tmp / "figures" / figure).stat().st_size


def test_sample_draws_the_checkpoints_model_samples_of_its_seed(files, monkeypatch, capsys):
    drawn = []
    monkeypatch.setattr(plots, "save_samples", lambda path, images, image_shape: drawn.append(images))
    status, _, err = run_cli(["sample", str(files.good), "--seed", "7", "--out", str(files.tmp)], capsys)
    assert status == 0, err
    model, _, _ = run_checkpoint.load_trained(files.good)
    make_rng = get_backend().kernels.make_rng
    np.testing.assert_array_equal(drawn[0], model.sample(64, make_rng(7)), strict=True)
    assert not np.array_equal(drawn[0], model.sample(64, make_rng(0)))  # the seed is the one asked for


def test_logvar_clamp_is_saved_in_the_config(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    status, _, err = run_cli(train_argv(tmp_path, 1, "--logvar-clamp", "4"), capsys)
    assert status == 0, err
    model, config, meta = run_checkpoint.load_trained(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert config.logvar_clamp == model.config["logvar_clamp"] == meta["model"]["logvar_clamp"] == 4.0


def test_ctrl_c_exits_130_with_how_to_resume(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    real_epoch = training.run_epoch

    def interrupted_in_epoch_2(run, *args):
        if run.next_epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(run, *args)
    monkeypatch.setattr(training, "run_epoch", interrupted_in_epoch_2)
    status, _, err = run_cli(train_argv(tmp_path, 3), capsys)
    checkpoint = tmp_path / run_checkpoint.CHECKPOINT_NAME
    assert_one_line_error(status, err, f"interrupted in epoch 2; the checkpoint {checkpoint} (epoch 1) is intact",
                          f"--resume {checkpoint}", code=130)


def test_running_out_of_memory_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    def out_of_memory(*args):
        raise MemoryError
    monkeypatch.setattr(training, "run_epoch", out_of_memory)
    status, _, err = run_cli(train_argv(tmp_path, 1), capsys)
    assert_one_line_error(status, err, "minivae: out of memory; choose smaller sizes (--batch-size, --samples")


def test_evaluate_takes_the_runs_thread_count_and_says_when_its_draws_are_not_trainings(tmp_path, monkeypatch,
                                                                                         capsys):
    """A run at --threads 2 is evaluated at 2 by default (its small products alone would get 1): training's own
    draws, its last epoch line's number; at --threads 1 BLAS sums in another order, and the note says so."""
    skip_figures(monkeypatch)
    status, _, err = run_cli(train_argv(tmp_path, 1, "--threads", "2"), capsys)
    assert status == 0, err
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["test_elbo"]
    checkpoint = str(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    status, out, err = run_cli(["evaluate", checkpoint], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].endswith(": 359 examples; 2 threads (the run's own, stored in its checkpoint)")
    assert lines[1].startswith(f"test ELBO (K=1): {last:.3f} nats per example")
    assert lines[2].endswith("training's own draws, so its last epoch line printed this number")
    status, out, err = run_cli(["evaluate", checkpoint, "--threads", "1"], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].endswith(": 359 examples; 1 thread (--threads)")
    assert lines[2].endswith("; training's epoch lines drew another estimate (seed 1, batches of 128, 359 test "
                             "images, 2 threads, the numpy backend)")


@pytest.mark.parametrize("binarize", ["static", "dynamic"])
def test_evaluate_of_a_binarized_run_says_its_test_images_differ_from_trainings(tmp_path, monkeypatch, capsys,
                                                                                binarize):
    skip_figures(monkeypatch)
    status, _, err = run_cli(train_argv(tmp_path, 1, "--binarize", binarize), capsys)
    assert status == 0, err
    status, out, err = run_cli(["evaluate", str(tmp_path / run_checkpoint.CHECKPOINT_NAME)], capsys)
    assert status == 0, err
    assert out.splitlines()[2].endswith(", on the test images binarized once (training's epoch lines measured the "
                                        "grey ones)")


# ----- Bad input: one line, exit status 2 -----

BAD_TRAIN_INPUT = {
    # id: (options after `minivae train` tiny settings, what the line must say)
    "missing data dir": (["--data", "mnist", "--data-dir", "{tmp}/nowhere"],
                         "mnist: no train-images-idx3-ubyte[.gz] in {tmp}/nowhere"),
    "no data dir for mnist": (["--data", "mnist"], "mnist has no default location"),
    "data dir for digits": (["--data-dir", "{tmp}"], "digits ships with scikit-learn and reads no --data-dir"),
    "corrupt IDX file": (["--data", "mnist", "--data-dir", "{corrupt}"],
                         "IDX file {corrupt}/train-images-idx3-ubyte.gz: cannot read it"),
    "IDX header lies": (["--data", "mnist", "--data-dir", "{lying}"],
                        "header says 1000000000 uint8 (1,000,000,000 bytes) but the file holds 10 bytes"),
    "other architecture": (["--epochs", "4", "--hidden", "32", "--resume", "{good}"],
                           "was trained with hidden=(16,), not (32,); resume with the same options"),
    "truncated checkpoint": (["--epochs", "4", "--resume", "{truncated}"], "truncated.npz is unreadable or corrupt"),
    "missing checkpoint": (["--resume", "{tmp}/absent.npz"], "no checkpoint at {tmp}/absent.npz"),
    "finished checkpoint": (["--resume", "{good}"], "already holds 3 epochs; pass --epochs above 3"),
    "fewer epochs than the checkpoint": (["--epochs", "2", "--resume", "{good}"],
                                         "already holds 3 epochs; pass --epochs above 3"),
    "unwritable --out": (["--out", "{tmp}/a-file/run"], "cannot write to directory {tmp}/a-file/run"),
    "zero hidden units": (["--hidden", "16,0"], "argument --hidden: '16,0' needs one or more positive whole numbers"),
    "no hidden list": (["--hidden", ","], "argument --hidden: ',' needs one or more positive whole numbers"),
    "zero latent dim": (["--latent-dim", "0"], "argument --latent-dim: 0 must be a positive whole number"),
    "zero batch size": (["--batch-size", "0"], "argument --batch-size: 0 must be a positive whole number"),
    "zero epochs": (["--epochs", "0"], "argument --epochs: 0 must be a positive whole number"),
    "zero samples": (["--samples", "0"], "argument --samples: 0 must be a positive whole number"),
    "fractional epochs": (["--epochs", "2.5"], "argument --epochs: '2.5' is not a whole number"),
    "zero sigma": (["--sigma", "0"], "argument --sigma: 0 must be between 1e-06 and 1e+06"),
    "negative sigma": (["--sigma", "-1"], "argument --sigma: -1 must be between 1e-06 and 1e+06"),
    "NaN sigma": (["--sigma", "nan"], "argument --sigma: nan must be between 1e-06 and 1e+06"),
    "infinite sigma": (["--sigma", "inf"], "argument --sigma: inf must be between 1e-06 and 1e+06"),
    "zero lr": (["--lr", "0"], "argument --lr: 0 must be a positive finite number"),
    "zero logvar clamp": (["--logvar-clamp", "0"], "argument --logvar-clamp: 0 must be a positive finite number"),
    "negative seed": (["--seed", "-1"], "argument --seed: -1 must be zero or more"),
    "negative log interval": (["--log-interval", "-1"], "argument --log-interval: -1 must be zero or more"),
    "word plot interval": (["--plot-interval", "often"], "argument --plot-interval: 'often' is not a whole number"),
    "unknown dataset": (["--data", "cifar"], "argument --data: invalid choice: 'cifar'"),
    "unknown activation": (["--activation", "swish"], "argument --activation: invalid choice: 'swish'"),
    "unknown likelihood": (["--likelihood", "poisson"], "argument --likelihood: invalid choice: 'poisson'"),
    "unknown optimizer": (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    "unknown binarization": (["--binarize", "half"], "argument --binarize: invalid choice: 'half'"),
    "unknown backend": (["--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    "unknown option": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
}


@pytest.mark.parametrize("options, message", BAD_TRAIN_INPUT.values(), ids=list(BAD_TRAIN_INPUT))
def test_bad_train_input_is_one_line_and_status_2(files, capsys, options, message):
    places = vars(files)
    argv = train_argv(files.tmp / "run", 3, *(option.format(**places) for option in options))
    status, _, err = run_cli(argv, capsys)
    assert_one_line_error(status, err, message.format(**places))


@pytest.mark.parametrize("options, message", [
    (["{truncated}"], "truncated.npz is unreadable or corrupt"),
    (["{tmp}/absent.npz"], "no checkpoint at {tmp}/absent.npz"),
    (["{good}", "--seed", "-1"], "argument --seed: -1 must be zero or more"),
    (["{good}", "--out", "{tmp}/a-file"], "{tmp}/a-file is a file, not a directory"),
    ([], "the following arguments are required: checkpoint"),
], ids=["truncated checkpoint", "missing checkpoint", "negative seed", "unwritable --out", "no checkpoint"])
@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_bad_figure_input_is_one_line_and_status_2(files, capsys, command, options, message):
    places = vars(files)
    if command == "reconstruct" and "--seed" in options:  # a seed only sample reads
        message = "unrecognized arguments: --seed -1"
    status, _, err = run_cli([command, *(option.format(**places) for option in options)], capsys)
    assert_one_line_error(status, err, message.format(**places))


@pytest.mark.parametrize("split, size", [("train_x", 1438 * 64), ("test_x", 359 * 64)])
@pytest.mark.parametrize("pixel, message", [
    (np.nan, "data has 3 NaN or infinite values out of {size}"),
    (1.5, "data has 3 values outside [0, 1] (min 0, max 1.5), which a Bernoulli likelihood cannot model"),
])
def test_bad_pixels_are_counted(tmp_path, monkeypatch, capsys, split, size, pixel, message):
    dataset = load_digits()
    setattr(dataset, split, np.asarray(getattr(dataset, split)))  # float32 rows: uint8 Pixels hold no bad pixel
    getattr(dataset, split)[[1, 50, 300], [0, 10, 20]] = pixel
    monkeypatch.setattr(runconfig, "load_dataset", lambda name, data_dir, **_: dataset)
    status, _, err = run_cli(train_argv(tmp_path, 1), capsys)
    assert_one_line_error(status, err, message.format(size=size))
    assert not (tmp_path / run_checkpoint.CHECKPOINT_NAME).exists()


# ----- Help -----

@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_option_of_every_command_says_what_it_does(command):
    parser = cli.build_parser(command)
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        assert action.help and action.help.strip(), (command, action.option_strings or action.dest)


def test_each_command_offers_only_the_options_it_reads(capsys):
    assert "--seed" not in help_text("reconstruct", capsys)
    assert "--seed SEED           seed of the prior samples z ~ N(0, I)" in help_text("sample", capsys)
    backends = help_text("backends", capsys)
    assert "--backend" not in backends and "--threads" not in backends
    status, _, err = run_cli(["backends", "--threads", "2"], capsys)
    assert status == 2 and "unrecognized arguments: --threads 2" in err


def help_text(command, capsys):
    """What ``minivae COMMAND --help`` prints."""
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return capsys.readouterr().out
