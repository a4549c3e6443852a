"""Training steps of a tiny VAE through a schedule, by a given step object, and two such runs compared.

Shared by the static-step tests of every backend: numpy and numba
(test_static_step.py), the fake cupy (test_capture_guard.py), the CUDA
simulator (cudasim/test_training_step.py) and a GPU. A captured or recorded
step must move the parameters, Adam's moments and the summed terms as the
eager step does, through numbers that change between steps.
"""
import numpy as np

from minivae.app import loop, runconfig
from minivae.app.static_step import StaticStep
from minivae.backend import get_backend
from minivae.optim import Adam
from minivae.vae import VAE

BATCH, STEPS = 8, 10

# (objective, samples, beta at each step, learning rate at each step): the plain ELBO, and IWAE with a KL
# warm-up and a learning-rate drop, whose changing numbers a captured step must read from the device
PLAIN = ("elbo", 1, [1.0] * STEPS, [1e-2] * STEPS)
SCHEDULED = ("iwae", 2, list(np.linspace(0.1, 1.0, STEPS)), [1e-2] * 5 + [3e-3] * 5)
SCHEDULES = {"elbo": PLAIN, "iwae with warm-up and an lr drop": SCHEDULED}


def fresh_run(seed=0, objective="elbo", samples=1, optimizer=Adam, steps=STEPS, **model_options):
    """A run of a tiny model (its optimizer, the backend's sampling generator; no data) and ``steps`` binary
    batches."""
    sizes = model_options.pop("sizes", ((12, 10), (10, 12)))
    model = VAE(sizes[0], 3, sizes[1], rng=np.random.default_rng(seed), **model_options)
    config = runconfig.TrainConfig(batch_size=BATCH, objective=objective, samples=samples)
    run = runconfig.Run(config, None, model, optimizer(model.parameters(), lr=1e-2),
                        {"sample": get_backend().kernels.make_rng(seed)})
    batches = (np.random.default_rng(seed + 1).random((steps, BATCH, sizes[0][0])) < 0.5).astype(np.float32)
    return run, batches


def parameters(model):
    return {name: get_backend().asnumpy(p.data).copy() for name, p in model.named_parameters()}


def steps(make_step, objective, samples, betas, rates, **model_options):
    """(parameters, summed terms, optimizer) after the schedule's steps, each through ``make_step(run)``."""
    run, batches = fresh_run(objective=objective, samples=samples, steps=len(betas), **model_options)
    step = make_step(run)
    for x, beta, lr in zip(batches, betas, rates):
        run.optimizer.lr = lr
        assert step(x, beta)
    sums, finite = step.take_sums()
    assert finite and run.optimizer.step_count == len(betas)
    return parameters(run.model), sums, run.optimizer


def eager_steps(*schedule, **model_options):
    return steps(loop.EagerStep, *schedule, **model_options)


def static_steps(*schedule, capture=False, **model_options):
    return steps(lambda run: StaticStep(run, capture=capture), *schedule, **model_options)


def assert_close(got, expected, scale_tolerance, name):
    """|got - expected| <= scale_tolerance * max |expected|: Adam amplifies rounding where v is near 0."""
    np.testing.assert_allclose(got, expected, rtol=0, atol=scale_tolerance * np.abs(expected).max(), err_msg=name)


def assert_same_steps(got, expected, scale_tolerance):
    """The same parameters, Adam moments m and v, summed terms and step count, up to ``scale_tolerance``."""
    (params, sums, optimizer), (expected_params, expected_sums, expected_optimizer) = got, expected
    for name, value in expected_params.items():
        assert_close(params[name], value, scale_tolerance, name)
    for name in ("m", "v"):
        assert_close(*(get_backend().asnumpy(getattr(o, name)) for o in (optimizer, expected_optimizer)),
                     scale_tolerance, name)
    np.testing.assert_allclose(sums, expected_sums, rtol=scale_tolerance)  # both summed in float64 (objective_sums)
    assert optimizer.step_count == expected_optimizer.step_count
