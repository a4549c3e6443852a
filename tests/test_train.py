"""The training loop: what a run writes, checkpoint round trips, exact resume, and stopping cleanly."""
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from minivae import likelihood
from minivae.app import data, loop, run_checkpoint, runconfig, training
from minivae.app.checkpoint import load_checkpoint
from minivae.errors import MinivaeError
from minivae.tensor import Tensor
from runs import assert_one_line_error, assert_same_run, reference_checkpoint, run_cli, skip_figures, train_argv

TINY = runconfig.TrainConfig(hidden=(16,), epochs=3, plot_interval=0)
STEPS_PER_EPOCH = math.ceil(1438 / TINY.batch_size)  # digits: 1438 training images


def tiny(tmp_path, **changes):
    return dataclasses.replace(TINY, out=str(tmp_path), **changes)


def quiet_train(config, resume=None):
    """train() without progress bar; returns (model, history, logged lines)."""
    lines = []
    run = training.train(config, resume=resume, progress=False, log=lines.append)
    return run.model, run.history, lines


def steps_failing_at(monkeypatch, failing_call, fault):
    """Make the ``failing_call``-th call of train_step run ``fault(optimizer)`` first."""
    real_step, calls = loop.train_step, []

    def step(model, optimizer, *args):
        calls.append(1)
        if len(calls) == failing_call:
            fault(optimizer)
        return real_step(model, optimizer, *args)
    monkeypatch.setattr(loop, "train_step", step)


def ctrl_c(optimizer):
    raise KeyboardInterrupt


# ----- What a run writes -----

