"""Optimizers against hand-written NumPy loops of the published formulas, state round trips, validation, the flat buffer."""
import json

import numpy as np
import pytest

from minivae import ops
from minivae.errors import MinivaeError
from minivae.nn import MLP, Linear, Parameter
from minivae.optim import SGD, Adagrad, Adam, flatten_parameters

STEPS = 6
SHAPES = [(3, 2), (4,)]
CURVATURES = [np.array([[1.0, 3.0], [0.5, 2.0], [4.0, 1.5]]), np.array([2.0, 0.3, 1.0, 5.0])]
TARGETS = [np.arange(6.0).reshape(3, 2) / 3, np.array([1.0, -1.0, 0.5, 2.0])]


def initial_values():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape) for shape in SHAPES]


def quadratic_loss(params):
    """L = sum_i 1/2 a_i (p_i - t_i)^2: each gradient a (p - t) changes as p moves."""
    total = 0.0
    for p, a, t in zip(params, CURVATURES, TARGETS):
        total = total + (0.5 * a * ops.square(p - t)).sum()
    return total


def numpy_grads(values):
    return [a * (p - t) for p, a, t in zip(values, CURVATURES, TARGETS)]


def run_engine(make_optimizer, steps=STEPS, clip=None, values=None):
    params = [Parameter(v.copy()) for v in (values or initial_values())]
    optimizer = make_optimizer(params)
    for _ in range(steps):
        optimizer.zero_grad()
        quadratic_loss(params).backward()
        if clip is not None:
            optimizer.clip_grad_norm(clip)
        optimizer.step()
    return [p.numpy() for p in params], optimizer


# ----- The published formulas, one array per parameter -----

def numpy_sgd(lr, momentum=0.0, weight_decay=0.0, steps=STEPS):
    """PyTorch SGD: g' = g + wd p; u = momentum u + g' (u = g' at the first step); p -= lr u."""
    values = initial_values()
    velocities = [np.zeros_like(v) for v in values]
    for _ in range(steps):
        for p, u, g in zip(values, velocities, numpy_grads(values)):
            g = g + weight_decay * p
            u[...] = momentum * u + g if momentum else g
            p -= lr * u
    return values


def numpy_adam(lr, beta1, beta2, eps, weight_decay=0.0, steps=STEPS):
    """Kingma & Ba, Algorithm 1, with PyTorch's L2 weight decay folded into g."""
    values = initial_values()
    ms, vs = [np.zeros_like(v) for v in values], [np.zeros_like(v) for v in values]
    for t in range(1, steps + 1):
        for p, m, v, g in zip(values, ms, vs, numpy_grads(values)):
            g = g + weight_decay * p
            m[...] = beta1 * m + (1 - beta1) * g
            v[...] = beta2 * v + (1 - beta2) * g**2
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return values


def numpy_adagrad(lr, eps, weight_decay=0.0, steps=STEPS):
    """Duchi et al. 2011 (PyTorch's form): s += g'^2; p -= lr g' / (sqrt(s) + eps)."""
    values = initial_values()
    sums = [np.zeros_like(v) for v in values]
    for _ in range(steps):
        for p, s, g in zip(values, sums, numpy_grads(values)):
            g = g + weight_decay * p
            s += g * g
            p -= lr * g / (np.sqrt(s) + eps)
    return values


def assert_same(engine_values, numpy_values):
    for a, b in zip(engine_values, numpy_values):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.1)])
def test_sgd_matches_the_formula(momentum, weight_decay):
    engine, _ = run_engine(lambda ps: SGD(ps, lr=0.05, momentum=momentum, weight_decay=weight_decay))
    assert_same(engine, numpy_sgd(0.05, momentum, weight_decay))


@pytest.mark.parametrize("betas, weight_decay", [((0.9, 0.999), 0.0), ((0.5, 0.9), 0.0), ((0.8, 0.99), 0.05)])
def test_adam_matches_the_formula_with_bias_correction(betas, weight_decay):
    engine, _ = run_engine(lambda ps: Adam(ps, lr=0.1, betas=betas, eps=1e-8, weight_decay=weight_decay))
    assert_same(engine, numpy_adam(0.1, *betas, 1e-8, weight_decay))


def test_adam_first_step_moves_each_entry_by_about_lr():
    """With bias correction, m_hat / sqrt(v_hat) = g / |g| at t = 1: every entry moves by lr."""
    engine, _ = run_engine(lambda ps: Adam(ps, lr=0.01), steps=1)
    for before, after in zip(initial_values(), engine):
        np.testing.assert_allclose(np.abs(after - before), 0.01, rtol=1e-5)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adagrad_matches_the_formula(weight_decay):
    engine, _ = run_engine(lambda ps: Adagrad(ps, lr=0.3, eps=1e-10, weight_decay=weight_decay))
    assert_same(engine, numpy_adagrad(0.3, 1e-10, weight_decay))


