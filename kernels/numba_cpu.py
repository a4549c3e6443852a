"""Numba CPU kernels: the ``reference`` contract compiled with ``@njit(cache=True)``.

Matrix products stay with NumPy (BLAS GEMM), and sampling reuses NumPy's PCG64 generator (with its
``rng_state`` and ``restore_rng``), so the numpy and numba backends train identically for a seed.
Every other kernel is one ``prange`` loop compiled twice, serial and parallel (from
``PARALLEL_MIN_SIZE`` elements), on numba's ``workqueue`` threads, which sleep between loops instead
of spinning beside BLAS's. ``shared.py``'s formulas compile with their ``math`` bound to ``vecmath``
(float32 exp, log and log1p that vectorize); row sums fill a row buffer, then ``_sum`` adds it in
float64 in a fixed order, whatever the threads. fastmath stays off, so results match the reference
up to rounding.

Why each choice, with measurements: docs/performance.md. Numba's cache
checks only this file: after editing ``shared.py`` or ``vecmath.py``, delete
``kernels/__pycache__``.
"""
import math
import types

import numba
import numpy as np
from numba import njit, prange

from minivae.kernels import reference, shared, vecmath
from minivae.kernels.reference import (LOG_2PI, make_rng, matmul, restore_rng, rng_state,  # noqa: F401 (kernels)
                                       standard_normal)

PARALLEL_MIN_SIZE = 1 << 20  # elements; see "Threads" in docs/performance.md


def _choose_threading_layer():
    """Numba's ``workqueue`` layer (no spinning workers) unless a layer was chosen or already runs."""
    try:
        numba.threading_layer()
        return  # numba's threads already started: too late to choose
    except ValueError:
        pass
    if numba.config.THREADING_LAYER == "default":  # NUMBA_THREADING_LAYER not set
        numba.config.THREADING_LAYER = "workqueue"


_choose_threading_layer()


def _on_cpu(formula):
    """A formula of ``shared.py`` compiled inline, its ``math`` global (only that name) bound to ``vecmath``."""
    bound = types.FunctionType(formula.__code__, {**formula.__globals__, "math": vecmath}, formula.__name__,
                               formula.__defaults__, formula.__closure__)
    bound.__qualname__, bound.__doc__ = formula.__qualname__, formula.__doc__
    return njit(inline="always")(bound)


_activate = _on_cpu(shared.activate)
_activate_grad = _on_cpu(shared.activate_grad)
_kl_term = _on_cpu(shared.kl_term)
_bernoulli_term = _on_cpu(shared.bernoulli_term)
_adam_update = _on_cpu(shared.adam_update)
_sgd_update = _on_cpu(shared.sgd_update)


def _twins(loop):
    """(serial, parallel) compilations of one ``prange`` loop; the twin is renamed for numba's cache (keyed by name)."""
    twin = types.FunctionType(loop.__code__, loop.__globals__, loop.__name__ + "_parallel")
    twin.__qualname__ = loop.__qualname__ + "_parallel"
    return (njit(cache=True, error_model="numpy")(loop),
            njit(cache=True, error_model="numpy", parallel=True)(twin))


def _pick(twins, size):
    """(loop, chunks): serial with one chunk for small work, else parallel with one chunk per thread."""
    if size < PARALLEL_MIN_SIZE:
        return twins[0], 1
    return twins[1], numba.get_num_threads()


@njit(inline="always")
def _chunk(c, chunks, n):
    """[lo, hi) of chunk c of 0..n cut in ``chunks``; loops index ``a[lo:hi]`` from 0, so they vectorize."""
    return c * n // chunks, (c + 1) * n // chunks


@njit(inline="always")
def _sum(t):
    """sum(t) in float64 by 8 add chains (s_q sums t[q], t[q + 8], ...) run side by side, in a fixed order."""
    n = t.size
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for j in range(0, n - n % 8, 8):
        s0 += t[j]
        s1 += t[j + 1]
        s2 += t[j + 2]
        s3 += t[j + 3]
        s4 += t[j + 4]
        s5 += t[j + 5]
        s6 += t[j + 6]
        s7 += t[j + 7]
    for j in range(n - n % 8, n):
        s0 += t[j]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


def _row_buffers(chunks, *arrays):
    """One row buffer per chunk, in the terms' own dtype (float32 stores keep the loop 8 lanes wide)."""
    return np.empty((chunks, arrays[0].shape[-1]), np.result_type(*arrays))


