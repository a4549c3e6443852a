"""NumPy twins of the CUDA C kernels that ``kernels/cupy_kernels.py`` builds, for ``fake_cupy``.

Each twin does what its CUDA C body does (``pointwise.cu``, ``reduce.cu``,
``optim.cu`` and the bodies in ``cupy_kernels._kernels``), in the inputs'
dtype, so the cupy kernel set's host code runs on the CPU. Reductions sum in
float64, as the kernels' ``reduce_type="double"`` does.
"""
import numpy as np

from minivae.kernels import philox, reference
from minivae.kernels.shared import IDENTITY, RELU, SIGMOID, TANH


def _activate(code, t):
    """pointwise.cu mv_activate."""
    if code == RELU:
        return np.maximum(t, t.dtype.type(0))
    if code == TANH:
        return np.tanh(t)
    if code == SIGMOID:
        return reference.sigmoid(t)
    assert code == IDENTITY, code
    return t


def _activate_grad(code, y):
    """pointwise.cu mv_activate_grad."""
    one = y.dtype.type(1)
    if code == RELU:
        return (y > 0).astype(y.dtype)
    if code == TANH:
        return one - y * y
    if code == SIGMOID:
        return y * (one - y)
    return np.ones_like(y)


def _kl_term(mu, logvar):
    return mu.dtype.type(1) + logvar - mu * mu - np.exp(logvar)


def _bernoulli_term(x, logit):
    return x * logit - reference.softplus(logit)


def _bias_act(x, b, code, cols):
    index = np.arange(x.size).reshape(x.shape) % cols  # y = act(x + b[i % cols])
    return _activate(code, x + b[index])


ELEMENTWISE = {
    "minivae_bias_act": _bias_act,
    "minivae_act_grad": lambda g, y, code: g * _activate_grad(code, y),
    "minivae_reparameterize": lambda mu, logvar, eps: mu + np.exp(logvar / mu.dtype.type(2)) * eps,
    "minivae_kl_backward": lambda g, mu, logvar: (g * mu, g * np.expm1(logvar) / mu.dtype.type(2)),
    "minivae_bernoulli_backward": lambda g, x, logit: g * (x - reference.sigmoid(logit)),
    "minivae_gaussian_backward": lambda g, x, mean, inv_var: g * (x - mean) * inv_var,
}

# (the term each element maps to, the post-map of the float64 sum)
REDUCTIONS = {
    "minivae_product_sum": (lambda g, eps: g * eps, lambda a: a),
    "minivae_kl": (_kl_term, lambda a: -a / 2),
    "minivae_bernoulli": (_bernoulli_term, lambda a: a),
    "minivae_squared_distance": (lambda x, mean: (x - mean) * (x - mean), lambda a: a),
}


def _logsumexp_columns(a, rows, cols, out):
    """reduce.cu: out[p] = m + log sum_k exp(a[k, p] - m), m the column's max (0 if not finite), in double."""
    columns = a.reshape(rows, cols).astype(np.float64)
    top = columns.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out[...] = (top + np.log(np.exp(columns - top).sum(axis=0))).astype(out.dtype).reshape(out.shape)


def _adam_step(p, g, m, v, n, sizes, beta1, beta2, weight_decay):
    """optim.cu adam_update, every element at once; sizes = [a_t, eps_t] in device memory."""
    one, (a_t, eps_t) = p.dtype.type(1), sizes
    grad = g + weight_decay * p
    m[...] = beta1 * m + (one - beta1) * grad
    v[...] = beta2 * v + (one - beta2) * grad * grad
    p -= a_t * m / (np.sqrt(v) + eps_t)


def _sgd_step(p, g, velocity, n, lr, momentum, weight_decay):
    """optim.cu sgd_update, every element at once."""
    grad = g + weight_decay * p
    if momentum != 0:
        velocity[...] = momentum * velocity + grad
        grad = velocity
    p -= lr * grad


def _philox_normals(state, out, n):
    """random.cu philox_normals_*: the draw from the key and counter in ``state``, which it only reads."""
    out[...] = philox.standard_normal(state, int(n), out.dtype)[0]


def _philox_advance(state, calls):
    """random.cu philox_advance: counter += calls."""
    state[philox.COUNTER] = philox.counters_at(state[philox.COUNTER], [int(calls)])[0]


RAW = {"logsumexp_columns": _logsumexp_columns, "adam_step": _adam_step, "sgd_step": _sgd_step,
       "philox_normals": _philox_normals, "philox_advance": _philox_advance}


def elementwise(name):
    return _twin(ELEMENTWISE, name)


def reduction(name):
    term, post = _twin(REDUCTIONS, name)

    def reduce(*args, axis=None, keepdims=False):
        total = np.asarray(term(*np.broadcast_arrays(*args)), np.float64).sum(axis=axis, keepdims=keepdims)
        return np.asarray(post(total)).astype(args[0].dtype)
    return reduce


def raw(name):
    """The twin of raw kernel ``name`` (its dtype suffix, _f32 or _f64, dropped)."""
    return _twin(RAW, name[:-4] if name.endswith(("_f32", "_f64")) else name)


def _twin(table, name):
    if name not in table:
        raise NotImplementedError(f"fake_cupy has no NumPy twin of the CUDA kernel {name!r}; add one to "
                                  "tests/fake_cupy_kernels.py")
    return table[name]
