"""Numba CPU kernels: the ``reference`` contract, its loops compiled by numba (``numba_cpu_loops.py``).

Matrix products stay with NumPy (BLAS GEMM), and sampling reuses NumPy's PCG64 generator (with its
``rng_state`` and ``restore_rng``), so the numpy and numba backends train identically for a seed.
Every other kernel runs one compiled loop, the serial twin or, from ``PARALLEL_MIN_SIZE`` elements,
the parallel one. This module is the host side: shapes, outputs, which twin runs.

Every kernel that returns arrays also writes them into arrays it is given, ``out=`` (one array, or
a tuple in the order of the results), C-contiguous and of the results' shapes and dtypes: the
recorded training step (``minivae/app/recording.py``) replays each kernel into the buffers of its
first call. Results do not depend on ``out``.
"""
import math

import numba
import numpy as np

from minivae.kernels import reference, shared
from minivae.kernels.numba_cpu_loops import (ADAM, BERNOULLI, BERNOULLI_BACKWARD, BIAS_ACT, BIAS_ACT_BACKWARD,
                                             COLUMN_SUMS, GAUSSIAN, GAUSSIAN_BACKWARD, KL, KL_BACKWARD, LOGSUMEXP,
                                             REPARAMETERIZE, REPARAMETERIZE_BACKWARD, SGD)
from minivae.kernels.reference import make_rng, restore_rng, rng_state  # noqa: F401 (kernels)

PARALLEL_MIN_SIZE = 1 << 20  # elements; see "Threads" in docs/performance.md


def _pick(twins, size):
    """(loop, chunks): serial with one chunk for small work, else parallel with one chunk per thread."""
    if size < PARALLEL_MIN_SIZE:
        return twins[0], 1
    return twins[1], numba.get_num_threads()


def _row_buffers(chunks, *arrays):
    """One row buffer per chunk, in the terms' own dtype (float32 stores keep the loop 8 lanes wide)."""
    return np.empty((chunks, arrays[0].shape[-1]), np.result_type(*arrays))


def _output(out, shape, dtype, name):
    """``out``, checked to fit (C-contiguous, the result's shape and dtype), or a new array when it is None."""
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"{name}: out must be a C-contiguous {np.dtype(dtype).name} array of shape "
                         f"{tuple(shape)}, got {out.dtype.name} {out.shape}")
    return out


def _outputs(out, shapes, dtype, name):
    """``_output`` for each result of a kernel returning several: new arrays when ``out`` is None, else the
    arrays of ``out``, one per result, each checked."""
    if out is None:
        return tuple(np.empty(shape, dtype) for shape in shapes)
    if len(out) != len(shapes):
        raise ValueError(f"{name}: out must hold {len(shapes)} arrays, one per result, got {len(out)}")
    return tuple(_output(array, shape, dtype, name) for array, shape in zip(out, shapes))


# ----- Matrix product and sampling (NumPy's) -----

def matmul(a, b, trans_a=False, trans_b=False, out=None):
    """out[i, j] = sum_k op(a)[i, k] * op(b)[k, j], op = transpose when asked (BLAS GEMM)."""
    a, b = (a.T if trans_a else a), (b.T if trans_b else b)
    return np.matmul(a, b, out=_output(out, (a.shape[0], b.shape[1]), np.result_type(a, b), "matmul"))


def standard_normal(rng, shape, dtype=np.float32, out=None):
    """eps ~ N(0, I) of the given shape, drawn from (and advancing) ``rng``, NumPy's generator."""
    return rng.standard_normal(shape, dtype=dtype, out=_output(out, shape, dtype, "standard_normal"))


# ----- Bias plus activation -----

def bias_act(x, b, act, out=None):
    """y[i, j] = act(x[i, j] + b[j]); x may have extra leading axes."""
    code = shared.act_code(act, "bias_act")
    x2 = shared.rows(np, x)
    y = _output(out, x.shape, x.dtype, "bias_act")
    loop, _ = _pick(BIAS_ACT, x2.size)
    loop(x2, np.ascontiguousarray(b), code, y.reshape(x2.shape))
    return y


