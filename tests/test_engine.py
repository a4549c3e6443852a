"""The autodiff engine: every primitive's gradient, forward values, graph bookkeeping, errors.

The gradient table is ``minivae.opcases.CASES``, the one ``minivae gradcheck``
prints; the test below runs it over hypothesis draws instead of a fixed seed.
"""
import functools
import math
import re
import sys

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from minivae import MinivaeError, Tensor, is_grad_enabled, no_grad, ops
from minivae.backend import get_backend
from minivae.gradcheck import GradcheckError, check_grads
from minivae.opcases import CASES, DOMAINS, OpCase, check_table
from minivae.tensor import ShapeError
from strategies import LAYOUTS, broadcast_pairs, float_arrays, laid_out, raw_inputs

# "No warnings" as np.errstate: overflow, division by zero and invalid values raise; underflow
# stays allowed, since exp(-1e4) -> 0 is the exact floating-point answer.
NO_FLOAT_WARNINGS = {"over": "raise", "divide": "raise", "invalid": "raise"}


def value_and_grads(fn, *arrays, seed=0):
    """fn's value and each input's gradient from one backward seeded with a fixed random direction."""
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(np.random.default_rng(seed).standard_normal(out.shape))
    return out.numpy(), [t.grad for t in tensors]


def assert_agree(expected, actual, rtol=1e-10):
    """Two (value, grads) results hold the same numbers, input by input."""
    (value, grads), (actual_value, actual_grads) = expected, actual
    np.testing.assert_allclose(actual_value, value, rtol=rtol, atol=1e-12)
    assert len(actual_grads) == len(grads)
    for grad, actual_grad in zip(grads, actual_grads):
        np.testing.assert_allclose(actual_grad, grad, rtol=rtol, atol=1e-12)


# ----- The table: every primitive against central differences -----

@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@given(data=st.data())
def test_primitive_gradients(case, data):
    """check_grads in float64; the same gradients whatever the inputs' memory layout."""
    inputs = case.inputs(data.draw(raw_inputs(case), label="raw inputs"))
    check_grads(case.fn, *inputs, name=case.name)
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    assert_agree(value_and_grads(case.fn, *inputs),
                 value_and_grads(case.fn, *(laid_out(x, layout) for x in inputs)))


@given(raw=st.lists(st.floats(-3, 3), min_size=2, max_size=24))
@example(raw=[0.001, 0.0])  # the old ladder (x + 0.001 i) made these two equal
def test_separated_domains_keep_values_apart_and_off_the_kinks(raw):
    """Ties and kinks closer than the central difference's step would make max, abs, relu and clip fail at random;
    a raw draw whose values differ by the old ladder's 0.001 steps was one (max found it)."""
    x = np.asarray(raw)
    for name in ("separated", "separated_b"):
        values = DOMAINS[name](x)
        gaps = np.abs(values[:, None] - values[None, :])[~np.eye(len(values), dtype=bool)]
        assert gaps.min() > 1e-4
        assert np.abs(values[:, None] - np.array([-1.0, 0.0, 1.0])).min() > 1e-4


ENGINE_PRIMITIVES = (  # every primitive of minivae.ops: the gradient table covers each
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "log1p", "sqrt", "square", "abs",
    "tanh", "sigmoid", "relu", "softplus", "maximum", "where", "matmul", "matmul_batched", "sum",
    "mean", "max", "reshape", "transpose", "permute", "broadcast_to", "getitem", "concatenate",
    "stack", "logsumexp", "clip",
    "bias_act", "reparameterize", "kl_normal", "bernoulli_log_prob", "gaussian_log_prob",
)


def test_table_covers_every_primitive():
    """A primitive counts as covered by a case named after it, alone or with a suffix (``mean_axis``)."""
    names = [case.name for case in CASES]
    missing = [p for p in ENGINE_PRIMITIVES if not any(n == p or n.startswith(p + "_") for n in names)]
    assert not missing, f"no gradient case for: {', '.join(missing)}"
    assert len(set(names)) == len(names), "case names must be unique (they are the test ids)"
    batched = next(case for case in CASES if case.name == "matmul_batched")
    a_batch, b_batch = (shape[:-2] for shape in batched.shapes)
    assert a_batch != b_batch, "the batched matmul case should broadcast its batch dimensions"


