"""The static-buffer training step that CUDA captures: run eagerly here, it must equal ``training.train_step``.

Capture itself needs a GPU (the ``gpu`` test at the end); what it records is
``StaticStep.run``, which runs eagerly on every backend.
"""
import dataclasses

import numpy as np
import pytest

from kernel_cases import needs_gpu
from minivae import set_backend
from minivae.app import runconfig, training
from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.graph_step import StaticStep
from minivae.optim import SGD, Adam
from minivae.vae import VAE
from runs import run_cli, skip_figures, train_argv

BATCH, STEPS = 8, 10


def fresh_run(seed=0):
    """A model, its Adam, the backend's sampling generator and 10 binary batches, all from ``seed``."""
    model = VAE((12, 10), 3, (10, 12), rng=np.random.default_rng(seed))
    optimizer = Adam(model.parameters(), lr=1e-2)
    batches = (np.random.default_rng(seed + 1).random((STEPS, BATCH, 12)) < 0.5).astype(np.float32)
    return model, optimizer, get_backend().kernels.make_rng(seed), batches


def parameters(model):
    return {name: get_backend().asnumpy(p.data).copy() for name, p in model.named_parameters()}


# (objective, samples, beta at each step, learning rate at each step): the plain ELBO, and IWAE with a KL
# warm-up and a learning-rate drop, whose changing numbers a captured step must read from the device
PLAIN = ("elbo", 1, [1.0] * STEPS, [1e-2] * STEPS)
SCHEDULED = ("iwae", 2, list(np.linspace(0.1, 1.0, STEPS)), [1e-2] * 5 + [3e-3] * 5)


def ordinary_steps(objective, samples, betas, rates):
    model, optimizer, rng, batches = fresh_run()
    sums = 0
    for x, beta, lr in zip(batches, betas, rates):
        optimizer.lr = lr
        sums = sums + training.train_step(model, optimizer, x, samples, rng, objective, beta)
    return parameters(model), sums, optimizer


def static_steps(objective, samples, betas, rates, capture=False):
    model, optimizer, rng, batches = fresh_run()
    step = StaticStep(model, optimizer, BATCH, samples=samples, rng=rng, capture=capture, objective=objective)
    for x, beta, lr in zip(batches, betas, rates):
        optimizer.lr = lr
        step(x, beta)
    sums, finite = step.take_sums()
    assert finite
    return parameters(model), sums, optimizer


def assert_close(got, expected, scale_tolerance, name):
    """|got - expected| <= scale_tolerance * max |expected|: Adam amplifies rounding where v is near 0."""
    np.testing.assert_allclose(got, expected, rtol=0, atol=scale_tolerance * np.abs(expected).max(), err_msg=name)


def assert_same_steps(got, expected, scale_tolerance):
    (params, sums, optimizer), (expected_params, expected_sums, expected_optimizer) = got, expected
    for name, value in expected_params.items():
        assert_close(params[name], value, scale_tolerance, name)
    for name in ("m", "v"):
        assert_close(*(get_backend().asnumpy(getattr(o, name)) for o in (optimizer, expected_optimizer)),
                     scale_tolerance, name)
    np.testing.assert_allclose(sums, expected_sums, rtol=max(scale_tolerance, 1e-6))  # float64 sums here
    assert optimizer.step_count == expected_optimizer.step_count == STEPS


@pytest.mark.parametrize("schedule", [PLAIN, SCHEDULED], ids=["elbo", "iwae with warm-up and an lr drop"])
@pytest.mark.parametrize("backend, scale_tolerance", [
    ("numba", 0),  # the same float32 operations as numba's fused Adam kernel, in the same order
    ("numpy", 1e-4)])  # the reference Adam rounds in another order, and 10 steps amplify it
def test_the_static_step_run_eagerly_equals_the_ordinary_step(backend, scale_tolerance, schedule):
    set_backend(backend)
    try:
        assert_same_steps(static_steps(*schedule), ordinary_steps(*schedule), scale_tolerance)
    finally:
        set_backend("numpy")