def test_a_run_logs_and_saves_its_history(tmp_path, monkeypatch):
    skip_figures(monkeypatch)
    _, history, lines = quiet_train(tiny(tmp_path))
    assert [row["epoch"] for row in history] == [1, 2, 3] and len(lines) == 5
    assert lines[0].startswith("digits from scikit-learn (bundled): 1438 training and 359 test images; numpy backend")
    assert lines[1] == "objective: ELBO (the ELBO, 1 sample of z per image)"
    for row in history:
        assert row["train_elbo"] == pytest.approx(row["train_reconstruction"] - row["train_kl"])
        assert row["test_elbo"] == pytest.approx(row["test_reconstruction"] - row["test_kl"])
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    _, meta, _ = run_checkpoint.read_training_checkpoint(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert metrics == history == meta["history"]
    assert meta["config"] == dataclasses.asdict(tiny(tmp_path)) | {"hidden": [16], "threads": 1}  # the count it ran at


def test_checkpoint_round_trip(tmp_path, monkeypatch):
    skip_figures(monkeypatch)
    model, _, _ = quiet_train(tiny(tmp_path, epochs=1))
    loaded, config, _ = run_checkpoint.load_trained(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert config == tiny(tmp_path, epochs=1, threads=1) and loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name, strict=True)
    x = Tensor(np.random.default_rng(0).random((4, 64), dtype=np.float32))
    np.testing.assert_array_equal(model.reconstruct(x), loaded.reconstruct(x))


def test_figures_at_every_plot_interval_and_after_the_last_epoch(tmp_path, monkeypatch):
    epochs = []
    monkeypatch.setattr(training, "write_figures", lambda out, model, data, epoch, *rest, **options: epochs.append(epoch))
    quiet_train(tiny(tmp_path, epochs=5, plot_interval=2))
    assert epochs == [2, 4, 5]


def test_write_figures_writes_the_named_files(tmp_path):
    config = tiny(tmp_path)
    data = runconfig.prepare_data(config)
    model = runconfig.build_model(config, data.train_x.shape[1])
    row = {"epoch": 1, "train_elbo": -40.0, "train_reconstruction": -39.0, "train_kl": 1.0,
           "test_elbo": -41.0, "test_reconstruction": -40.0, "test_kl": 1.0}
    training.write_figures(tmp_path, model, data, 7, [row], seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latent_scatter.png", "loss_curves.png", "manifold.png", "reconstruction_7.png", "sample_7.png"]


def test_the_free_space_check_counts_the_checkpoints_arrays_without_building_them(tmp_path):
    config = tiny(tmp_path)
    run = runconfig.start_run(config, runconfig.prepare_data(config))
    arrays, _ = run_checkpoint.checkpoint_payload(run)
    assert run_checkpoint.checkpoint_nbytes(run) == sum(array.nbytes for array in arrays.values())


def test_log_interval_prints_steps(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    quiet_train(tiny(tmp_path, epochs=1, log_interval=5))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines] == [f"5/{STEPS_PER_EPOCH}", f"10/{STEPS_PER_EPOCH}"]


def test_evaluate_elbo_is_repeatable():
    config = runconfig.TrainConfig(hidden=(16,))
    data = runconfig.prepare_data(config)
    model = runconfig.build_model(config, data.train_x.shape[1])
    first, second = (likelihood.evaluate_elbo(model, data.test_x, 50, samples=2, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert first[0] == pytest.approx(first[1] - first[2])


def float32_digits():
    """The digits held as float32 rows, as ``load_digits`` gave them before it kept them as uint8 ``Pixels``."""
    import sklearn.datasets

    from minivae.app.data import load_digits
    x = (sklearn.datasets.load_digits().data / 16).astype(np.float32)
    return dataclasses.replace(load_digits(), train_x=x[:1438], test_x=x[1438:])


@pytest.mark.parametrize("binarize", ["none", "static", "dynamic"])
def test_a_run_on_uint8_pixels_is_the_run_on_float32_images(tmp_path, monkeypatch, binarize):
    skip_figures(monkeypatch)
    quiet_train(tiny(tmp_path / "pixels", epochs=2, binarize=binarize))
    monkeypatch.setattr(runconfig, "load_dataset", lambda name, data_dir, **_: float32_digits())
    quiet_train(tiny(tmp_path / "float32", epochs=2, binarize=binarize))
    assert_same_run(tmp_path / "pixels" / run_checkpoint.CHECKPOINT_NAME, tmp_path / "float32" / run_checkpoint.CHECKPOINT_NAME)


def test_evaluate_elbo_on_pixels_is_the_elbo_of_their_float32_rows():
    config = runconfig.TrainConfig(hidden=(16,))
    data = runconfig.prepare_data(config)
    model = runconfig.build_model(config, data.train_x.shape[1])
    np.testing.assert_array_equal(likelihood.evaluate_elbo(model, data.test_x, 50, samples=2, seed=3),
                                  likelihood.evaluate_elbo(model, np.asarray(data.test_x), 50, samples=2, seed=3))


# ----- Exact resume -----

def test_resume_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path, tmp_path_factory, monkeypatch):
    reference = reference_checkpoint(tmp_path_factory, 3)
    skip_figures(monkeypatch)
    quiet_train(tiny(tmp_path, epochs=1))
    _, history, lines = quiet_train(tiny(tmp_path), resume=tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert [row["epoch"] for row in history] == [1, 2, 3] and len(lines) == 4  # data, objective, epochs 2 and 3
    assert_same_run(tmp_path / run_checkpoint.CHECKPOINT_NAME, reference)


CHANGED = {"hidden": (32,), "latent_dim": 3, "activation": "tanh", "likelihood": "gaussian", "sigma": 0.5,
           "logvar_clamp": 5.0, "objective": "iwae", "samples": 2, "beta": 0.5, "kl_warmup": 2, "batch_size": 64,
           "lr": 1e-3, "lr_schedule": "burda", "optimizer": "sgd", "binarize": "dynamic", "seed": 2,
           "train_examples": 100, "test_examples": 50}


def test_every_option_that_shapes_the_run_is_checked_on_resume():
    assert set(CHANGED) == set(runconfig.RESUME_FIELDS) - {"data"}  # digits is the only dataset without files


@pytest.mark.parametrize("field, value", CHANGED.items(), ids=list(CHANGED))
def test_resume_with_another_option_is_refused(tmp_path, tmp_path_factory, field, value):
    reference = reference_checkpoint(tmp_path_factory, 3)
    with pytest.raises(MinivaeError, match=f"was trained with {field}=.*resume with the same options"):
        quiet_train(tiny(tmp_path, epochs=4, **{field: value}), resume=reference)


def test_resume_of_a_finished_run_says_to_raise_epochs(tmp_path, tmp_path_factory):
    reference = reference_checkpoint(tmp_path_factory, 3)
    with pytest.raises(MinivaeError, match="already holds 3 epochs; pass --epochs above 3"):
        quiet_train(tiny(tmp_path), resume=reference)


# ----- Stopping: Ctrl-C and divergence -----

@pytest.mark.parametrize("failing_call, message", [
    (1, "interrupted in epoch 1, before the first checkpoint; run the same command to start again"),
    (STEPS_PER_EPOCH + 5, "interrupted in epoch 2; the checkpoint {out}/checkpoint.npz (epoch 1) is intact; "
                          "continue with the same options and --resume {out}/checkpoint.npz"),
])
def test_ctrl_c_stops_with_the_resume_command(tmp_path, monkeypatch, failing_call, message):
    skip_figures(monkeypatch)
    steps_failing_at(monkeypatch, failing_call, ctrl_c)
    with pytest.raises(training.TrainingInterrupted) as stopped:
        quiet_train(tiny(tmp_path))
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert str(stopped.value) == message.format(out=tmp_path)


def test_ctrl_c_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, tmp_path_factory, monkeypatch):
    reference = reference_checkpoint(tmp_path_factory, 3)
    skip_figures(monkeypatch)
    real_savez, saves = np.savez, []

    def savez_interrupted_the_second_time(file, **arrays):
        saves.append(1)
        if len(saves) == 2:
            file.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        real_savez(file, **arrays)
    monkeypatch.setattr(np, "savez", savez_interrupted_the_second_time)
    with pytest.raises(training.TrainingInterrupted, match=r"epoch 2; the checkpoint .* \(epoch 1\) is intact"):
        quiet_train(tiny(tmp_path))
    monkeypatch.setattr(np, "savez", real_savez)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "metrics.jsonl"]
    quiet_train(tiny(tmp_path), resume=tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert_same_run(tmp_path / run_checkpoint.CHECKPOINT_NAME, reference)


def test_a_non_finite_loss_makes_no_update(tmp_path):
    config = tiny(tmp_path)
    data = runconfig.prepare_data(config)
    model = runconfig.build_model(config, data.train_x.shape[1])
    optimizer = runconfig.build_optimizer(config, model)
    optimizer.flat.data[0] = np.nan
    before = optimizer.flat.data.copy()
    rng = np.random.default_rng(0)
    assert loop.train_step(model, optimizer, data.train_x[:8], 1, rng) is None
    np.testing.assert_array_equal(optimizer.flat.data, before)
    assert optimizer.step_count == 0


def test_an_update_that_overflows_is_caught_at_its_step(tmp_path):
    """lr beyond float32's range: the first step's loss is finite, the parameters after it are not."""
    with pytest.raises(loop.Diverged, match=r"^training diverged at epoch 1, step 1: the loss or the updated "
                                             r"parameters are not finite; lower --lr \(now 1e\+39\)"):
        quiet_train(tiny(tmp_path, optimizer="sgd", lr=1e39))
    assert not (tmp_path / run_checkpoint.CHECKPOINT_NAME).exists()


def test_a_non_finite_test_elbo_stops_before_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "evaluate_elbo", lambda *args, **kwargs: np.array([-np.inf, -np.inf, 0.0]))
    with pytest.raises(loop.Diverged, match=r"^training diverged at epoch 1: the test ELBO is -inf; .* "
                                             r"no checkpoint was written yet$"):
        quiet_train(tiny(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_train_examples_and_test_examples_take_the_first_images(tmp_path, capsys, monkeypatch):
    skip_figures(monkeypatch)
    seen = []
    step = loop.train_step
    monkeypatch.setattr(loop, "train_step", lambda model, optimizer, x, *rest: seen.append(x) or step(
        model, optimizer, x, *rest))
    status, _, err = run_cli(train_argv(tmp_path, 1, "--train-examples", "20", "--test-examples", "7",
                                        "--batch-size", "8"), capsys)
    assert status == 0, err
    assert sorted(len(x) for x in seen) == [4, 8, 8]
    first = data.load_dataset("digits").train_x[:20]
    assert sorted(map(bytes, np.concatenate(seen))) == sorted(map(bytes, first))
    _, meta = load_checkpoint(tmp_path / run_checkpoint.CHECKPOINT_NAME)
    assert (meta["config"]["train_examples"], meta["config"]["test_examples"]) == (20, 7)


@pytest.mark.parametrize("option", ["--train-examples", "--test-examples"])
def test_more_examples_than_the_split_holds_is_refused_in_one_line(option, tmp_path, capsys):
    status, _, err = run_cli(train_argv(tmp_path, 1, option, "5000"), capsys)
    assert_one_line_error(status, err, f"{option} 5000", "digits has only", "ask for at most")


def test_a_resume_whose_checkpoint_another_run_replaced_meanwhile_is_refused(tmp_path, monkeypatch, capsys):
    """Read before the lock, checked after it: another run that saved into the directory in between is not undone."""
    skip_figures(monkeypatch)
    for name, epochs in (("d", 1), ("later", 2)):
        assert run_cli(train_argv(tmp_path / name, epochs), capsys)[0] == 0
    checkpoint, later = tmp_path / "d" / run_checkpoint.CHECKPOINT_NAME, tmp_path / "later" / run_checkpoint.CHECKPOINT_NAME
    check_writable = training.check_writable

    def another_run_saves_first(out):
        os.replace(later, checkpoint)  # as a run in d saving its epoch 2 would
        return check_writable(out)
    monkeypatch.setattr(training, "check_writable", another_run_saves_first)
    status, _, err = run_cli(train_argv(tmp_path / "d", 3, "--resume", str(checkpoint)), capsys)
    assert status == 2 and "was replaced while this run started" in err, err
    assert len(load_checkpoint(checkpoint)[1]["history"]) == 2