# ----- Forward values against plain NumPy, in float32 and float64 -----

def checkerboard(shape):
    return np.indices(shape).sum(axis=0) % 2 == 0


PAIR = ((3, 4), (4,))
FORWARD = [
    # name, minivae, numpy, input shapes, domain of every input
    ("add", lambda a, b: a + b, np.add, PAIR, "real"),
    ("sub", lambda a, b: a - b, np.subtract, PAIR, "real"),
    ("mul", lambda a, b: a * b, np.multiply, PAIR, "real"),
    ("div", lambda a, b: a / b, np.divide, PAIR, "positive"),
    ("add_scalar", lambda a: a + 2.5, lambda x: x + 2.5, ((3, 4),), "real"),
    ("rsub_scalar", lambda a: 2.5 - a, lambda x: 2.5 - x, ((3, 4),), "real"),
    ("mul_scalar", lambda a: a * 2.5, lambda x: x * 2.5, ((3, 4),), "real"),
    ("rdiv_scalar", lambda a: 3.0 / a, lambda x: 3.0 / x, ((3, 4),), "positive"),
    ("neg", lambda a: -a, np.negative, ((3, 4),), "real"),
    ("pow", lambda a: a ** 2.5, lambda x: x ** 2.5, ((3, 4),), "positive"),
    ("square", ops.square, np.square, ((3, 4),), "real"),
    ("exp", ops.exp, np.exp, ((3, 4),), "real"),
    ("log", ops.log, np.log, ((3, 4),), "positive"),
    ("log1p", ops.log1p, np.log1p, ((3, 4),), "positive"),
    ("sqrt", ops.sqrt, np.sqrt, ((3, 4),), "positive"),
    ("abs", ops.absolute, np.abs, ((3, 4),), "real"),
    ("tanh", ops.tanh, np.tanh, ((3, 4),), "real"),
    ("sigmoid", ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), ((3, 4),), "real"),
    ("relu", ops.relu, lambda x: np.maximum(x, 0), ((3, 4),), "real"),
    ("softplus", ops.softplus, lambda x: np.logaddexp(0, x), ((3, 4),), "real"),
    ("clip", lambda a: ops.clip(a, -1.0, 1.0), lambda x: np.clip(x, -1.0, 1.0), ((3, 4),), "real"),
    ("maximum", ops.maximum, np.maximum, PAIR, "real"),
    ("maximum_scalar", lambda a: ops.maximum(a, 0.5), lambda x: np.maximum(x, 0.5), ((3, 4),), "real"),
    ("where", lambda a, b: ops.where(checkerboard(a.shape), a, b),
     lambda x, y: np.where(checkerboard(x.shape), x, y), ((3, 4), (3, 4)), "real"),
    ("where_scalar", lambda a: ops.where(checkerboard(a.shape), a, 0.0),
     lambda x: np.where(checkerboard(x.shape), x, 0.0), ((3, 4),), "real"),
    ("matmul", ops.matmul, np.matmul, ((3, 4), (4, 2)), "real"),
    ("matmul_batched", ops.matmul, np.matmul, ((2, 1, 3, 4), (3, 4, 2)), "real"),
    ("sum", lambda a: a.sum(), np.sum, ((2, 3, 4),), "real"),
    ("sum_axes", lambda a: a.sum(axis=(0, -1), keepdims=True),
     lambda x: x.sum(axis=(0, 2), keepdims=True), ((2, 3, 4),), "real"),
    ("mean", lambda a: a.mean(axis=1), lambda x: x.mean(axis=1), ((2, 3, 4),), "real"),
    ("max", lambda a: a.max(axis=-1), lambda x: x.max(axis=-1), ((2, 3, 4),), "real"),
    ("logsumexp", lambda a: a.logsumexp(axis=1), lambda x: np.log(np.exp(x).sum(axis=1)),
     ((2, 3, 4),), "real"),
    ("reshape", lambda a: a.reshape(4, 6), lambda x: x.reshape(4, 6), ((2, 3, 4),), "real"),
    ("transpose", lambda a: a.T, np.transpose, ((2, 3, 4),), "real"),
    ("permute", lambda a: ops.permute(a, 2, 0, 1), lambda x: x.transpose(2, 0, 1), ((2, 3, 4),), "real"),
    ("broadcast_to", lambda a: ops.broadcast_to(a, (2, 3, 4)),
     lambda x: np.broadcast_to(x, (2, 3, 4)), ((3, 1),), "real"),
    ("getitem", lambda a: a[1:, ::2], lambda x: x[1:, ::2], ((3, 4),), "real"),
    ("getitem_array", lambda a: a[np.array([2, 0, 2])], lambda x: x[np.array([2, 0, 2])], ((3, 4),), "real"),
    ("concatenate", lambda a, b: ops.concatenate([a, b], axis=-1),
     lambda x, y: np.concatenate([x, y], axis=-1), ((2, 3), (2, 4)), "real"),
    ("stack", lambda a, b: ops.stack([a, b], axis=1), lambda x, y: np.stack([x, y], axis=1),
     ((2, 3), (2, 3)), "real"),
]
TOLERANCES = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}