def test_a_step_outside_it_moves_its_step_count_too():
    """The last, partial batch of an epoch runs train_step; the next static step's Adam must see t + 1."""
    model, optimizer, rng, batches = fresh_run()
    step = StaticStep(model, optimizer, BATCH, samples=1, rng=rng)
    step(batches[0])
    training.train_step(model, optimizer, batches[1][:5], 1, rng)
    step(batches[2])
    twin, twin_optimizer, twin_rng, _ = fresh_run()
    for x in (batches[0], batches[1][:5], batches[2]):
        training.train_step(twin, twin_optimizer, x, 1, twin_rng)
    for name, value in parameters(twin).items():
        np.testing.assert_allclose(parameters(model)[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_take_sums_reports_a_non_finite_loss_and_resets():
    model, optimizer, rng, batches = fresh_run()
    step = StaticStep(model, optimizer, BATCH, samples=1, rng=rng)
    step(batches[0])
    sums, finite = step.take_sums()
    assert finite and sums[0] == pytest.approx(sums[1]) == pytest.approx(sums[2] - sums[3])  # beta 1: the ELBO
    model.fc_heads.bias.data[3:] = 200.0  # logvar's bias: exp(200) overflows float32
    step(batches[1])
    assert step.take_sums()[1] is False
    assert not step.sums.any()


def test_only_adam_is_static():
    model = VAE((12, 10), 3, (10, 12))
    with pytest.raises(MinivaeError, match="a static training step runs Adam, not SGD; use --optimizer adam"):
        StaticStep(model, SGD(model.parameters(), lr=0.1), BATCH, samples=1, rng=None)


# ----- In training -----

def test_a_run_with_the_static_step_ends_where_an_eager_run_does(tmp_path, monkeypatch):
    """Full batches through StaticStep (eagerly here), the last partial batch through train_step."""
    skip_figures(monkeypatch)
    config = runconfig.TrainConfig(hidden=(16,), epochs=2, plot_interval=0, batch_size=100)  # 1438 = 14 x 100 + 38
    eager_model, eager_history = training.train(dataclasses.replace(config, out=str(tmp_path / "eager")),
                                             progress=False, log=lambda line: None)
    monkeypatch.setattr(training, "CAPTURING_BACKENDS", ("numpy",))
    made = []
    monkeypatch.setattr(training, "StaticStep", lambda *args, **options: made.append(
        StaticStep(*args, **{**options, "capture": False})) or made[-1])
    static_model, static_history = training.train(dataclasses.replace(config, out=str(tmp_path / "static")),
                                               progress=False, log=lambda line: None)
    assert len(made) == 1 and made[0].optimizer.step_count == 2 * 15
    for name, value in parameters(eager_model).items():
        np.testing.assert_allclose(parameters(static_model)[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    for eager_row, static_row in zip(eager_history, static_history):
        assert static_row["train_elbo"] == pytest.approx(eager_row["train_elbo"], rel=1e-5)


def test_cuda_graph_on_a_cpu_backend_trains_eagerly_with_a_note(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    status, out, err = run_cli(train_argv(tmp_path, 1, "--cuda-graph"), capsys)
    assert status == 0, err
    assert "--cuda-graph: only the cupy backend captures the training step; training eagerly on numpy" in out
    status, out, _ = run_cli(train_argv(tmp_path / "off", 1, "--no-cuda-graph"), capsys)
    assert status == 0 and "--cuda-graph" not in out


def test_cuda_graph_with_another_optimizer_trains_eagerly_with_a_note(tmp_path, monkeypatch, capsys):
    skip_figures(monkeypatch)
    monkeypatch.setattr(training, "CAPTURING_BACKENDS", ("numpy",))
    status, out, err = run_cli(train_argv(tmp_path, 1, "--cuda-graph", "--optimizer", "sgd"), capsys)
    assert status == 0, err
    assert "--cuda-graph: only Adam's step is captured; training eagerly with sgd" in out


@needs_gpu
@pytest.mark.parametrize("schedule", [PLAIN, SCHEDULED], ids=["elbo", "iwae with warm-up and an lr drop"])
def test_captured_and_eager_steps_give_the_same_parameters(schedule):
    set_backend("cupy")
    try:
        assert_same_steps(static_steps(*schedule, capture=True), ordinary_steps(*schedule), scale_tolerance=1e-5)
    finally:
        set_backend("numpy")