# ----- Bias plus activation -----

def _bias_act_loop(x, b, code, out):
    """for i: for j: out[i, j] = act(x[i, j] + b[j])"""
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = _activate(code, x[i, j] + b[j])


def _bias_act_backward_loop(g, y, code, gx, gb, chunks):
    """for j (a chunk of columns per thread): for i:
        gx[i, j] = g[i, j] act'(y[i, j]);  gb[j] = sum_i gx[i, j]
    """
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, g.shape[1])
        acc = np.zeros(hi - lo)  # this chunk's own column sums
        for i in range(g.shape[0]):
            g_i, y_i, gx_i = g[i, lo:hi], y[i, lo:hi], gx[i, lo:hi]
            for q in range(hi - lo):
                d = g_i[q] * _activate_grad(code, y_i[q])
                gx_i[q] = d
                acc[q] += d
        gb[lo:hi] = acc


def _column_sums_loop(g, gb, chunks):
    """for j (a chunk of columns per thread): gb[j] = sum_i g[i, j]"""
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, g.shape[1])
        acc = np.zeros(hi - lo)  # this chunk's own column sums
        for i in range(g.shape[0]):
            g_i = g[i, lo:hi]
            for q in range(hi - lo):
                acc[q] += g_i[q]
        gb[lo:hi] = acc


_BIAS_ACT = _twins(_bias_act_loop)
_BIAS_ACT_BACKWARD = _twins(_bias_act_backward_loop)
_COLUMN_SUMS = _twins(_column_sums_loop)


def bias_act(x, b, act):
    """y[i, j] = act(x[i, j] + b[j]); x may have extra leading axes."""
    code = shared.act_code(act, "bias_act")
    x2 = shared.rows(np, x)
    out = np.empty_like(x2)
    loop, _ = _pick(_BIAS_ACT, x2.size)
    loop(x2, np.ascontiguousarray(b), code, out)
    return out.reshape(x.shape)


def bias_act_backward(g, y, act):
    """(dL/dx, dL/db) for y = act(x + b): dL/dx = g act'(x + b), dL/db = sum_i dL/dx[i].

    For the identity dL/dx is g itself, as in the reference: only the sums are computed."""
    code = shared.act_code(act, "bias_act_backward")
    g2, y2 = shared.rows(np, g), shared.rows(np, y)
    gb = np.empty(g2.shape[1], g.dtype)
    if code == shared.IDENTITY:
        loop, chunks = _pick(_COLUMN_SUMS, g2.size)
        loop(g2, gb, chunks)
        return g, gb
    gx = np.empty_like(g2)
    loop, chunks = _pick(_BIAS_ACT_BACKWARD, g2.size)
    loop(g2, y2, code, gx, gb, chunks)
    return gx.reshape(g.shape), gb


# ----- Reparameterization: z = mu + sigma * eps (Kingma & Welling, eq. 10) -----

def _reparameterize_loop(mu, logvar, eps, z, chunks):
    """for p (a chunk per thread): sigma[p] = exp(logvar[p] / 2); for k: z[k, p] = mu[p] + sigma[p] eps[k, p]"""
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, mu.size)
        mu_c, logvar_c = mu[lo:hi], logvar[lo:hi]
        sigma = np.empty(hi - lo, logvar.dtype)  # one exp per mean, not per sample
        for q in range(hi - lo):
            sigma[q] = vecmath.exp(shared.HALF * logvar_c[q])
        for k in range(eps.shape[0]):
            eps_k, z_k = eps[k, lo:hi], z[k, lo:hi]
            for q in range(hi - lo):
                z_k[q] = mu_c[q] + sigma[q] * eps_k[q]


def _reparameterize_backward_loop(g, logvar, eps, g_mu, g_logvar, chunks):
    """for p (a chunk per thread):
        g_mu[p] = sum_k g[k, p];  g_logvar[p] = exp(logvar[p] / 2) / 2 sum_k g[k, p] eps[k, p]
    """
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, g.shape[1])
        sum_g = np.zeros(hi - lo)  # this chunk's own sums over k
        sum_ge = np.zeros(hi - lo)
        for k in range(g.shape[0]):
            g_k, eps_k = g[k, lo:hi], eps[k, lo:hi]
            for q in range(hi - lo):
                sum_g[q] += g_k[q]
                sum_ge[q] += g_k[q] * eps_k[q]
        logvar_c, g_mu_c, g_logvar_c = logvar[lo:hi], g_mu[lo:hi], g_logvar[lo:hi]
        for q in range(hi - lo):
            g_mu_c[q] = sum_g[q]
            g_logvar_c[q] = shared.HALF * vecmath.exp(shared.HALF * logvar_c[q]) * sum_ge[q]