@st.composite
def inputs_in_domain(draw, shapes, domain, dtype):
    """Arrays of ``shapes`` moved into ``domain``, cast to ``dtype``, each in a drawn memory layout."""
    raws = [draw(float_arrays(shape, layouts=("contiguous",))) for shape in shapes]
    return [laid_out(DOMAINS[domain](raw).astype(dtype), draw(st.sampled_from(LAYOUTS))) for raw in raws]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("ours, theirs, shapes, domain", [row[1:] for row in FORWARD],
                         ids=[row[0] for row in FORWARD])
@given(data=st.data())
def test_forward_matches_numpy(ours, theirs, shapes, domain, dtype, data):
    arrays = data.draw(inputs_in_domain(shapes, domain, dtype))
    out = ours(*(Tensor(a) for a in arrays))
    expected = theirs(*arrays)
    assert out.dtype == dtype, f"{np.dtype(dtype)} in, {out.dtype} out"
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, **TOLERANCES[dtype])


# ----- Broadcasting, reflected operators, scalars -----

@pytest.mark.parametrize("shape_a, shape_b", [((3, 1), (1, 4)), ((4,), (2, 3, 4)), ((), (3,))],
                         ids=["column_row", "vector_batch", "scalar_array"])
def test_broadcast_gradients_sum_back_to_input_shapes(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)

    def arithmetic(x, y):
        return x * y - x / (1 + y * y) + y
    check_grads(arithmetic, a, b)
    _, (grad_a, grad_b) = value_and_grads(arithmetic, a, b)
    assert grad_a.shape == shape_a and grad_b.shape == shape_b


@given(data=st.data())
def test_broadcast_add_gradient_is_the_summed_seed(data):
    shape_a, shape_b = data.draw(broadcast_pairs())
    a, b = Tensor(np.zeros(shape_a), requires_grad=True), Tensor(np.zeros(shape_b), requires_grad=True)
    out = a + b
    seed = data.draw(float_arrays(out.shape))
    out.backward(seed)
    for leaf in (a, b):
        np.testing.assert_allclose(leaf.grad, _summed_to(seed, leaf.shape))