def test_clip_grad_norm_scales_the_total_norm_and_returns_it():
    params = [Parameter(v) for v in initial_values()]
    optimizer = SGD(params, lr=0.1)
    quadratic_loss(params).backward()
    grads = numpy_grads(initial_values())
    total = np.sqrt(sum((g**2).sum() for g in grads))
    assert optimizer.clip_grad_norm(1.0) == pytest.approx(total, rel=1e-12)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * 1.0 / (total + 1e-6), rtol=1e-12)
    assert optimizer.clip_grad_norm(10 * total) == pytest.approx(1.0, rel=1e-6)  # below max_norm: unchanged


def test_clipping_every_step_matches_the_formula():
    engine, _ = run_engine(lambda ps: SGD(ps, lr=0.05), clip=0.5)
    values = initial_values()
    for _ in range(STEPS):
        grads = numpy_grads(values)
        total = np.sqrt(sum((g**2).sum() for g in grads))
        scale = min(1.0, 0.5 / (total + 1e-6))
        for p, g in zip(values, grads):
            p -= 0.05 * scale * g
    assert_same(engine, values)


def test_zero_grad_resets_every_gradient_and_keeps_the_flat_views():
    params = [Parameter(v) for v in initial_values()]
    optimizer = Adam(params)
    views = [p.grad for p in params]
    quadratic_loss(params).backward()
    assert optimizer.flat.gradients().any()
    optimizer.zero_grad()
    assert all(not p.grad.any() for p in params)
    assert not optimizer.flat.gradients().any()
    assert all(p.grad is view for p, view in zip(params, views))


def test_after_zero_grad_backward_writes_the_new_gradient_not_the_sum():
    """The lazy reset: a stale gradient is overwritten, a parameter backward misses reads zero."""
    params = [Parameter(v) for v in initial_values()]
    optimizer = SGD(params, lr=0.1)
    quadratic_loss(params).backward()
    optimizer.zero_grad()
    (0.5 * ops.square(params[0] - TARGETS[0])).sum().backward()  # reaches params[0] only
    flat = optimizer.flat.gradients()
    first = params[0].size
    np.testing.assert_allclose(flat[:first], (params[0].data - TARGETS[0]).ravel())
    assert not flat[first:].any()
    np.testing.assert_array_equal(params[1].grad, 0)


def test_backward_twice_without_zero_grad_adds_up():
    params = [Parameter(v) for v in initial_values()]
    optimizer = SGD(params, lr=0.1)
    optimizer.zero_grad()
    quadratic_loss(params).backward()
    quadratic_loss(params).backward()
    for p, g in zip(params, numpy_grads([p.data for p in params])):
        np.testing.assert_allclose(p.grad, 2 * g)


def test_a_step_after_zero_grad_alone_sees_zero_gradients():
    """zero_grad then step (no backward): SGD with zero gradients leaves the parameters where they are."""
    params = [Parameter(v) for v in initial_values()]
    optimizer = SGD(params, lr=0.1)
    quadratic_loss(params).backward()
    before = [p.data.copy() for p in params]
    optimizer.zero_grad()
    optimizer.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)


def test_float32_parameters_stay_float32():
    params = [Parameter(v, dtype=np.float32) for v in initial_values()]
    optimizer = Adam(params, lr=0.1)
    quadratic_loss(params).backward()
    optimizer.step()
    assert all(p.dtype == np.float32 for p in params) and optimizer.m.dtype == np.float32


# ----- State for checkpoints: an exact resume -----

OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: Adam(ps, lr=0.1, weight_decay=0.01),
    "adagrad": lambda ps: Adagrad(ps, lr=0.3),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_the_same_trajectory(name):
    make = OPTIMIZERS[name]
    halfway, optimizer = run_engine(make, steps=3)
    arrays, scalars = optimizer.state_dict()
    scalars = json.loads(json.dumps(scalars))  # as a checkpoint stores them
    uninterrupted, _ = run_engine(make, steps=6)

    def resumed(ps):
        fresh = make(ps)
        fresh.load_state_dict(arrays, scalars)
        return fresh
    continued, fresh = run_engine(resumed, steps=3, values=halfway)
    for a, b in zip(continued, uninterrupted):
        np.testing.assert_array_equal(a, b)
    assert fresh.step_count == 6


def test_state_dict_arrays_are_copies():
    _, optimizer = run_engine(OPTIMIZERS["adam"], steps=2)
    arrays, _ = optimizer.state_dict()
    arrays["m"][...] = 0
    assert optimizer.m.any()


def test_load_state_dict_restores_hyperparameters():
    _, optimizer = run_engine(lambda ps: Adam(ps, lr=0.5, betas=(0.8, 0.9)), steps=1)
    fresh = Adam([Parameter(v) for v in initial_values()])
    fresh.load_state_dict(*optimizer.state_dict())
    assert (fresh.lr, fresh.beta1, fresh.beta2, fresh.step_count) == (0.5, 0.8, 0.9, 1)