_REPARAMETERIZE = _twins(_reparameterize_loop)
_REPARAMETERIZE_BACKWARD = _twins(_reparameterize_backward_loop)


def reparameterize(mu, logvar, eps):
    """z[k] = mu + exp(logvar / 2) * eps[k], for eps of shape (K,) + mu.shape."""
    samples = shared.sample_count(mu, eps, "reparameterize")
    z = np.empty(eps.shape, mu.dtype)
    loop, chunks = _pick(_REPARAMETERIZE, z.size)
    loop(np.ascontiguousarray(mu).ravel(), np.ascontiguousarray(logvar).ravel(),
         np.ascontiguousarray(eps).reshape(samples, -1), z.reshape(samples, -1), chunks)
    return z


def reparameterize_backward(g, logvar, eps):
    """(dL/dmu, dL/dlogvar) = (sum_k g[k], exp(logvar / 2) / 2 * sum_k g[k] eps[k])."""
    samples = shared.sample_count(logvar, eps, "reparameterize_backward")
    g_mu = np.empty(logvar.shape, g.dtype)
    g_logvar = np.empty(logvar.shape, g.dtype)
    loop, chunks = _pick(_REPARAMETERIZE_BACKWARD, g.size)
    loop(np.ascontiguousarray(g).reshape(samples, -1), np.ascontiguousarray(logvar).ravel(),
         np.ascontiguousarray(eps).reshape(samples, -1), g_mu.reshape(-1), g_logvar.reshape(-1), chunks)
    return g_mu, g_logvar


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B) -----

def _kl_loop(mu, logvar, d, out, terms, chunks):
    """for i (a chunk of rows per thread): out[i] = -1/2 sum_j (1 + logvar[i, j] - mu[i, j]^2 - exp(logvar[i, j]))

    Rows (d values each, stored flat) are short, the latent size: one flat loop fills
    ``terms`` for all the chunk's rows, then each row is summed."""
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, out.size)
        mu_c, logvar_c, terms_c = mu[lo * d:hi * d], logvar[lo * d:hi * d], terms[lo * d:hi * d]
        for q in range((hi - lo) * d):
            terms_c[q] = _kl_term(mu_c[q], logvar_c[q])
        for i in range(hi - lo):
            out[lo + i] = -0.5 * _sum(terms_c[i * d:(i + 1) * d])


def _kl_backward_loop(g, mu, logvar, g_mu, g_logvar):
    """for i: for j: g_mu[i, j] = g[i] mu[i, j]; g_logvar[i, j] = g[i] (exp(logvar[i, j]) - 1) / 2"""
    for i in prange(mu.shape[0]):
        for j in range(mu.shape[1]):
            g_mu[i, j] = g[i] * mu[i, j]
            g_logvar[i, j] = 0.5 * g[i] * math.expm1(logvar[i, j])


_KL = _twins(_kl_loop)
_KL_BACKWARD = _twins(_kl_backward_loop)


def kl_normal(mu, logvar):
    """kl[i] = -1/2 sum_j (1 + logvar - mu^2 - exp(logvar)), summed over the last axis."""
    mu2, logvar2 = shared.rows(np, mu), shared.rows(np, logvar)
    out = np.empty(mu2.shape[0], mu.dtype)
    loop, chunks = _pick(_KL, mu2.size)
    loop(mu2.reshape(-1), logvar2.reshape(-1), mu2.shape[1], out, np.empty(mu2.size, np.result_type(mu2, logvar2)),
         chunks)
    return out.reshape(mu.shape[:-1])


def kl_normal_backward(g, mu, logvar):
    """(dL/dmu, dL/dlogvar) = (g mu, g (exp(logvar) - 1) / 2), g one value per row."""
    mu2, logvar2 = shared.rows(np, mu), shared.rows(np, logvar)
    g_mu, g_logvar = np.empty_like(mu2), np.empty_like(mu2)
    loop, _ = _pick(_KL_BACKWARD, mu2.size)
    loop(np.ascontiguousarray(g).ravel(), mu2, logvar2, g_mu, g_logvar)
    return g_mu.reshape(mu.shape), g_logvar.reshape(mu.shape)