def _summed_to(grad, shape):
    """The independent statement of unbroadcast: sum leading axes, then the axes where shape has 1."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)


@pytest.mark.parametrize("expression, value, grad", [
    (lambda t: 2 - t, lambda x: 2 - x, lambda x: -np.ones_like(x)),
    (lambda t: 3 / t, lambda x: 3 / x, lambda x: -3 / x**2),
    (lambda t: 2 + t, lambda x: 2 + x, np.ones_like),
    (lambda t: 2 * t, lambda x: 2 * x, lambda x: np.full_like(x, 2.0)),
    (lambda t: np.ones(3) * t, lambda x: x, np.ones_like),
    (lambda t: np.full(3, 5.0) - t, lambda x: 5.0 - x, lambda x: -np.ones_like(x)),
    (lambda t: np.full(3, 6.0) / t, lambda x: 6.0 / x, lambda x: -6.0 / x**2),
    (lambda t: np.ones((2, 3)) @ t.reshape(3, 1), lambda x: np.full((2, 1), x.sum()), lambda x: np.full(3, 2.0)),
], ids=["rsub", "rdiv", "radd", "rmul", "ndarray_mul", "ndarray_sub", "ndarray_div", "ndarray_matmul"])
def test_reflected_operators(expression, value, grad):
    """A number or ndarray on the left defers to the Tensor: the result is a Tensor in the graph."""
    x = Tensor(np.array([0.5, 1.0, 2.0]), requires_grad=True)
    out = expression(x)
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_allclose(out.numpy(), value(x.data))
    out.sum().backward()
    np.testing.assert_allclose(x.grad, grad(x.data))


def test_float32_stays_float32_through_a_graph_with_python_numbers():
    x = Tensor(np.array([0.5, -1.0], dtype=np.float32), requires_grad=True)
    out = (ops.maximum(ops.sigmoid(x * 2.0 + 1.0), 0.25) / 3.0).sum()
    out.backward()
    assert out.dtype == np.float32 and x.grad.dtype == np.float32


# ----- Accumulation: a tensor used more than once gets every contribution -----

def test_reused_tensor_accumulates():
    x = Tensor(np.array([-1.5, 0.5, 2.0]), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_mu_in_two_branches_gets_both_gradients():
    """mu feeds the KL (d/dmu = mu) and K samples z = mu + sigma eps (d/dmu = 1 each)."""
    rng = np.random.default_rng(0)
    mu = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    logvar = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    eps = rng.standard_normal((4, 2, 3))
    loss = ops.kl_normal(mu, logvar).sum() + ops.reparameterize(mu, logvar, eps).sum()
    loss.backward()
    np.testing.assert_allclose(mu.grad, mu.data + 4)
    sigma = np.exp(logvar.data / 2)
    np.testing.assert_allclose(logvar.grad, np.expm1(logvar.data) / 2 + sigma / 2 * eps.sum(axis=0))


def test_diamond_graph():
    """b = 2a and c = 3a both feed d = b c = 6 a^2, so dd/da = 12 a."""
    a = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    b, c = a * 2, a * 3
    (b * c).sum().backward()
    np.testing.assert_allclose(a.grad, 12 * a.data)


def test_two_backward_calls_accumulate_and_zero_grad_resets():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    loss.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)
    grad_buffer = x.grad
    x.zero_grad()
    assert x.grad is grad_buffer and not x.grad.any()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)


def test_a_scalar_leaf_keeps_its_gradient_in_an_array_across_zero_grad():
    """A 0-d leaf's gradient comes back from broadcasting as a NumPy scalar; it is kept as a 0-d array, which the
    backward after ``zero_grad`` writes over."""
    w, x = Tensor(2.0, requires_grad=True), Tensor(np.array([1.0, 2.0]))
    for _ in range(2):
        w.zero_grad()
        (x * w).sum().backward()
        assert isinstance(w.grad, np.ndarray) and w.grad.shape == () and w.grad == 3.0
    (x * w).sum().backward()
    assert w.grad == 6.0


def test_retain_grad_keeps_an_intermediate_gradient_and_leaves_the_rest_as_they_were():
    """y = 2x, L = sum y^2: dL/dy = 2y kept on y; x's gradient 8x as without it; z, not retained, keeps none."""
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y, z = x * 2, x * 3
    y.retain_grad()
    ((y * y).sum() + z.sum()).backward()
    np.testing.assert_allclose(y.grad, 2 * y.data)
    np.testing.assert_allclose(x.grad, 8 * x.data + 3)
    assert z.grad is None


