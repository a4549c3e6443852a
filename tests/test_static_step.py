"""The static-buffer training step that CUDA captures: run eagerly here, it must equal ``loop.train_step``.

Capture itself needs a GPU (the ``gpu`` test at the end); what it records is
``StaticStep.run``, which runs eagerly on every backend.
"""
import dataclasses

import numpy as np
import pytest

from kernel_cases import needs_gpu
from minivae import set_backend
from minivae.app import loop, runconfig, training
from minivae.app.recording import Recording
from minivae.app.static_step import StaticStep
from minivae.errors import MinivaeError
from minivae.optim import SGD, Adam
from runs import run_cli, run_state, skip_figures, train_argv
from step_cases import SCHEDULES, assert_same_steps, eager_steps, fresh_run, parameters, static_steps


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_the_static_step_run_eagerly_equals_the_ordinary_step(backend, schedule):
    """The same kernels in the same order, Adam's t and lr read from 0-d arrays: the same parameters, exactly."""
    set_backend(backend)
    try:
        assert_same_steps(static_steps(*schedule), eager_steps(*schedule), scale_tolerance=0)
    finally:
        set_backend("numpy")


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_the_recorded_step_replayed_on_numba_equals_the_ordinary_step_exactly(schedule):
    """Recorded at the first step, its calls replayed on the same buffers for the other nine: the same bits."""
    set_backend("numba")
    try:
        assert_same_steps(static_steps(*schedule, capture=True), eager_steps(*schedule), scale_tolerance=0)
    finally:
        set_backend("numpy")


MODELS = {"gaussian, tanh, clamped logvar": dict(likelihood="gaussian", sigma=0.5, activation="tanh", logvar_clamp=3.0),
          "two sigmoid layers, float64": dict(sizes=((12, 10, 8), (8, 10, 12)), activation="sigmoid",
                                              dtype=np.float64)}


