"""What the compiled kernel sets share: per-element formulas and host-side shape rules.

The formulas are plain Python, written once and compiled per target
(MiniTorch's pattern): ``numba_cpu`` wraps them with ``njit(inline="always")``,
``numba_cuda`` with ``cuda.jit(device=True)``. Each calls only ``math``, never
another formula here, so it compiles on its own. The CUDA C twins for CuPy are
in ``pointwise.cu``.

Numba's on-disk cache (``cache=True``) checks only the file of each kernel:
after editing a formula here, delete ``kernels/__pycache__`` so the CPU
kernels recompile.
"""
import math
from contextlib import contextmanager

import numpy as np

from minivae.kernels.reference import ACTIVATIONS

IDENTITY, RELU, TANH, SIGMOID = range(len(ACTIVATIONS))


# ----- Host side: names and shapes -----

def act_code(act, kernel):
    """The integer code of activation ``act`` (its index in ``ACTIVATIONS``)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"{kernel}: unknown activation {act!r}; use one of {ACTIVATIONS}")
    return ACTIVATIONS.index(act)


def rows(xp, a):
    """``a`` as a C-contiguous (rows, last axis) matrix; copies only when it must."""
    return xp.ascontiguousarray(a).reshape(-1, a.shape[-1])


def broadcast_rows(x, theta, kernel):
    """The broadcast shape of ``x`` and ``theta``, which may differ only in leading axes.

    Then row r of the broadcast is row ``r % rows(x)`` of x and ``r % rows(theta)``
    of theta, e.g. data x (B, D) against decoder outputs (K, B, D).
    """
    shape = np.broadcast_shapes(x.shape, theta.shape)
    for a in (x, theta):
        core = _without_leading_ones(a.shape)
        if a.shape[-1] != shape[-1] or shape[len(shape) - len(core):] != core:
            raise ValueError(f"{kernel}: shapes {x.shape} and {theta.shape} must match "
                             "up to leading (sample) axes")
    return shape


def _without_leading_ones(shape):
    """(1, 1, B, D) -> (B, D)."""
    ones = next((k for k, n in enumerate(shape) if n != 1), len(shape))
    return shape[ones:]


def sample_count(mu, eps, kernel):
    """K for eps of shape (K,) + mu.shape: the samples reparameterize draws per mean."""
    if eps.shape[1:] != mu.shape:
        raise ValueError(f"{kernel}: eps must have shape (K,) + {mu.shape}, got {eps.shape}")
    return eps.shape[0]


@contextmanager
def contiguous_in_place(xp, *buffers):
    """C-contiguous stand-ins for buffers a kernel updates in place, copied back if they had to be copies."""
    dense = [xp.ascontiguousarray(a) for a in buffers]
    yield dense
    for a, d in zip(buffers, dense):
        if d is not a:
            a[...] = d


def check_flat(kernel, *buffers):
    """Optimizer steps run over flat 1-D parameter buffers of one length."""
    if any(a.ndim != 1 or a.shape != buffers[0].shape for a in buffers):
        raise ValueError(f"{kernel}: expects flat 1-D buffers of one length, got shapes "
                         f"{[a.shape for a in buffers]}")


# ----- Per-element formulas, compiled per target -----

def activate(code, t):
    """act(t) for the activation with this code.

    sigmoid(t) = 1 / (1 + e^-t), written with e = e^-|t| <= 1 so nothing
    overflows: 1 / (1 + e) for t >= 0, e / (1 + e) below. (One exp is about
    5x cheaper than the reference's tanh form in compiled scalar code.)
    """
    if code == RELU:
        return max(t, 0.0)
    if code == TANH:
        return math.tanh(t)
    if code == SIGMOID:
        e = math.exp(-abs(t))
        return 1.0 / (1.0 + e) if t >= 0 else e / (1.0 + e)
    return t


def activate_grad(code, y):
    """act'(t) written with y = act(t): relu 1[y > 0], tanh 1 - y^2, sigmoid y (1 - y)."""
    if code == RELU:
        return 1.0 if y > 0 else 0.0
    if code == TANH:
        return 1.0 - y * y
    if code == SIGMOID:
        return y * (1.0 - y)
    return 1.0


def kl_term(mu, logvar):
    """One term of the KL sum: 1 + logvar - mu^2 - exp(logvar)."""
    return 1.0 + logvar - mu * mu - math.exp(logvar)


def bernoulli_term(x, logit):
    """x l - softplus(l), softplus(l) = max(l, 0) + log1p(e^-|l|) (no overflow)."""
    return x * logit - (max(logit, 0.0) + math.log1p(math.exp(-abs(logit))))


def adam_update(p, g, m, v, step_size, bias2, beta1, beta2, eps, weight_decay):
    """One element of Adam: the new (p, m, v); step_size = lr / (1 - beta1^t), bias2 = 1 - beta2^t."""
    g = g + weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    return p - step_size * m / (math.sqrt(v / bias2) + eps), m, v


def sgd_update(p, g, u, lr, momentum, weight_decay):
    """One element of SGD with momentum: the new (p, u); u is untouched when momentum is 0."""
    g = g + weight_decay * p
    if momentum != 0.0:
        u = momentum * u + g
        g = u
    return p - lr * g, u