def test_noise_and_data_are_recorded_as_inputs_that_get_no_gradient():
    """reparameterize keeps eps, the likelihoods keep x, among their parents; neither takes a gradient."""
    rng = np.random.default_rng(0)
    mu, logvar = (Tensor(rng.standard_normal((2, 3)), requires_grad=True) for _ in range(2))
    eps, x = rng.standard_normal((4, 2, 3)), rng.random(3)
    z = ops.reparameterize(mu, logvar, eps)
    log_px = ops.bernoulli_log_prob(x, z)
    assert z._parents[:2] == (mu, logvar) and z._parents[2].data is eps
    assert log_px._parents[0].data is x and log_px._parents[1] is z
    log_px.sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    assert z._parents[2].grad is None and log_px._parents[0].grad is None


def test_deep_chain_backpropagates_without_recursion():
    """5000 sequential adds, far past the recursion limit: the backward pass must be iterative."""
    depth = 5000
    assert sys.getrecursionlimit() < depth
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    for _ in range(depth):
        y = y + x
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, depth + 1.0))


# ----- no_grad, detach and the small accessors -----

def test_no_grad_records_no_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with no_grad():
        assert not is_grad_enabled()
        y = x * 3
    assert not y.requires_grad
    (y * x).sum().backward()
    np.testing.assert_allclose(x.grad, y.data)  # y is a constant: nothing flowed through it


def test_no_grad_restores_after_an_exception_and_when_nested():
    with pytest.raises(RuntimeError), no_grad():
        raise RuntimeError("inside")
    assert is_grad_enabled()
    with no_grad():
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert (Tensor(np.ones(2), requires_grad=True) * 2).requires_grad


def test_detach_cuts_the_graph():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    held = x.detach()
    assert not held.requires_grad
    np.testing.assert_array_equal(held.numpy(), x.numpy())
    (held * x).sum().backward()
    np.testing.assert_allclose(x.grad, x.data)  # not 2x: the detached factor is a constant


def test_item_numpy_and_repr():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    total = (x * x).sum()
    assert total.item() == 5.0 and isinstance(total.item(), float)
    values = x.numpy()
    assert isinstance(values, np.ndarray) and values.tolist() == [1.0, 2.0]
    assert repr(x) == "Tensor([1., 2.], dtype=float64, requires_grad=True)"
    assert repr(total) == "Tensor(5., dtype=float64, grad_fn=sum)"
    assert repr(Tensor([0.5])) == "Tensor([0.5], dtype=float32)"


# ----- Fused primitives equal their composites and stay finite -----

EPS = np.random.default_rng(3).standard_normal((2, 3, 4))
BERNOULLI_X = np.array([0.0, 1.0, 0.25, 1.0])
GAUSSIAN_X = np.array([0.5, -1.0, 2.0, 0.0])
SIGMA = 0.7


def composite_sigmoid(a):
    return 1 / (1 + ops.exp(-a))


COMPOSITE_ACTIVATIONS = {"identity": lambda a: a, "relu": ops.relu, "tanh": ops.tanh,
                         "sigmoid": composite_sigmoid}
