"""Numba CUDA kernels: the ``reference`` contract as hand-written ``numba.cuda`` kernels.

Each kernel's docstring gives its loop nest and launch configuration. The
host wrappers take the backend's arrays, NumPy under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) and CuPy on a GPU (handed to the kernels
zero-copy through ``__cuda_array_interface__``), and return arrays of the same
kind. Per-element formulas come from ``shared``, compiled here as device
functions. Row and column sums accumulate in float64. Three kernel families
have files of their own: the register-tiled matrix product
(``numba_cuda_matmul``), the one-block-per-row sums (``numba_cuda_rowsum``)
and the Philox4x32-10 generator (``numba_cuda_random``). Kernels are compiled
with ``cache=True``: on a GPU, numba-cuda keeps each compiled kernel in
``__pycache__`` beside its file, so a new process loads it instead of
compiling (the simulator ignores the flag; see ``shared`` for what the cache
cannot see).

Importing this module imports ``numba.cuda``; ``minivae.backend`` imports it
only when the numba-cuda backend is asked for.
"""
import math

import numpy as np
from numba import config, cuda, float64

from minivae.kernels import numba_cuda_matmul, philox, shared
from minivae.kernels.numba_cuda_matmul import MATMUL
from minivae.kernels.numba_cuda_random import advance_kernel, normals_kernel
from minivae.kernels.numba_cuda_rowsum import ROW_THREADS, bernoulli_row_sums, gaussian_row_sums, kl_row_sums

THREADS = 128  # threads per block of the 1-D launches
WARP = 32  # columns per block of the bias gradient: one warp reads 32 neighbouring columns of a row
BIAS_ROWS = 4  # threads down the rows in a block of the bias gradient
BIAS_ROW_BLOCKS = 16  # at most this many blocks down the rows: 8 rows each at batch 128, more rows strided

_activate = cuda.jit(device=True)(shared.activate)
_activate_grad = cuda.jit(device=True)(shared.activate_grad)
_adam_update = cuda.jit(device=True)(shared.adam_update)
_sgd_update = cuda.jit(device=True)(shared.sgd_update)


# ----- Host side: arrays and launch sizes -----

def _device_module():
    """Where results live when inputs do not say: numpy under the simulator, cupy on a GPU."""
    if config.ENABLE_CUDASIM:
        return np
    import cupy
    return cupy


def _xp(a):
    """The array module of ``a``: numpy for host arrays, cupy for device arrays."""
    return np if isinstance(a, np.ndarray) else _device_module()


def _dense(xp, a):
    """``a`` C-contiguous, copied only when it must be; under the simulator also writable."""
    a = xp.ascontiguousarray(a)
    # A simulated launch copies every argument back to the host; a gradient broadcast over a length-1 axis is read-only.
    return a.copy() if config.ENABLE_CUDASIM and not a.flags.writeable else a