def test_load_state_dict_names_what_does_not_fit():
    _, adam = run_engine(OPTIMIZERS["adam"], steps=1)
    arrays, scalars = adam.state_dict()
    sgd = SGD([Parameter(v) for v in initial_values()], lr=0.1)
    with pytest.raises(MinivaeError, match="optimizer state is for Adam, not SGD"):
        sgd.load_state_dict(arrays, scalars)
    smaller = Adam([Parameter(np.zeros(3))])
    with pytest.raises(MinivaeError, match=r"m has shape \(10,\) in the checkpoint but \(3,\) here"):
        smaller.load_state_dict(arrays, scalars)
    with pytest.raises(MinivaeError, match="optimizer state has no v buffer"):
        adam.load_state_dict({"m": arrays["m"]}, scalars)
    with pytest.raises(MinivaeError, match="step_count must be an integer >= 0, got -1"):
        adam.load_state_dict(arrays, {**scalars, "step_count": -1})


# ----- Hyperparameters are checked before anything is touched -----

@pytest.mark.parametrize("make, message", [
    (lambda ps: SGD(ps, lr=0), "SGD: lr must be a finite number > 0, got 0"),
    (lambda ps: SGD(ps, lr=float("nan")), "SGD: lr must be a finite number > 0, got nan"),
    (lambda ps: SGD(ps, lr="0.1"), "SGD: lr must be a finite number > 0, got '0.1'"),
    (lambda ps: SGD(ps, lr=0.1, momentum=1.0), r"SGD: momentum must be a number in \[0, 1\), got 1.0"),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), "SGD: weight_decay must be a finite number >= 0, got -1"),
    (lambda ps: Adam(ps, betas=(0.9, 1.0)), r"Adam: beta2 must be a number in \[0, 1\), got 1.0"),
    (lambda ps: Adam(ps, betas=0.9), r"Adam: betas must be a pair \(beta1, beta2\), got 0.9"),
    (lambda ps: Adam(ps, eps=-1e-8), "Adam: eps must be a finite number >= 0"),
    (lambda ps: Adagrad(ps, lr=-0.1), "Adagrad: lr must be a finite number > 0, got -0.1"),
])
def test_bad_hyperparameters_are_one_line_errors_and_leave_parameters_alone(make, message):
    params = [Parameter(v) for v in initial_values()]
    with pytest.raises(MinivaeError, match=message):
        make(params)
    assert all(p.grad is None and p.data.base is None for p in params)


def test_clip_grad_norm_rejects_a_bad_max_norm():
    optimizer = SGD([Parameter(np.zeros(2))], lr=0.1)
    with pytest.raises(MinivaeError, match="clip_grad_norm: max_norm must be a finite number > 0, got 0"):
        optimizer.clip_grad_norm(0)


# ----- The flat parameter buffer -----

def test_flatten_copies_values_and_rebinds_views():
    model = MLP((3, 4, 2), rng=np.random.default_rng(0))
    before = model.state_dict()
    flat = flatten_parameters(model.parameters())
    assert flat.data.shape == flat.grad.shape == (sum(p.size for p in model.parameters()),)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[name])
        assert np.shares_memory(p.data, flat.data) and np.shares_memory(p.grad, flat.grad)
    assert not flat.grad.any()
    flat.data[...] = 2
    assert all((p.numpy() == 2).all() for p in model.parameters())


def test_backward_writes_into_the_flat_grad_buffer():
    layer = Linear(3, 2, dtype=np.float64)
    flat = flatten_parameters(layer.parameters())
    x = np.random.default_rng(0).standard_normal((4, 3))
    layer(x).sum().backward()
    np.testing.assert_allclose(flat.grad[:6].reshape(3, 2), x.sum(axis=0)[:, None].repeat(2, axis=1))
    np.testing.assert_allclose(flat.grad[6:], [4, 4])
    layer(x).sum().backward()  # accumulates, still in the buffer
    np.testing.assert_allclose(flat.grad[6:], [8, 8])


def one_parameter():
    return Parameter(np.zeros(2))


@pytest.mark.parametrize("make_params, message", [
    (lambda: [], "no parameters to optimize"),
    (lambda: [np.zeros(2)], "parameter 0 is a ndarray, not a Tensor"),
    (lambda: [one_parameter()] * 2, "a parameter appears twice"),
    (lambda: [one_parameter(), Parameter(np.zeros(2), dtype=np.float32)], r"mixed dtypes \(float32, float64\)"),
])
def test_flatten_rejects_what_one_buffer_cannot_hold(make_params, message):
    with pytest.raises(MinivaeError, match=message):
        flatten_parameters(make_params())