FUSED = [
    *[(f"bias_act_{act}", lambda x, b, act=act: ops.bias_act(x, b, act),
       lambda x, b, act=act: COMPOSITE_ACTIVATIONS[act](x + b), ((3, 4), (4,)))
      for act in COMPOSITE_ACTIVATIONS],
    ("reparameterize", lambda mu, logvar: ops.reparameterize(mu, logvar, EPS),
     lambda mu, logvar: mu + ops.exp(logvar * 0.5) * EPS, ((3, 4), (3, 4))),
    ("kl_normal", ops.kl_normal,
     lambda mu, logvar: -0.5 * (1 + logvar - mu * mu - ops.exp(logvar)).sum(axis=-1), ((3, 4), (3, 4))),
    ("bernoulli_log_prob", lambda logits: ops.bernoulli_log_prob(BERNOULLI_X, logits),
     lambda logits: (BERNOULLI_X * logits - ops.log1p(ops.exp(logits))).sum(axis=-1), ((2, 3, 4),)),
    ("gaussian_log_prob", lambda mean: ops.gaussian_log_prob(GAUSSIAN_X, mean, SIGMA),
     lambda mean: (-((GAUSSIAN_X - mean) ** 2) / (2 * SIGMA**2) - math.log(SIGMA)
                   - 0.5 * math.log(2 * math.pi)).sum(axis=-1), ((3, 4),)),
    ("logsumexp", lambda a: a.logsumexp(axis=1), lambda a: ops.log(ops.exp(a).sum(axis=1)), ((2, 3, 4),)),
    ("softplus", ops.softplus, lambda a: ops.log1p(ops.exp(a)), ((3, 4),)),
    ("sigmoid", ops.sigmoid, composite_sigmoid, ((3, 4),)),
]


@pytest.mark.parametrize("fused, composite, shapes", [row[1:] for row in FUSED], ids=[row[0] for row in FUSED])
@given(data=st.data())
def test_fused_equals_composite(fused, composite, shapes, data):
    arrays = [data.draw(float_arrays(shape)) for shape in shapes]
    assert_agree(value_and_grads(composite, *arrays), value_and_grads(fused, *arrays))


LOGITS = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
EXTREMES = [
    # name, fn of logits, its exact value at LOGITS
    ("softplus", ops.softplus, [0.0, 1.9287498479639178e-22, math.log(2), 50.0, 1e4]),
    ("sigmoid", ops.sigmoid, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0]),
    ("bias_act_sigmoid", lambda a: ops.bias_act(a.reshape(1, 5), a * 0, "sigmoid"),
     [[0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0]]),
    ("bias_act_tanh", lambda a: ops.bias_act(a.reshape(1, 5), a * 0, "tanh"), [[-1.0, -1.0, 0.0, 1.0, 1.0]]),
    ("bernoulli_log_prob", lambda a: ops.bernoulli_log_prob(np.array([1.0, 1.0, 0.0, 0.0, 1.0]), a),
     -1e4 - 50.0 - math.log(2) - 50.0 - 0.0),
    ("logsumexp", lambda a: a.logsumexp(), 1e4),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("fn, expected", [row[1:] for row in EXTREMES], ids=[row[0] for row in EXTREMES])
def test_fused_stay_finite_at_extreme_logits(fn, expected, dtype):
    """Logits up to +-1e4: exact values, finite gradients, no overflow or invalid-value warnings."""
    logits = Tensor(LOGITS.astype(dtype), requires_grad=True)
    with np.errstate(**NO_FLOAT_WARNINGS):
        out = fn(logits)
        out.backward(np.ones(out.shape))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(logits.grad).all()


def test_logsumexp_of_all_minus_infinity_is_minus_infinity():
    rows = Tensor(np.array([[-np.inf, -np.inf], [0.0, 0.0]]))
    with np.errstate(**NO_FLOAT_WARNINGS):
        out = rows.logsumexp(axis=1)
        whole = Tensor(np.full(3, -np.inf)).logsumexp()
    np.testing.assert_array_equal(out.numpy(), [-np.inf, math.log(2)])
    assert whole.item() == -np.inf


# ----- Errors: one line naming the operation and the shapes -----

def test_matmul_error_names_both_shapes():
    with pytest.raises(ShapeError, match=re.escape("matmul: (3, 4) @ (5, 2)")):
        ops.matmul(Tensor(np.ones((3, 4))), Tensor(np.ones((5, 2))))