def bias_act_backward(g, y, act, out=None):
    """(dL/dx, dL/db) for y = act(x + b): dL/dx = g act'(x + b), dL/db = sum_i dL/dx[i].

    For the identity dL/dx is g itself, as in the reference: only the sums are computed (into ``out[1]``)."""
    code = shared.act_code(act, "bias_act_backward")
    g2, y2 = shared.rows(np, g), shared.rows(np, y)
    gx_out, gb_out = (None, None) if out is None else out
    gb = _output(gb_out, g2.shape[1:], g.dtype, "bias_act_backward")
    if code == shared.IDENTITY:
        loop, chunks = _pick(COLUMN_SUMS, g2.size)
        loop(g2, gb, chunks)
        return g, gb
    gx = _output(gx_out, g.shape, g.dtype, "bias_act_backward")
    loop, chunks = _pick(BIAS_ACT_BACKWARD, g2.size)
    loop(g2, y2, code, gx.reshape(g2.shape), gb, chunks)
    return gx, gb


# ----- Reparameterization: z = mu + sigma * eps (Kingma & Welling, eq. 10) -----

def reparameterize(mu, logvar, eps, out=None):
    """z[k] = mu + exp(logvar / 2) * eps[k], for eps of shape (K,) + mu.shape."""
    samples = shared.sample_count(mu, eps, "reparameterize")
    z = _output(out, eps.shape, mu.dtype, "reparameterize")
    loop, chunks = _pick(REPARAMETERIZE, z.size)
    loop(np.ascontiguousarray(mu).ravel(), np.ascontiguousarray(logvar).ravel(),
         np.ascontiguousarray(eps).reshape(samples, -1), z.reshape(samples, -1), chunks)
    return z


def reparameterize_backward(g, logvar, eps, out=None):
    """(dL/dmu, dL/dlogvar) = (sum_k g[k], exp(logvar / 2) / 2 * sum_k g[k] eps[k])."""
    samples = shared.sample_count(logvar, eps, "reparameterize_backward")
    g_mu, g_logvar = _outputs(out, (logvar.shape, logvar.shape), g.dtype, "reparameterize_backward")
    loop, chunks = _pick(REPARAMETERIZE_BACKWARD, g.size)
    loop(np.ascontiguousarray(g).reshape(samples, -1), np.ascontiguousarray(logvar).ravel(),
         np.ascontiguousarray(eps).reshape(samples, -1), g_mu.reshape(-1), g_logvar.reshape(-1), chunks)
    return g_mu, g_logvar


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B) -----

def kl_normal(mu, logvar, out=None):
    """kl[i] = -1/2 sum_j (1 + logvar - mu^2 - exp(logvar)), summed over the last axis."""
    mu2, logvar2 = shared.rows(np, mu), shared.rows(np, logvar)
    kl = _output(out, mu.shape[:-1], mu.dtype, "kl_normal")
    loop, chunks = _pick(KL, mu2.size)
    loop(mu2.reshape(-1), logvar2.reshape(-1), mu2.shape[1], kl.reshape(-1),
         np.empty(mu2.size, np.result_type(mu2, logvar2)), chunks)
    return kl


def kl_normal_backward(g, mu, logvar, out=None):
    """(dL/dmu, dL/dlogvar) = (g mu, g (exp(logvar) - 1) / 2), g one value per row."""
    mu2, logvar2 = shared.rows(np, mu), shared.rows(np, logvar)
    g_mu, g_logvar = _outputs(out, (mu.shape, mu.shape), mu.dtype, "kl_normal_backward")
    loop, _ = _pick(KL_BACKWARD, mu2.size)
    expm1_logvar = np.expm1(logvar2, out=g_logvar.reshape(mu2.shape))  # the loop scales it in place
    loop(np.ascontiguousarray(g).ravel(), mu2, g_mu.reshape(mu2.shape), expm1_logvar)
    return g_mu, g_logvar


