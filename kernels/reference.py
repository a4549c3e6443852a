"""The NumPy reference kernels: the contract every backend implements.

Each function here is the plain-NumPy statement of one hot path. The other
kernel sets (``numba_cpu``, ``numba_cuda``, ``cupy_kernels``) implement the
same names with the same signatures and are tested against these. Shapes use
B for the batch, K for samples per example, D for features.

The list (see ``KERNEL_NAMES``):

- ``matmul(a, b, trans_a, trans_b)``: ``op(a) @ op(b)``, 2-D.
- ``bias_act(x, b, act)`` / ``bias_act_backward(g, y, act)``: ``y = act(x + b)``.
- ``make_rng(seed)`` / ``standard_normal(rng, shape, dtype)``: seeded N(0, 1).
- ``rng_state(rng)`` / ``restore_rng(state)``: the generator's state as a dict of JSON values
  (which a checkpoint stores in its metadata), and a new generator continuing exactly from it.
- ``reparameterize(mu, logvar, eps)`` / ``reparameterize_backward(g, logvar, eps)``.
- ``kl_normal(mu, logvar)`` / ``kl_normal_backward(g, mu, logvar)``.
- ``bernoulli_log_prob(x, logits)`` / ``bernoulli_log_prob_backward(g, x, logits)``.
- ``gaussian_log_prob(x, mean, sigma)`` / ``gaussian_log_prob_backward(g, x, mean, sigma)``.
- ``logsumexp(a, axis)``.
- ``adam_step(...)`` and ``sgd_step(...)``: in place over flat float buffers; Adam's step count and
  learning rate may be 0-d arrays of the backend, which a kernel reads where they live.

This file is the specification: each formula is written once, plainly, and
the autodiff engine (``minivae/ops.py``) links here for the gradient of each
fused primitive. Speed tricks belong to the fast kernel sets. ``sigmoid`` and
``softplus`` are the engine's too. Nothing here imports the autodiff engine.
"""
import math

import numpy as np

from minivae.errors import MinivaeError

ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid")

KERNEL_NAMES = (
    "matmul",
    "bias_act",
    "bias_act_backward",
    "make_rng",
    "standard_normal",
    "rng_state",
    "restore_rng",
    "reparameterize",
    "reparameterize_backward",
    "kl_normal",
    "kl_normal_backward",
    "bernoulli_log_prob",
    "bernoulli_log_prob_backward",
    "gaussian_log_prob",
    "gaussian_log_prob_backward",
    "logsumexp",
    "adam_step",
    "sgd_step",
)

# Not kernels: formulas the engine and the other kernel sets call from here.
FORMULAS = ("sigmoid", "softplus", "adam_step_sizes")

LOG_2PI = math.log(2.0 * math.pi)
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


# ----- Matrix product -----

def matmul(a, b, trans_a=False, trans_b=False):
    """out[i, j] = sum_k op(a)[i, k] * op(b)[k, j], op = transpose when asked."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


# ----- Sigmoid and softplus (the engine's ops.sigmoid and ops.softplus too) -----

def sigmoid(t):
    """1 / (1 + e^-t) as e^min(t, 0) / (1 + e^-|t|): no exp overflows, a tiny result (t << 0) keeps its digits."""
    return np.exp(np.minimum(t, 0)) / (1 + np.exp(-np.abs(t)))


def softplus(t):
    """log(1 + e^t) = max(t, 0) + log1p(e^-|t|): no exp overflows, log1p keeps the digits of a tiny e^-|t|."""
    return np.maximum(t, 0) + np.log1p(np.exp(-np.abs(t)))


# ----- Bias plus activation -----

def bias_act(x, b, act):
    """y[i, j] = act(x[i, j] + b[j])."""
    pre = x + b
    if act == "identity":
        return pre
    if act == "relu":
        return np.maximum(pre, 0)
    if act == "tanh":
        return np.tanh(pre)
    if act == "sigmoid":
        return sigmoid(pre)
    raise ValueError(f"bias_act: unknown activation {act!r}; use one of {ACTIVATIONS}")


def bias_act_backward(g, y, act):
    """Given y = act(x + b) and g = dL/dy: (dL/dx, dL/db) with dL/db = sum_i dL/dx[i]."""
    if act == "identity":
        gx = g
    elif act == "relu":
        gx = g * (y > 0)
    elif act == "tanh":
        gx = g * (1 - y * y)
    elif act == "sigmoid":
        gx = g * y * (1 - y)
    else:
        raise ValueError(f"bias_act_backward: unknown activation {act!r}; use one of {ACTIVATIONS}")
    gx = gx.astype(g.dtype, copy=False)
    return gx, gx.sum(axis=0)


# ----- Sampling -----

def make_rng(seed):
    """The backend's own random state: here a NumPy PCG64 generator."""
    return np.random.default_rng(seed)