# ----- Log-likelihoods, summed over the last axis; x broadcasts over leading axes -----

def _bernoulli_loop(x, logits, out, buffers):
    """for i (a chunk of rows per thread): out[i] = sum_j x[i', j] l[i'', j] - softplus(l[i'', j])

    i' = i mod rows(x), i'' likewise; the terms of row i go to the chunk's row of ``buffers``, then ``_sum``."""
    chunks = buffers.shape[0]
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, out.shape[0])
        terms = buffers[c]
        for i in range(lo, hi):
            x_i, l_i = x[i % x.shape[0]], logits[i % logits.shape[0]]
            for j in range(x.shape[1]):
                terms[j] = _bernoulli_term(x_i[j], l_i[j])
            out[i] = _sum(terms)


def _bernoulli_backward_loop(g, x, logits, out):
    """for i: for j: out[i, j] = g[i] (x[i', j] - sigmoid(l[i'', j]))"""
    for i in prange(out.shape[0]):
        x_i, l_i, out_i = x[i % x.shape[0]], logits[i % logits.shape[0]], out[i]
        for j in range(out.shape[1]):
            out_i[j] = g[i] * (x_i[j] - _activate(shared.SIGMOID, l_i[j]))


def _gaussian_loop(x, mean, sigma, out, buffers):
    """for i (a chunk of rows per thread):
        out[i] = -sum_j (x[i', j] - m[i'', j])^2 / (2 sigma^2) - D (log sigma + log(2 pi) / 2)

    The squares of row i go to the chunk's row of ``buffers``, then ``_sum``."""
    chunks = buffers.shape[0]
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, out.shape[0])
        terms = buffers[c]
        for i in range(lo, hi):
            x_i, m_i = x[i % x.shape[0]], mean[i % mean.shape[0]]
            for j in range(x.shape[1]):
                terms[j] = (x_i[j] - m_i[j]) ** 2
            out[i] = -0.5 * _sum(terms) / (sigma * sigma) - x.shape[1] * (math.log(sigma) + 0.5 * LOG_2PI)


def _gaussian_backward_loop(g, x, mean, sigma, out):
    """for i: for j: out[i, j] = g[i] (x[i', j] - m[i'', j]) / sigma^2"""
    for i in prange(out.shape[0]):
        x_i, m_i, out_i = x[i % x.shape[0]], mean[i % mean.shape[0]], out[i]
        for j in range(out.shape[1]):
            out_i[j] = g[i] * (x_i[j] - m_i[j]) / (sigma * sigma)


_BERNOULLI = _twins(_bernoulli_loop)
_BERNOULLI_BACKWARD = _twins(_bernoulli_backward_loop)
_GAUSSIAN = _twins(_gaussian_loop)
_GAUSSIAN_BACKWARD = _twins(_gaussian_backward_loop)


def _log_prob(twins, x, theta, *args, name):
    """Run a row-sum log-likelihood loop; returns one value per row of the broadcast shape."""
    shape = shared.broadcast_rows(x, theta, name)
    out = np.empty(shape[:-1], theta.dtype)
    loop, chunks = _pick(twins, math.prod(shape))
    loop(shared.rows(np, x), shared.rows(np, theta), *args, out.reshape(-1), _row_buffers(chunks, x, theta))
    return out


def _log_prob_backward(twins, g, x, theta, *args, name):
    """Run a log-likelihood gradient loop; returns dlp/dtheta of the broadcast shape."""
    shape = shared.broadcast_rows(x, theta, name)
    out = np.empty(shape, theta.dtype)
    loop, _ = _pick(twins, out.size)
    loop(np.ascontiguousarray(g).ravel(), shared.rows(np, x), shared.rows(np, theta), *args,
         out.reshape(-1, shape[-1]))
    return out


def bernoulli_log_prob(x, logits):
    """lp = sum_j x_j l_j - softplus(l_j): log Bernoulli(x | sigmoid(l))."""
    return _log_prob(_BERNOULLI, x, logits, name="bernoulli_log_prob")