@pytest.mark.parametrize("op, apply", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("maximum", ops.maximum), ("where", lambda a, b: ops.where(True, a, b)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_binary_op_error_names_the_op_and_both_shapes(op, apply):
    with pytest.raises(ShapeError) as raised:
        apply(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))
    message = str(raised.value)
    assert message.startswith(f"{op}:") and "(2, 3)" in message and "(4,)" in message


def test_backward_on_a_non_scalar_asks_for_grad():
    out = Tensor(np.ones(3), requires_grad=True) * 2
    with pytest.raises(MinivaeError, match="grad="):
        out.backward()
    with pytest.raises(ShapeError, match=re.escape("(2,)")):
        out.backward(np.ones(2))


def test_reshape_to_an_incompatible_shape():
    with pytest.raises(ShapeError, match=re.escape("(2, 3)") + ".*" + re.escape("(4, 2)")):
        Tensor(np.ones((2, 3))).reshape(4, 2)


@pytest.mark.parametrize("apply", [
    lambda t: t.sum(axis=2), lambda t: t.mean(axis=-3), lambda t: t.max(axis=2),
    lambda t: t.logsumexp(axis=(0, 5)), lambda t: t.transpose(1, 2), lambda t: ops.permute(t, -3, 0),
    lambda t: ops.concatenate([t, t], axis=2), lambda t: ops.stack([t, t], axis=3),
], ids=["sum", "mean", "max", "logsumexp", "transpose", "permute", "concatenate", "stack"])
def test_bad_axis(apply):
    """An axis a (2, 3) tensor does not have is refused, never wrapped round to one it has."""
    with pytest.raises(ShapeError, match="axis|axes"):
        apply(Tensor(np.ones((2, 3))))


def test_power_with_a_tensor_exponent_is_a_type_error():
    with pytest.raises(TypeError, match="exp\\(p \\* log\\(a\\)\\)"):
        Tensor(np.ones(2)) ** Tensor(np.ones(2))


def test_shape_errors_are_minivae_errors_and_value_errors():
    assert issubclass(ShapeError, MinivaeError) and issubclass(ShapeError, ValueError)


# ----- Mutation: a broken VJP must be caught -----

def _flipped_tanh(a):
    out = np.tanh(a.data)
    return ops.make_result(out, (a,), lambda g: (-g * (1 - out * out),), "tanh")


_REAL_BIAS_ACT_BACKWARD = get_backend().kernels.bias_act_backward


@functools.wraps(_REAL_BIAS_ACT_BACKWARD)  # the engine finds a kernel by its name in the contract
def _flipped_bias_act_backward(g, y, act):
    return tuple(-grad for grad in _REAL_BIAS_ACT_BACKWARD(g, y, act))


def test_a_flipped_vjp_in_ops_is_caught(monkeypatch):
    monkeypatch.setattr(ops, "tanh", _flipped_tanh)
    x = np.random.default_rng(0).standard_normal((3, 4))
    with pytest.raises(GradcheckError, match="tanh_method"):
        check_grads(lambda a: a.tanh(), x, name="tanh_method")


def _doubled_masked_sum(a):
    """sum(a * m) for a 0/1 mask m, with a VJP that is twice too large: wrong where m = 1, exactly 0 elsewhere."""
    mask = (np.arange(a.data.size).reshape(a.shape) % 2).astype(a.data.dtype)
    return ops.make_result(np.sum(a.data * mask), (a,), lambda g: (2 * g * mask,), "masked_sum")


def test_the_table_reports_a_wrong_gradient_that_is_zero_in_places_as_a_failed_row():
    (row,) = check_table([OpCase("doubled_masked_sum", _doubled_masked_sum, ((3, 4),), ("real",))], trials=2)
    assert not row.passed and row.max_rel_error == pytest.approx(0.5, rel=1e-6)  # |2 - 1| / 2


def test_a_flipped_kernel_vjp_is_caught_by_the_table(monkeypatch):
    monkeypatch.setattr(get_backend().kernels, "bias_act_backward", _flipped_bias_act_backward)
    case = next(case for case in CASES if case.name == "bias_act_tanh")
    rng = np.random.default_rng(0)
    with pytest.raises(GradcheckError, match="bias_act_tanh, argument 0"):
        check_grads(case.fn, *case.inputs([rng.standard_normal(s) for s in case.shapes]), name=case.name)