@pytest.mark.parametrize("options", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_every_model_s_recorded_step_replays_exactly_what_it_computes_when_run(schedule, options):
    """Against the same step run each time (in float64 Adam's bias correction from 0-d arrays, not numbers,
    rounds unlike the ordinary step's; ``minivae train`` makes float32 models)."""
    set_backend("numba")
    try:
        assert_same_steps(static_steps(*schedule, capture=True, **options), static_steps(*schedule, **options),
                          scale_tolerance=0)
    finally:
        set_backend("numpy")


def test_a_short_batch_runs_the_eager_step_and_the_next_static_step_sees_its_step_count():
    """The last, partial batch of an epoch runs eagerly; the next static step's Adam must see t + 1."""
    run, batches = fresh_run()
    step = StaticStep(run)
    for x in (batches[0], batches[1][:5], batches[2]):
        assert step(x)
    twin, _ = fresh_run()
    eager = loop.EagerStep(twin)
    for x in (batches[0], batches[1][:5], batches[2]):
        assert eager(x)
    assert run.optimizer.step_count == twin.optimizer.step_count == 3
    for name, value in parameters(twin.model).items():
        np.testing.assert_allclose(parameters(run.model)[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(step.take_sums()[0], eager.take_sums()[0], rtol=1e-5)  # the short batch's sums too


def test_adam_s_step_count_is_written_by_the_host_before_each_step_and_no_replayed_call_writes_it():
    """t = the optimizer's step count + 1 at each step, copied in as lr and beta are; the replay only reads it."""
    set_backend("numba")
    try:
        run, batches = fresh_run()
        step = StaticStep(run, capture=True)
        for x in batches[:3]:
            assert step(x)
            assert float(step.t) == run.optimizer.step_count
    finally:
        set_backend("numpy")
    assert {call.function.__name__ for call in step.graph.calls if call.reads(step.t)} == {"adam_step"}


def test_take_sums_reports_a_non_finite_loss_and_resets():
    run, batches = fresh_run()
    step = StaticStep(run)
    step(batches[0])
    sums, finite = step.take_sums()
    assert finite and sums[0] == pytest.approx(sums[1]) == pytest.approx(sums[2] - sums[3])  # beta 1: the ELBO
    run.model.fc_heads.bias.data[3:] = 200.0  # logvar's bias: exp(200) overflows float32
    assert step(batches[1])  # nothing is read back during the step
    assert step.take_sums()[1] is False
    assert not step.sums.any()


def test_only_adam_is_static():
    run, _ = fresh_run(optimizer=SGD)
    with pytest.raises(MinivaeError, match="a static training step runs Adam, not SGD; use --optimizer adam"):
        StaticStep(run)


# ----- In training -----

def test_a_run_with_the_static_step_ends_where_an_eager_run_does(tmp_path, monkeypatch):
    """Full batches through StaticStep (eagerly here), the last partial batch through the eager step."""
    skip_figures(monkeypatch)
    config = runconfig.TrainConfig(hidden=(16,), epochs=2, plot_interval=0, batch_size=100)  # 1438 = 14 x 100 + 38
    eager = training.train(dataclasses.replace(config, out=str(tmp_path / "eager")), progress=False,
                           log=lambda line: None)
    monkeypatch.setattr(training, "CAPTURING_BACKENDS", ("numpy",))
    made = []
    monkeypatch.setattr(training, "StaticStep", lambda run, capture: made.append(StaticStep(run)) or made[-1])
    static = training.train(dataclasses.replace(config, out=str(tmp_path / "static")), progress=False,
                            log=lambda line: None, cuda_graph=True)
    assert len(made) == 1 and made[0].optimizer.step_count == 2 * 15
    for name, value in parameters(eager.model).items():
        np.testing.assert_allclose(parameters(static.model)[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    for eager_row, static_row in zip(eager.history, static.history):
        assert static_row["train_elbo"] == pytest.approx(eager_row["train_elbo"], rel=1e-5)


@pytest.mark.parametrize("backend, optimizer, recorded", [("numba", "adam", True), ("numba", "sgd", False),
                                                         ("numpy", "adam", False)])
def test_a_run_records_its_step_by_default_on_numba_with_adam(backend, optimizer, recorded):
    set_backend(backend)
    try:
        run, _ = fresh_run(optimizer={"adam": Adam, "sgd": SGD}[optimizer])
        run.config = dataclasses.replace(run.config, optimizer=optimizer)
        step = training.make_step(run, None, log=print)
        assert isinstance(step, StaticStep) == recorded and getattr(step, "capture", False) == recorded
    finally:
        set_backend("numpy")


def test_on_numba_the_replayed_run_and_its_resume_end_exactly_where_an_eager_run_does(tmp_path, monkeypatch):
    """Full batches replayed, the last partial one eager, two epochs, and the same again resumed after one."""
    skip_figures(monkeypatch)
    made = []
    monkeypatch.setattr(training, "StaticStep", lambda run, capture: made.append(StaticStep(run, capture)) or made[-1])
    set_backend("numba")
    try:
        config = runconfig.TrainConfig(hidden=(16,), epochs=2, plot_interval=0, batch_size=100)
        quiet = dict(progress=False, log=lambda line: None)
        eager = training.train(dataclasses.replace(config, out=str(tmp_path / "eager")), cuda_graph=False, **quiet)
        replayed = training.train(dataclasses.replace(config, out=str(tmp_path / "replayed")), **quiet)
        first = training.train(dataclasses.replace(config, epochs=1, out=str(tmp_path / "resumed")), **quiet)
        resumed = training.train(dataclasses.replace(config, out=str(tmp_path / "resumed")), **quiet,
                                 resume=tmp_path / "resumed" / "checkpoint.npz")
    finally:
        set_backend("numpy")
    assert len(made) == 3 and all(isinstance(step.graph, Recording) for step in made)  # by default, not eager
    for run in (replayed, resumed):
        for name, value in parameters(eager.model).items():
            np.testing.assert_array_equal(parameters(run.model)[name], value, err_msg=name)
    without_seconds = [{**row, "seconds": 0} for row in replayed.history]
    assert [{**row, "seconds": 0} for row in first.history + resumed.history[1:]] == without_seconds
    assert [{**row, "seconds": 0} for row in eager.history] == without_seconds  # both sum in float64, alike


def test_log_interval_on_numba_reads_the_replayed_step_s_sums_without_changing_the_run(tmp_path, monkeypatch,
                                                                                     capsys):
    """Every 5 of 15 steps (the 15th a short, eager batch) the ELBO of the examples since the last line: the
    three lines make the epoch's train ELBO, and the run ends bit for bit where one without them does."""
    skip_figures(monkeypatch)
    made = []
    monkeypatch.setattr(training, "StaticStep", lambda run, capture: made.append(StaticStep(run, capture)) or made[-1])
    numba = ("--backend", "numba", "--batch-size", "100")  # 1438 images: 14 batches of 100 and one of 38
    try:
        status, out, err = run_cli(train_argv(tmp_path / "logged", 1, *numba, "--log-interval", "5"), capsys)
        assert status == 0, err
        status, quiet_out, err = run_cli(train_argv(tmp_path / "quiet", 1, *numba), capsys)
        assert status == 0, err
    finally:
        set_backend("numpy")
    assert len(made) == 2 and all(isinstance(step.graph, Recording) for step in made)
    lines = [line.split() for line in out.splitlines() if line.startswith("  epoch 1 step")]
    assert [line[3] for line in lines] == ["5/15", "10/15", "15/15"] and "  epoch 1 step" not in quiet_out
    logged_elbo = (500 * float(lines[0][5]) + 500 * float(lines[1][5]) + 438 * float(lines[2][5])) / 1438
    (arrays, meta), (quiet_arrays, quiet_meta) = (run_state(tmp_path / name / "checkpoint.npz")
                                                  for name in ("logged", "quiet"))
    assert logged_elbo == pytest.approx(meta["history"][0]["train_elbo"], abs=1e-3)  # each line rounded to 1e-3
    for name, value in quiet_arrays.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)
    assert meta["history"][0]["train_elbo"] == pytest.approx(quiet_meta["history"][0]["train_elbo"], rel=1e-12)


def test_cuda_graph_on_a_cpu_backend_trains_eagerly_with_a_note(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    status, out, err = run_cli(train_argv(tmp_path, 1, "--cuda-graph"), capsys)
    assert status == 0, err
    assert "--cuda-graph: only the cupy and numba backends record the training step; training eagerly on numpy" in out
    status, out, _ = run_cli(train_argv(tmp_path / "off", 1, "--no-cuda-graph"), capsys)
    assert status == 0 and "--cuda-graph" not in out


def test_cuda_graph_with_another_optimizer_trains_eagerly_with_a_note(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    monkeypatch.setattr(training, "CAPTURING_BACKENDS", ("numpy",))
    status, out, err = run_cli(train_argv(tmp_path, 1, "--cuda-graph", "--optimizer", "sgd"), capsys)
    assert status == 0, err
    assert "--cuda-graph: a static training step runs Adam, not SGD; training eagerly" in out


@needs_gpu
@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_captured_and_eager_steps_give_the_same_parameters(schedule):
    set_backend("cupy")
    try:
        assert_same_steps(static_steps(*schedule, capture=True), eager_steps(*schedule), scale_tolerance=1e-5)
    finally:
        set_backend("numpy")