def bernoulli_log_prob_backward(g, x, logits):
    """dlp/dl_j = x_j - sigmoid(l_j), scaled by g."""
    return _log_prob_backward(_BERNOULLI_BACKWARD, g, x, logits, name="bernoulli_log_prob_backward")


def gaussian_log_prob(x, mean, sigma):
    """lp = sum_j -(x_j - m_j)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
    return _log_prob(_GAUSSIAN, x, mean, float(sigma), name="gaussian_log_prob")


def gaussian_log_prob_backward(g, x, mean, sigma):
    """dlp/dm_j = (x_j - m_j) / sigma^2, scaled by g."""
    return _log_prob_backward(_GAUSSIAN_BACKWARD, g, x, mean, float(sigma),
                              name="gaussian_log_prob_backward")


# ----- Log-sum-exp -----

def _logsumexp_loop(a, out, chunks):
    """for p (a chunk per thread):
        m = max_k a[k, p] (0 if not finite);  out[p] = m + log sum_k exp(a[k, p] - m)

    The exps of row k go to a buffer in a's dtype before joining the float64 sums (so they vectorize)."""
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, a.shape[1])
        top = np.full(hi - lo, -np.inf, a.dtype)  # this chunk's own maxima,
        total = np.zeros(hi - lo)  # sums
        terms = np.empty(hi - lo, a.dtype)  # and row of exps
        for k in range(a.shape[0]):
            a_k = a[k, lo:hi]
            for q in range(hi - lo):
                top[q] = max(top[q], a_k[q])
        for q in range(hi - lo):
            if not np.isfinite(top[q]):
                top[q] = 0.0
        for k in range(a.shape[0]):
            a_k = a[k, lo:hi]
            for q in range(hi - lo):
                terms[q] = vecmath.exp(a_k[q] - top[q])
            for q in range(hi - lo):
                total[q] += terms[q]
        out_c = out[lo:hi]
        for q in range(hi - lo):
            out_c[q] = top[q] + math.log(total[q])  # log 0 = -inf: every term was -inf


_LOGSUMEXP = _twins(_logsumexp_loop)


def logsumexp(a, axis=0):
    """log sum_k exp(a_k) along ``axis``, shifted by the max for stability."""
    front = np.ascontiguousarray(np.moveaxis(a, axis, 0))
    out = np.empty(front.shape[1:], a.dtype)
    loop, chunks = _pick(_LOGSUMEXP, a.size)
    loop(front.reshape(front.shape[0], -1), out.reshape(-1), chunks)
    return out


# ----- Fused optimizer steps over one flat parameter buffer -----

def _adam_loop(p, g, m, v, a_t, eps_t, beta1, beta2, weight_decay):
    """for i: p[i], m[i], v[i] = adam_update(p[i], g[i], m[i], v[i], ...)"""
    for i in prange(p.size):
        p[i], m[i], v[i] = _adam_update(p[i], g[i], m[i], v[i], a_t, eps_t,
                                        beta1, beta2, weight_decay)


def _sgd_loop(p, g, velocity, lr, momentum, weight_decay):
    """for i: p[i], velocity[i] = sgd_update(p[i], g[i], velocity[i], ...)"""
    for i in prange(p.size):
        p[i], velocity[i] = _sgd_update(p[i], g[i], velocity[i], lr, momentum, weight_decay)


_ADAM = _twins(_adam_loop)
_SGD = _twins(_sgd_loop)


def adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba, Algorithm 1, PyTorch's form) in place over flat buffers; step, lr: numbers or 0-d arrays."""
    shared.check_flat("adam_step", p, g, m, v)
    loop, _ = _pick(_ADAM, p.size)
    a_t, eps_t = reference.adam_step_sizes(step, lr, beta1, beta2, eps)
    loop(p, np.ascontiguousarray(g), m, v, *shared.scalars_like(p, a_t, eps_t, beta1, beta2, weight_decay))


def sgd_step(p, g, velocity, lr, momentum=0.0, weight_decay=0.0):
    """SGD with momentum (PyTorch's form), in place over flat buffers: u = mu u + g'; p -= lr u."""
    shared.check_flat("sgd_step", p, g, velocity)
    loop, _ = _pick(_SGD, p.size)
    loop(p, np.ascontiguousarray(g), velocity, *shared.scalars_like(p, lr, momentum, weight_decay))
