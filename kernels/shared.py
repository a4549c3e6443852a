"""What the compiled kernel sets share: per-element formulas and host-side shape rules.

The formulas are plain Python, written once and compiled per target
(MiniTorch's pattern): ``numba_cpu`` wraps them with ``njit(inline="always")``,
``numba_cuda`` with ``cuda.jit(device=True)``. Each calls only ``math``, never
another formula here, so it compiles on its own. The CUDA C twins for CuPy are
in ``pointwise.cu``.

Numba's on-disk cache (``cache=True``) checks only the file of each kernel:
after editing a formula here, delete ``kernels/__pycache__`` so the CPU and
the CUDA kernels recompile.
"""
import math
import numbers
import os
from contextlib import contextmanager

import numpy as np

from minivae.kernels.reference import ACTIVATIONS, adam_step_sizes

IDENTITY, RELU, TANH, SIGMOID = range(len(ACTIVATIONS))


# ----- Host side: names and shapes -----

def act_code(act, name):
    """The integer code of activation ``act`` (its index in ``ACTIVATIONS``); ``name``: the kernel asking."""
    if act not in ACTIVATIONS:
        raise ValueError(f"{name}: unknown activation {act!r}; use one of {ACTIVATIONS}")
    return ACTIVATIONS.index(act)


def rows(xp, a):
    """``a`` as a C-contiguous (rows, last axis) matrix; copies only when it must."""
    return xp.ascontiguousarray(a).reshape(-1, a.shape[-1])


def broadcast_rows(x, theta, name):
    """The broadcast shape of ``x`` and ``theta``, which may differ only in leading axes.

    Then row r of the broadcast is row ``r % rows(x)`` of x and ``r % rows(theta)``
    of theta, e.g. data x (B, D) against decoder outputs (K, B, D).
    """
    shape = np.broadcast_shapes(x.shape, theta.shape)
    for a in (x, theta):
        core = _without_leading_ones(a.shape)
        if a.shape[-1] != shape[-1] or shape[len(shape) - len(core):] != core:
            raise ValueError(f"{name}: shapes {x.shape} and {theta.shape} must match "
                             "up to leading (sample) axes")
    return shape


def _without_leading_ones(shape):
    """(1, 1, B, D) -> (B, D)."""
    ones = next((k for k, n in enumerate(shape) if n != 1), len(shape))
    return shape[ones:]


def sample_count(mu, eps, name):
    """K for eps of shape (K,) + mu.shape: the samples reparameterize draws per mean."""
    if eps.shape[1:] != mu.shape:
        raise ValueError(f"{name}: eps must have shape (K,) + {mu.shape}, got {eps.shape}")
    return eps.shape[0]


@contextmanager
def contiguous_in_place(xp, *buffers):
    """C-contiguous stand-ins for buffers a kernel updates in place, copied back if they had to be copies."""
    dense = [xp.ascontiguousarray(a) for a in buffers]
    yield dense
    for a, d in zip(buffers, dense):
        if d is not a:
            a[...] = d


def scalars_like(array, *numbers):
    """``numbers`` as scalars of ``array``'s dtype: a Python float would make compiled float32 arithmetic float64."""
    return tuple(array.dtype.type(n) for n in numbers)


def adam_step_sizes_array(xp, dtype, step, lr, beta1, beta2, eps):
    """[a_t, eps_t] (``reference.adam_step_sizes``) as an array of ``xp`` in ``dtype``, for a kernel to read.

    With step or lr a 0-d array of ``xp`` the sizes are computed where it lives, on
    the device, without the host reading it (eps_t needs only step, so it may still be
    a number: each size is made an array of ``xp`` before they are stacked); numbers
    alone are copied in, at each call.
    """
    a_t, eps_t = adam_step_sizes(step, lr, beta1, beta2, eps)
    if isinstance(a_t, numbers.Real):
        return xp.asarray(np.array([a_t, eps_t], dtype))
    return xp.stack([xp.asarray(a_t, dtype), xp.asarray(eps_t, dtype)])


def check_flat(name, *buffers):
    """Optimizer steps run over flat 1-D parameter buffers of one length."""
    if any(a.ndim != 1 or a.shape != buffers[0].shape for a in buffers):
        raise ValueError(f"{name}: expects flat 1-D buffers of one length, got shapes "
                         f"{[a.shape for a in buffers]}")


# ----- Per-element formulas, compiled per target -----

def _constants():
    """0, 1/2 and 1 as float32 when compiled (a float64 literal would turn float32 kernels float64), Python floats
    under the CUDA simulator, which runs the formulas as Python (see docs/performance.md)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return 0.0, 0.5, 1.0
    return np.float32(0), np.float32(0.5), np.float32(1)


ZERO, HALF, ONE = _constants()


def activate(code, t):
    """act(t) for the activation with this code; sigmoid as ``reference.sigmoid``, one element at a time."""
    if code == RELU:
        return max(t, ZERO)
    if code == TANH:
        return math.tanh(t)
    if code == SIGMOID:
        e = math.exp(-abs(t))
        return ONE / (ONE + e) if t >= ZERO else e / (ONE + e)
    return t


def activate_grad(code, y):
    """act'(t) written with y = act(t): relu 1[y > 0], tanh 1 - y^2, sigmoid y (1 - y)."""
    if code == RELU:
        return ONE if y > ZERO else ZERO
    if code == TANH:
        return ONE - y * y
    if code == SIGMOID:
        return y * (ONE - y)
    return ONE


def kl_term(mu, logvar):
    """One term of the KL sum: 1 + logvar - mu^2 - exp(logvar)."""
    return ONE + logvar - mu * mu - math.exp(logvar)


def bernoulli_term(x, logit):
    """x l - softplus(l), softplus(l) = max(l, 0) + log1p(e^-|l|) as in ``reference.softplus`` (no overflow)."""
    e = math.exp(-abs(logit))
    return x * logit - (max(logit, ZERO) + math.log1p(e))


def adam_update(p, g, m, v, a_t, eps_t, beta1, beta2, weight_decay):
    """One element of Adam: the new (p, m, v); a_t and eps_t from ``reference.adam_step_sizes``.

    The numbers come in the buffers' dtype (``scalars_like``), so float32 stays float32.
    """
    g = g + weight_decay * p
    m = beta1 * m + (ONE - beta1) * g
    v = beta2 * v + (ONE - beta2) * g * g
    return p - a_t * m / (math.sqrt(v) + eps_t), m, v


def sgd_update(p, g, u, lr, momentum, weight_decay):
    """One element of SGD with momentum: the new (p, u); u is untouched when momentum is 0.

    The numbers come in the buffers' dtype (``scalars_like``), so float32 stays float32.
    """
    g = g + weight_decay * p
    if momentum != 0.0:
        u = momentum * u + g
        g = u
    return p - lr * g, u