def _blocks(n, threads=THREADS):
    """Blocks for one thread per element: ceil(n / threads), at least 1."""
    return max(1, -(-n // threads))


# ----- Device helpers -----

@cuda.jit(device=True)
def _row_col(t, cols):
    """(i, j) of flat index t in a matrix with ``cols`` columns."""
    return t // cols, t % cols


# ----- Sums of partial results, in a fixed order -----

@cuda.jit(cache=True)
def _sum_parts_kernel(parts, out):
    """for p: out[p] = sum_s parts[s, p], s in order (the same bits every run)

    Launch: ceil(P / THREADS) blocks of THREADS, one thread per p; neighbouring p are neighbours in memory.
    """
    p = cuda.grid(1)
    if p < out.size:
        total = parts[0, p]
        for s in range(1, parts.shape[0]):
            total += parts[s, p]
        out[p] = total


# ----- Matrix product (its kernel and its launch plan: numba_cuda_matmul.py) -----

def matmul(a, b, trans_a=False, trans_b=False):
    """out[i, j] = sum_k op(a)[i, k] * op(b)[k, j], op = transpose when asked."""
    xp = _xp(a)
    a, b = _dense(xp, a), _dense(xp, b)  # mu, a column slice of the fused heads' output, is strided
    m, k = a.shape[::-1] if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    if m * n == 0:
        return xp.empty((m, n), a.dtype)  # an empty product: nothing to launch
    plan = numba_cuda_matmul.plan_matmul(m, n, k)
    parts = xp.empty((plan.slices, m, n), a.dtype)
    grid = (_blocks(n, plan.tile), _blocks(m, plan.tile), plan.slices)
    MATMUL[a.dtype, plan.side][grid, (plan.side, plan.side)](a, b, parts, trans_a, trans_b, plan.slice_k)
    if plan.slices == 1:
        return parts[0]
    out = xp.empty((m, n), a.dtype)
    _sum_parts_kernel[_blocks(out.size), THREADS](parts.reshape(plan.slices, -1), out.reshape(-1))
    return out


# ----- Bias plus activation -----

@cuda.jit(cache=True)
def _bias_act_kernel(x, b, code, out):
    """for i: for j: out[i, j] = act(x[i, j] + b[j])

    Launch: ceil(rows cols / THREADS) blocks of THREADS, one thread per element.
    """
    t = cuda.grid(1)
    if t < out.size:
        i, j = _row_col(t, out.shape[1])
        out[i, j] = _activate(code, x[i, j] + b[j])


@cuda.jit(cache=True)
def _bias_act_backward_kernel(g, y, code, gx, parts):
    """for i: for j: gx[i, j] = g[i, j] act'(y[i, j]); parts[r, j] = sum of gx[i, j] over the rows i of row block r

    Launch: grid (ceil(cols / WARP), R), block (WARP, BIAS_ROWS). Thread (x, t) of block (bx, r) takes
    column j = WARP bx + x and rows i = BIAS_ROWS r + t, then every BIAS_ROWS R rows after it
    (neighbouring x read neighbouring j: coalesced); the block adds its BIAS_ROWS sums of each
    column in shared memory (float64), in order, and thread t = 0 writes parts[r, j].
    """
    x, t = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * WARP + x
    sums = cuda.shared.array((BIAS_ROWS, WARP), float64)
    s = 0.0
    if j < gx.shape[1]:
        for i in range(cuda.blockIdx.y * BIAS_ROWS + t, gx.shape[0], BIAS_ROWS * cuda.gridDim.y):
            d = g[i, j] * _activate_grad(code, y[i, j])
            gx[i, j] = d
            s += d
    sums[t, x] = s
    cuda.syncthreads()
    if t == 0 and j < gx.shape[1]:
        for row in range(1, BIAS_ROWS):
            s += sums[row, x]
        parts[cuda.blockIdx.y, j] = s


def bias_act(x, b, act):
    """y[i, j] = act(x[i, j] + b[j]); x may have extra leading axes."""
    code = shared.act_code(act, "bias_act")
    xp = _xp(x)
    x2 = shared.rows(xp, x)
    out = xp.empty_like(x2)
    _bias_act_kernel[_blocks(out.size), THREADS](x2, _dense(xp, b), code, out)
    return out.reshape(x.shape)


def bias_act_backward(g, y, act):
    """(dL/dx, dL/db) for y = act(x + b): dL/dx = g act'(x + b), dL/db = sum_i dL/dx[i]."""
    code = shared.act_code(act, "bias_act_backward")
    xp = _xp(g)
    g2, y2 = _dense(xp, g).reshape(-1, g.shape[-1]), shared.rows(xp, y)
    rows, cols = g2.shape
    gx, gb = xp.empty_like(g2), xp.empty(cols, g.dtype)
    row_blocks = min(_blocks(rows, BIAS_ROWS), BIAS_ROW_BLOCKS)
    parts = xp.empty((row_blocks, cols), np.float64)
    _bias_act_backward_kernel[(_blocks(cols, WARP), row_blocks), (WARP, BIAS_ROWS)](g2, y2, code, gx, parts)
    _sum_parts_kernel[_blocks(cols), THREADS](parts, gb)
    return gx.reshape(g.shape), gb


# ----- Sampling: Philox4x32-10 on the device (numba_cuda_random.py; the statement: philox.py) -----

def make_rng(seed):
    """A philox.DeviceRNG for ``seed``: key = the seed's two 32-bit halves, counter 0, on the device."""
    return philox.new_rng(seed, _device_module())


def rng_state(rng):
    """The generator's state as JSON values: its name, key and counter (copied from the device)."""
    words = philox.checked(rng, "numba-cuda").words
    return philox.state_of(words if isinstance(words, np.ndarray) else words.get())


def restore_rng(state):
    """A new DeviceRNG holding the key and counter ``rng_state`` saved, so draws continue exactly."""
    return philox.DeviceRNG(_device_module().asarray(philox.words_of(state)))


def standard_normal(rng, shape, dtype=np.float32):
    """eps ~ N(0, I) of the given shape, drawn on the device from (and advancing) ``rng``, a DeviceRNG."""
    state = philox.checked(rng, "numba-cuda").words
    out = _device_module().empty(math.prod(shape), dtype)
    calls = philox.calls_for(out.size, out.dtype)
    if calls:
        normals_kernel[_blocks(calls), THREADS](state, out, philox.PER_CALL[out.dtype])
        advance_kernel[1, 1](state, calls)
    return out.reshape(shape)


# ----- Reparameterization: z = mu + sigma * eps (Kingma & Welling, eq. 10) -----

@cuda.jit(cache=True)
def _reparameterize_kernel(mu, logvar, eps, z):
    """for k: for p: z[k, p] = mu[p] + exp(logvar[p] / 2) eps[k, p]

    Launch: ceil(K P / THREADS) blocks of THREADS, one thread per element of z.
    """
    t = cuda.grid(1)
    if t < z.size:
        k, p = _row_col(t, mu.size)
        z[k, p] = mu[p] + math.exp(0.5 * logvar[p]) * eps[k, p]


@cuda.jit(cache=True)
def _reparameterize_backward_kernel(g, logvar, eps, g_mu, g_logvar):
    """for p: g_mu[p] = sum_k g[k, p]; g_logvar[p] = exp(logvar[p] / 2) / 2 sum_k g[k, p] eps[k, p]

    Launch: ceil(P / THREADS) blocks of THREADS, one thread per p.
    """
    p = cuda.grid(1)
    if p < g_mu.size:
        sum_g = 0.0
        sum_ge = 0.0
        for k in range(g.shape[0]):
            sum_g += g[k, p]
            sum_ge += g[k, p] * eps[k, p]
        g_mu[p] = sum_g
        g_logvar[p] = 0.5 * math.exp(0.5 * logvar[p]) * sum_ge


def reparameterize(mu, logvar, eps):
    """z[k] = mu + exp(logvar / 2) * eps[k], for eps of shape (K,) + mu.shape."""
    samples = shared.sample_count(mu, eps, "reparameterize")
    xp = _xp(mu)
    z = xp.empty((samples, mu.size), mu.dtype)
    _reparameterize_kernel[_blocks(z.size), THREADS](
        _dense(xp, mu).ravel(), _dense(xp, logvar).ravel(),
        _dense(xp, eps).reshape(samples, -1), z)
    return z.reshape(eps.shape)


def reparameterize_backward(g, logvar, eps):
    """(dL/dmu, dL/dlogvar) = (sum_k g[k], exp(logvar / 2) / 2 * sum_k g[k] eps[k])."""
    samples = shared.sample_count(logvar, eps, "reparameterize_backward")
    xp = _xp(g)
    g_mu = xp.empty(logvar.size, g.dtype)
    g_logvar = xp.empty(logvar.size, g.dtype)
    _reparameterize_backward_kernel[_blocks(g_mu.size), THREADS](
        _dense(xp, g).reshape(samples, -1), _dense(xp, logvar).ravel(),
        _dense(xp, eps).reshape(samples, -1), g_mu, g_logvar)
    return g_mu.reshape(logvar.shape), g_logvar.reshape(logvar.shape)


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B; row sums: numba_cuda_rowsum.py) -----

@cuda.jit(cache=True)
def _kl_backward_kernel(g, mu, logvar, g_mu, g_logvar):
    """for i: for j: g_mu[i, j] = g[i] mu[i, j]; g_logvar[i, j] = g[i] (exp(logvar[i, j]) - 1) / 2

    Launch: ceil(rows cols / THREADS) blocks of THREADS, one thread per element.
    """
    t = cuda.grid(1)
    if t < g_mu.size:
        i, j = _row_col(t, g_mu.shape[1])
        g_mu[i, j] = g[i] * mu[i, j]
        g_logvar[i, j] = 0.5 * g[i] * math.expm1(logvar[i, j])


def kl_normal(mu, logvar):
    """kl[i] = -1/2 sum_j (1 + logvar - mu^2 - exp(logvar)), summed over the last axis."""
    xp = _xp(mu)
    mu2, logvar2 = shared.rows(xp, mu), shared.rows(xp, logvar)
    out = xp.empty(mu2.shape[0], mu.dtype)
    kl_row_sums[out.size, ROW_THREADS](mu2, logvar2, out)
    return out.reshape(mu.shape[:-1])


def kl_normal_backward(g, mu, logvar):
    """(dL/dmu, dL/dlogvar) = (g mu, g (exp(logvar) - 1) / 2), g one value per row."""
    xp = _xp(mu)
    mu2, logvar2 = shared.rows(xp, mu), shared.rows(xp, logvar)
    g_mu, g_logvar = xp.empty_like(mu2), xp.empty_like(mu2)
    _kl_backward_kernel[_blocks(mu2.size), THREADS](
        _dense(xp, g).ravel(), mu2, logvar2, g_mu, g_logvar)
    return g_mu.reshape(mu.shape), g_logvar.reshape(mu.shape)


# ----- Log-likelihoods, summed over the last axis (numba_cuda_rowsum.py); x broadcasts over leading axes -----

@cuda.jit(cache=True)
def _bernoulli_backward_kernel(g, x, logits, out):
    """for i: for j: out[i, j] = g[i] (x[i', j] - sigmoid(l[i'', j]))

    Launch: ceil(rows cols / THREADS) blocks of THREADS, one thread per element.
    """
    t = cuda.grid(1)
    if t < out.size:
        i, j = _row_col(t, out.shape[1])
        sigmoid = _activate(shared.SIGMOID, logits[i % logits.shape[0], j])
        out[i, j] = g[i] * (x[i % x.shape[0], j] - sigmoid)


@cuda.jit(cache=True)
def _gaussian_backward_kernel(g, x, mean, sigma, out):
    """for i: for j: out[i, j] = g[i] (x[i', j] - m[i'', j]) / sigma^2

    Launch: ceil(rows cols / THREADS) blocks of THREADS, one thread per element.
    """
    t = cuda.grid(1)
    if t < out.size:
        i, j = _row_col(t, out.shape[1])
        out[i, j] = g[i] * (x[i % x.shape[0], j] - mean[i % mean.shape[0], j]) / (sigma * sigma)


def _log_prob(kernel, x, theta, *args, name):
    """Launch a row-sum log-likelihood kernel, one block per row of the broadcast shape."""
    shape = shared.broadcast_rows(x, theta, name)
    xp = _xp(theta)
    out = xp.empty(shape[:-1], theta.dtype)
    kernel[out.size, ROW_THREADS](shared.rows(xp, x), shared.rows(xp, theta), *args, out.reshape(-1))
    return out


def _log_prob_backward(kernel, g, x, theta, *args, name):
    """Launch a log-likelihood gradient kernel over the broadcast shape; returns dlp/dtheta."""
    shape = shared.broadcast_rows(x, theta, name)
    xp = _xp(theta)
    out = xp.empty(shape, theta.dtype)
    kernel[_blocks(out.size), THREADS](_dense(xp, g).ravel(), shared.rows(xp, x),
                                       shared.rows(xp, theta), *args, out.reshape(-1, shape[-1]))
    return out


def bernoulli_log_prob(x, logits):
    """lp = sum_j x_j l_j - softplus(l_j): log Bernoulli(x | sigmoid(l))."""
    return _log_prob(bernoulli_row_sums, x, logits, name="bernoulli_log_prob")


def bernoulli_log_prob_backward(g, x, logits):
    """dlp/dl_j = x_j - sigmoid(l_j), scaled by g."""
    return _log_prob_backward(_bernoulli_backward_kernel, g, x, logits, name="bernoulli_log_prob_backward")


def gaussian_log_prob(x, mean, sigma):
    """lp = sum_j -(x_j - m_j)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
    return _log_prob(gaussian_row_sums, x, mean, float(sigma), name="gaussian_log_prob")


def gaussian_log_prob_backward(g, x, mean, sigma):
    """dlp/dm_j = (x_j - m_j) / sigma^2, scaled by g."""
    return _log_prob_backward(_gaussian_backward_kernel, g, x, mean, float(sigma),
                              name="gaussian_log_prob_backward")


# ----- Log-sum-exp -----

@cuda.jit(cache=True)
def _logsumexp_kernel(a, out):
    """for p: m = max_k a[k, p] (0 if not finite); out[p] = m + log sum_k exp(a[k, p] - m)

    Launch: ceil(P / THREADS) blocks of THREADS, one thread per column p
    (coalesced: neighbouring threads read neighbouring p of each row k).
    """
    p = cuda.grid(1)
    if p < out.size:
        top = -math.inf
        for k in range(a.shape[0]):
            top = max(top, a[k, p])
        if not math.isfinite(top):
            top = 0.0
        s = 0.0
        for k in range(a.shape[0]):
            s += math.exp(a[k, p] - top)
        out[p] = top + math.log(s) if s > 0 else -math.inf


def logsumexp(a, axis=0):
    """log sum_k exp(a_k) along ``axis``, shifted by the max for stability."""
    xp = _xp(a)
    front = _dense(xp, xp.moveaxis(a, axis, 0))
    out = xp.empty(front.shape[1:], a.dtype)
    _logsumexp_kernel[_blocks(out.size), THREADS](front.reshape(front.shape[0], -1), out.reshape(-1))
    return out


# ----- Fused optimizer steps over one flat parameter buffer -----

@cuda.jit(cache=True)
def _adam_kernel(p, g, m, v, sizes, beta1, beta2, weight_decay):
    """for i: p[i], m[i], v[i] = adam_update(p[i], g[i], m[i], v[i], a_t, eps_t, ...), (a_t, eps_t) = sizes

    The sizes are read from device memory. Launch: ceil(n / THREADS) blocks of THREADS, one thread per
    parameter; one pass over memory.
    """
    i = cuda.grid(1)
    if i < p.size:
        p[i], m[i], v[i] = _adam_update(p[i], g[i], m[i], v[i], sizes[0], sizes[1],
                                        beta1, beta2, weight_decay)


@cuda.jit(cache=True)
def _sgd_kernel(p, g, velocity, lr, momentum, weight_decay):
    """for i: p[i], velocity[i] = sgd_update(p[i], g[i], velocity[i], ...), launched as ``_adam_kernel``."""
    i = cuda.grid(1)
    if i < p.size:
        p[i], velocity[i] = _sgd_update(p[i], g[i], velocity[i], lr, momentum, weight_decay)


def adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba, Algorithm 1, PyTorch's form), in place over flat buffers; step counts from 1.

    step and lr: numbers, or 0-d device arrays, which the host never reads (``shared.adam_step_sizes_array``).
    """
    shared.check_flat("adam_step", p, g, m, v)
    xp = _xp(p)
    sizes = shared.adam_step_sizes_array(xp, p.dtype, step, lr, beta1, beta2, eps)
    with shared.contiguous_in_place(xp, p, m, v) as (p_dense, m_dense, v_dense):
        _adam_kernel[_blocks(p.size), THREADS](p_dense, _dense(xp, g), m_dense, v_dense, sizes,
                                               *shared.scalars_like(p, beta1, beta2, weight_decay))


def sgd_step(p, g, velocity, lr, momentum=0.0, weight_decay=0.0):
    """SGD with momentum (PyTorch's form), in place over flat buffers: u = mu u + g'; p -= lr u."""
    shared.check_flat("sgd_step", p, g, velocity)
    xp = _xp(p)
    with shared.contiguous_in_place(xp, p, velocity) as (p_dense, velocity_dense):
        _sgd_kernel[_blocks(p.size), THREADS](p_dense, _dense(xp, g), velocity_dense,
                                              *shared.scalars_like(p, lr, momentum, weight_decay))