def standard_normal(rng, shape, dtype=np.float32):
    """eps ~ N(0, I) of the given shape, drawn from (and advancing) ``rng``."""
    return rng.standard_normal(shape, dtype=dtype)


def rng_state(rng):
    """The state of a NumPy Generator as a JSON-safe dict (arrays as lists, big ints kept)."""
    return _json_safe(rng.bit_generator.state)


def _json_safe(value):
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def restore_rng(state):
    """A new Generator continuing exactly where the one ``rng_state`` described stopped."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in BIT_GENERATORS:
        raise MinivaeError(
            f"random state names bit generator {name!r}; expected one of {', '.join(BIT_GENERATORS)} "
            "(was it saved with rng_state?)")
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError, IndexError) as exc:  # IndexError: a short MT19937 key
        raise MinivaeError(f"random state for {name} is corrupt ({exc}); resume from another checkpoint") from None
    return np.random.Generator(bit_generator)


# ----- Reparameterization: z = mu + sigma * eps (Kingma & Welling, eq. 10) -----

def reparameterize(mu, logvar, eps):
    """z[k, i, j] = mu[i, j] + exp(logvar[i, j] / 2) * eps[k, i, j]."""
    return mu + np.exp(0.5 * logvar) * eps


def reparameterize_backward(g, logvar, eps):
    """dL/dmu = sum_k g;  dL/dlogvar = sum_k g * eps * exp(logvar / 2) / 2."""
    g_mu = g.sum(axis=0)
    g_logvar = 0.5 * np.exp(0.5 * logvar) * (g * eps).sum(axis=0)
    return g_mu, g_logvar


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B) -----

def kl_normal(mu, logvar):
    """kl[i] = -1/2 sum_j (1 + logvar[i, j] - mu[i, j]^2 - exp(logvar[i, j]))."""
    return -0.5 * (1 + logvar - mu * mu - np.exp(logvar)).sum(axis=-1)


def kl_normal_backward(g, mu, logvar):
    """dkl/dmu = mu;  dkl/dlogvar = (exp(logvar) - 1) / 2; scaled by g[i]."""
    g = g[..., None]
    return g * mu, 0.5 * g * np.expm1(logvar)


# ----- Log-likelihoods, summed over the last axis -----

def bernoulli_log_prob(x, logits):
    """lp[..] = sum_j x_j * l_j - softplus(l_j)  (log Bernoulli(x | sigmoid(l)))."""
    return (x * logits - softplus(logits)).sum(axis=-1)


def bernoulli_log_prob_backward(g, x, logits):
    """dlp/dl_j = x_j - sigmoid(l_j), scaled by g."""
    return g[..., None] * (x - sigmoid(logits))


def gaussian_log_prob(x, mean, sigma):
    """lp[..] = sum_j -(x_j - m_j)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
    d = x.shape[-1]
    sq = ((x - mean) ** 2).sum(axis=-1)
    return -0.5 * sq / sigma**2 - d * (math.log(sigma) + 0.5 * LOG_2PI)


def gaussian_log_prob_backward(g, x, mean, sigma):
    """dlp/dm_j = (x_j - m_j) / sigma^2, scaled by g."""
    return g[..., None] * (x - mean) / sigma**2


# ----- Log-sum-exp -----

def logsumexp(a, axis=0):
    """log sum_k exp(a_k) along ``axis``, shifted by the max for stability."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):  # every term -inf: the answer is -inf
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


# ----- Fused optimizer steps over one flat parameter buffer -----

def adam_step_sizes(step, lr, beta1, beta2, eps):
    """(a_t, eps_t) = (lr sqrt(1 - b2^t) / (1 - b1^t), eps sqrt(1 - b2^t)): the bias correction (K&B, Sec. 2).

    step and lr may be numbers or 0-d arrays: then the sizes are 0-d arrays computed where those live.
    """
    root_bias2 = np.sqrt(1 - beta2**step)
    return lr * root_bias2 / (1 - beta1**step), eps * root_bias2


def adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba 2015, Algorithm 1, PyTorch's form), updating p, m and v in place; step counts from 1.

    g' = g + wd p;  m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  p -= a_t m / (sqrt(v) + eps_t),
    a_t and eps_t from ``adam_step_sizes`` in p's dtype. step and lr: numbers or 0-d arrays.
    """
    if weight_decay:
        g = g + weight_decay * p
    a_t, eps_t = (p.dtype.type(size) for size in adam_step_sizes(step, lr, beta1, beta2, eps))
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * (g * g)
    p[...] = p - m / (np.sqrt(v) + eps_t) * a_t


def sgd_step(p, g, velocity, lr, momentum=0.0, weight_decay=0.0):
    """SGD with momentum (PyTorch's form), in place: u = mu u + g'; p -= lr u."""
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        velocity[...] = momentum * velocity + g
        g = velocity
    p[...] = p - lr * g