# ----- Log-likelihoods, summed over the last axis; x broadcasts over leading axes -----

def _log_prob(twins, x, theta, *args, out, name):
    """Run a row-sum log-likelihood loop; returns one value per row of the broadcast shape."""
    shape = shared.broadcast_rows(x, theta, name)
    lp = _output(out, shape[:-1], theta.dtype, name)
    loop, chunks = _pick(twins, math.prod(shape))
    loop(shared.rows(np, x), shared.rows(np, theta), *args, lp.reshape(-1), _row_buffers(chunks, x, theta))
    return lp


def _log_prob_backward(twins, g, x, theta, *args, out, name):
    """Run a log-likelihood gradient loop; returns dlp/dtheta of the broadcast shape."""
    shape = shared.broadcast_rows(x, theta, name)
    grad = _output(out, shape, theta.dtype, name)
    loop, _ = _pick(twins, grad.size)
    loop(np.ascontiguousarray(g).ravel(), shared.rows(np, x), shared.rows(np, theta), *args,
         grad.reshape(-1, shape[-1]))
    return grad


def bernoulli_log_prob(x, logits, out=None):
    """lp = sum_j x_j l_j - softplus(l_j): log Bernoulli(x | sigmoid(l))."""
    return _log_prob(BERNOULLI, x, logits, out=out, name="bernoulli_log_prob")


def bernoulli_log_prob_backward(g, x, logits, out=None):
    """dlp/dl_j = x_j - sigmoid(l_j), scaled by g."""
    return _log_prob_backward(BERNOULLI_BACKWARD, g, x, logits, out=out, name="bernoulli_log_prob_backward")


def gaussian_log_prob(x, mean, sigma, out=None):
    """lp = sum_j -(x_j - m_j)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
    return _log_prob(GAUSSIAN, x, mean, float(sigma), out=out, name="gaussian_log_prob")


def gaussian_log_prob_backward(g, x, mean, sigma, out=None):
    """dlp/dm_j = (x_j - m_j) / sigma^2, scaled by g."""
    return _log_prob_backward(GAUSSIAN_BACKWARD, g, x, mean, float(sigma), out=out,
                              name="gaussian_log_prob_backward")


# ----- Log-sum-exp -----

def logsumexp(a, axis=0, out=None):
    """log sum_k exp(a_k) along ``axis``, shifted by the max for stability."""
    front = np.ascontiguousarray(np.moveaxis(a, axis, 0))
    result = _output(out, front.shape[1:], a.dtype, "logsumexp")
    loop, chunks = _pick(LOGSUMEXP, a.size)
    loop(front.reshape(front.shape[0], -1), result.reshape(-1), chunks)
    return result


# ----- Fused optimizer steps over one flat parameter buffer (in place) -----

def adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba, Algorithm 1, PyTorch's form) in place over flat buffers; step, lr: numbers or 0-d arrays."""
    shared.check_flat("adam_step", p, g, m, v)
    loop, _ = _pick(ADAM, p.size)
    a_t, eps_t = reference.adam_step_sizes(step, lr, beta1, beta2, eps)
    loop(p, np.ascontiguousarray(g), m, v, *shared.scalars_like(p, a_t, eps_t, beta1, beta2, weight_decay))


def sgd_step(p, g, velocity, lr, momentum=0.0, weight_decay=0.0):
    """SGD with momentum (PyTorch's form), in place over flat buffers: u = mu u + g'; p -= lr u."""
    shared.check_flat("sgd_step", p, g, velocity)
    loop, _ = _pick(SGD, p.size)
    loop(p, np.ascontiguousarray(g), velocity, *shared.scalars_like(p, lr, momentum, weight_decay))
