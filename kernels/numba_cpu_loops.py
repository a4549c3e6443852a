"""The numba CPU kernel set's compiled loops: each a ``prange`` loop compiled twice, serial and parallel.

``numba_cpu.py`` is the host side (shapes, outputs, which twin runs); here
is what runs per element. ``shared.py``'s formulas compile with their
``math`` bound to ``vecmath`` (float32 exp, log and log1p that vectorize);
row sums fill a row buffer, then ``_sum`` adds it in float64 in a fixed
order, whatever the threads. Loading this module picks numba's
``workqueue`` threading layer, whose workers sleep between loops instead of
spinning beside BLAS's.

Why each choice, with measurements: docs/performance.md. Numba's cache
checks only this file: after editing ``shared.py`` or ``vecmath.py``, delete
``kernels/__pycache__``.
"""
import math
import types

import numba
import numpy as np
from numba import njit, prange

from minivae.kernels import shared, vecmath
from minivae.kernels.reference import LOG_2PI


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


# ----- Bias plus activation -----

def bias_act_loop(x, b, code, out):
    """for i: for j: out[i, j] = act(x[i, j] + b[j])"""
    for i in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = _activate(code, x[i, j] + b[j])


def bias_act_backward_loop(g, y, code, gx, gb, chunks):
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


def column_sums_loop(g, gb, chunks):
    """for j (a chunk of columns per thread): gb[j] = sum_i g[i, j]"""
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, g.shape[1])
        acc = np.zeros(hi - lo)  # this chunk's own column sums
        for i in range(g.shape[0]):
            g_i = g[i, lo:hi]
            for q in range(hi - lo):
                acc[q] += g_i[q]
        gb[lo:hi] = acc


BIAS_ACT = _twins(bias_act_loop)
BIAS_ACT_BACKWARD = _twins(bias_act_backward_loop)
COLUMN_SUMS = _twins(column_sums_loop)


# ----- Reparameterization: z = mu + sigma * eps (Kingma & Welling, eq. 10) -----

def reparameterize_loop(mu, logvar, eps, z, chunks):
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


def reparameterize_backward_loop(g, logvar, eps, g_mu, g_logvar, chunks):
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


REPARAMETERIZE = _twins(reparameterize_loop)
REPARAMETERIZE_BACKWARD = _twins(reparameterize_backward_loop)


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B) -----

def kl_loop(mu, logvar, d, out, terms, chunks):
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


def kl_backward_loop(g, mu, g_mu, g_logvar):
    """for i: for j: g_mu[i, j] = g[i] mu[i, j]; g_logvar[i, j] = g[i] (exp(logvar[i, j]) - 1) / 2

    g_logvar comes in holding exp(logvar) - 1, by NumPy's expm1 (numba's would call the C library one
    element at a time), and is scaled in place."""
    for i in prange(mu.shape[0]):
        for j in range(mu.shape[1]):
            g_mu[i, j] = g[i] * mu[i, j]
            g_logvar[i, j] = shared.HALF * g[i] * g_logvar[i, j]


KL = _twins(kl_loop)
KL_BACKWARD = _twins(kl_backward_loop)


# ----- Log-likelihoods, summed over the last axis; x broadcasts over leading axes -----

def bernoulli_loop(x, logits, out, buffers):
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


def bernoulli_backward_loop(g, x, logits, out):
    """for i: for j: out[i, j] = g[i] (x[i', j] - sigmoid(l[i'', j]))"""
    for i in prange(out.shape[0]):
        x_i, l_i, out_i = x[i % x.shape[0]], logits[i % logits.shape[0]], out[i]
        for j in range(out.shape[1]):
            out_i[j] = g[i] * (x_i[j] - _activate(shared.SIGMOID, l_i[j]))


def gaussian_loop(x, mean, sigma, out, buffers):
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


def gaussian_backward_loop(g, x, mean, sigma, out):
    """for i: for j: out[i, j] = g[i] (x[i', j] - m[i'', j]) / sigma^2"""
    for i in prange(out.shape[0]):
        x_i, m_i, out_i = x[i % x.shape[0]], mean[i % mean.shape[0]], out[i]
        for j in range(out.shape[1]):
            out_i[j] = g[i] * (x_i[j] - m_i[j]) / (sigma * sigma)


BERNOULLI = _twins(bernoulli_loop)
BERNOULLI_BACKWARD = _twins(bernoulli_backward_loop)
GAUSSIAN = _twins(gaussian_loop)
GAUSSIAN_BACKWARD = _twins(gaussian_backward_loop)


# ----- Log-sum-exp -----

def logsumexp_loop(a, out, chunks):
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


LOGSUMEXP = _twins(logsumexp_loop)


# ----- Fused optimizer steps over one flat parameter buffer -----

def adam_loop(p, g, m, v, a_t, eps_t, beta1, beta2, weight_decay):
    """for i: p[i], m[i], v[i] = adam_update(p[i], g[i], m[i], v[i], ...)"""
    for i in prange(p.size):
        p[i], m[i], v[i] = _adam_update(p[i], g[i], m[i], v[i], a_t, eps_t,
                                        beta1, beta2, weight_decay)


def sgd_loop(p, g, velocity, lr, momentum, weight_decay):
    """for i: p[i], velocity[i] = sgd_update(p[i], g[i], velocity[i], ...)"""
    for i in prange(p.size):
        p[i], velocity[i] = _sgd_update(p[i], g[i], velocity[i], lr, momentum, weight_decay)


ADAM = _twins(adam_loop)
SGD = _twins(sgd_loop)
