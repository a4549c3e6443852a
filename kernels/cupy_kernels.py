"""CuPy kernels: cuBLAS for the products, fused CuPy and CUDA C kernels for the rest.

- ``matmul`` is cuBLAS GEMM through nvmath-python's bindings (``cupy_gemm``),
  not ``cupy.matmul``, whose cuBLAS wrapper refuses a stream that captures.
- Pointwise paths are ``cupy.ElementwiseKernel``s and row sums are
  ``cupy.ReductionKernel``s (float64 accumulators), with ``pointwise.cu``
  (the CUDA C twins of ``shared``'s formulas) as their preamble.
- Log-sum-exp, the optimizer steps and the draws are ``cupy.RawKernel``s
  loaded from ``reduce.cu``, ``optim.cu`` and ``random.cu`` (``RAW_KERNELS``).
- Sampling is Philox4x32-10 (``random.cu`` with ``philox.cuh``; stated in
  NumPy in ``philox``): its state is a key and a counter on the device, six
  32-bit words, which ``rng_state`` copies out as JSON values.

CuPy is imported on first use, so this module imports on machines without it;
each kernel compiles on its first launch. Arrays in and out are CuPy arrays.
"""
import functools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from minivae.kernels import cupy_gemm, philox, shared
from minivae.kernels.reference import LOG_2PI

SOURCES = Path(__file__).parent
THREADS = 256  # threads per block of the raw kernels
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# The raw kernels of each CUDA C file; {t}: one kernel per dtype, named with its _SUFFIX.
RAW_KERNELS = {"reduce.cu": ["logsumexp_columns_{t}"], "optim.cu": ["adam_step_{t}", "sgd_step_{t}"],
               "random.cu": ["philox_normals_{t}", "philox_advance"]}


def _cupy():
    """The cupy module, imported on first use."""
    import cupy
    return cupy


def _source(name):
    """The text of the CUDA C file ``name`` shipped beside this module, with philox.cuh's text in place of its
    #include: CuPy's compile cache keys on the text it is given, so an edit of philox.cuh must change it."""
    return (SOURCES / name).read_text().replace('#include "philox.cuh"', (SOURCES / "philox.cuh").read_text())


@functools.cache
def _kernels():
    """Every CuPy kernel, built once on first use."""
    cp = _cupy()
    pointwise = _source("pointwise.cu")

    def elementwise(params, outputs, body, name):
        return cp.ElementwiseKernel(params, outputs, body, "minivae_" + name, preamble=pointwise)

    def row_sum(params, output, term, post, name):
        return cp.ReductionKernel(params, output, term, "a + b", post, "0", "minivae_" + name,
                                  reduce_type="double", preamble=pointwise)

    raw = {}
    for file, names in RAW_KERNELS.items():
        module = cp.RawModule(code=_source(file))
        for name in {name.format(t=suffix) for name in names for suffix in _SUFFIX.values()}:
            raw[name] = module.get_function(name)

    return SimpleNamespace(
        raw=raw,
        bias_act=elementwise("T x, raw T b, int32 code, int64 cols", "T y",
                             "y = mv_activate(code, x + b[i % cols])", "bias_act"),
        act_grad=elementwise("T g, T y, int32 code", "T gx", "gx = g * mv_activate_grad(code, y)", "act_grad"),
        reparameterize=elementwise("T mu, T logvar, T eps", "T z", "z = mu + exp(logvar / 2) * eps",
                                   "reparameterize"),
        product_sum=row_sum("T g, T eps", "T s", "g * eps", "s = a", "product_sum"),
        kl=row_sum("T mu, T logvar", "T kl", "mv_kl_term(mu, logvar)", "kl = -a / 2", "kl"),
        kl_backward=elementwise("T g, T mu, T logvar", "T g_mu, T g_logvar",
                                "g_mu = g * mu; g_logvar = g * expm1(logvar) / 2", "kl_backward"),
        bernoulli=row_sum("T x, T logit", "T lp", "mv_bernoulli_term(x, logit)", "lp = a", "bernoulli"),
        bernoulli_backward=elementwise("T g, T x, T logit", "T out",
                                       "out = g * (x - mv_activate(MV_SIGMOID, logit))", "bernoulli_backward"),
        squared_distance=row_sum("T x, T mean", "T sq", "(x - mean) * (x - mean)", "sq = a", "squared_distance"),
        gaussian_backward=elementwise("T g, T x, T mean, T inv_var", "T out", "out = g * (x - mean) * inv_var",
                                      "gaussian_backward"),
    )


def _launch(name, a, n, *args, threads=THREADS):
    """Launch raw kernel ``name`` ({t}: for ``a``'s dtype), one thread per each of n items, ``threads`` a block."""
    blocks = max(1, -(-n // threads))
    _kernels().raw[name.format(t=_SUFFIX[a.dtype])]((blocks,), (threads,), args)


# ----- Matrix product: cuBLAS GEMM on a handle of the current stream (cupy_gemm) -----

def matmul(a, b, trans_a=False, trans_b=False):
    """out[i, j] = sum_k op(a)[i, k] * op(b)[k, j] by cuBLAS GEMM, op = transpose when asked."""
    return cupy_gemm.gemm(a, b, trans_a, trans_b)


# ----- Bias plus activation -----

def bias_act(x, b, act):
    """y[i, j] = act(x[i, j] + b[j]); x may have extra leading axes."""
    code = shared.act_code(act, "bias_act")
    return _kernels().bias_act(x, b, np.int32(code), np.int64(x.shape[-1]))


def bias_act_backward(g, y, act):
    """(dL/dx, dL/db) for y = act(x + b): dL/dx = g act'(x + b), dL/db = sum_i dL/dx[i]."""
    code = shared.act_code(act, "bias_act_backward")
    gx = _kernels().act_grad(g, y, np.int32(code))
    return gx, gx.reshape(-1, gx.shape[-1]).sum(axis=0)


# ----- Sampling: Philox4x32-10 on the device (random.cu, philox.cuh; the statement: philox.py) -----

def make_rng(seed):
    """A philox.DeviceRNG for ``seed``: key = the seed's two 32-bit halves, counter 0, on the device."""
    return philox.new_rng(seed, _cupy())


def rng_state(rng):
    """The generator's state as JSON values: its name, key and counter (copied from the device)."""
    return philox.state_of(philox.checked(rng, "cupy").words.get())


def restore_rng(state):
    """A new DeviceRNG holding the key and counter ``rng_state`` saved, so draws continue exactly, on any GPU."""
    return philox.DeviceRNG(_cupy().asarray(philox.words_of(state)))


def standard_normal(rng, shape, dtype=np.float32):
    """eps ~ N(0, I) of the given shape, drawn on the device from (and advancing) ``rng``, a DeviceRNG.

    Two launches: the draw, one thread per Philox call, then the counter's advance (random.cu).
    """
    state = philox.checked(rng, "cupy").words
    out = _cupy().empty(math.prod(shape), dtype)
    calls = philox.calls_for(out.size, out.dtype)
    if calls:
        _launch("philox_normals_{t}", out, calls, state, out, np.int64(out.size))
        _launch("philox_advance", out, 1, state, np.uint64(calls), threads=1)
    return out.reshape(shape)


# ----- Reparameterization: z = mu + sigma * eps (Kingma & Welling, eq. 10) -----

def reparameterize(mu, logvar, eps):
    """z[k] = mu + exp(logvar / 2) * eps[k], for eps of shape (K,) + mu.shape."""
    shared.sample_count(mu, eps, "reparameterize")
    return _kernels().reparameterize(mu, logvar, eps)


def reparameterize_backward(g, logvar, eps):
    """(dL/dmu, dL/dlogvar) = (sum_k g[k], exp(logvar / 2) / 2 * sum_k g[k] eps[k])."""
    shared.sample_count(logvar, eps, "reparameterize_backward")
    sum_ge = _kernels().product_sum(g, eps, axis=0)
    return g.sum(axis=0), 0.5 * _cupy().exp(0.5 * logvar) * sum_ge


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B) -----

def kl_normal(mu, logvar):
    """kl[i] = -1/2 sum_j (1 + logvar - mu^2 - exp(logvar)), summed over the last axis."""
    return _kernels().kl(mu, logvar, axis=-1)


def kl_normal_backward(g, mu, logvar):
    """(dL/dmu, dL/dlogvar) = (g mu, g (exp(logvar) - 1) / 2), g one value per row."""
    return _kernels().kl_backward(g[..., None], mu, logvar)


# ----- Log-likelihoods, summed over the last axis; x broadcasts over leading axes -----

def bernoulli_log_prob(x, logits):
    """lp = sum_j x_j l_j - softplus(l_j): log Bernoulli(x | sigmoid(l))."""
    shared.broadcast_rows(x, logits, "bernoulli_log_prob")
    return _kernels().bernoulli(x, logits, axis=-1)


def bernoulli_log_prob_backward(g, x, logits):
    """dlp/dl_j = x_j - sigmoid(l_j), scaled by g."""
    shared.broadcast_rows(x, logits, "bernoulli_log_prob_backward")
    return _kernels().bernoulli_backward(g[..., None], x, logits)


def gaussian_log_prob(x, mean, sigma):
    """lp = sum_j -(x_j - m_j)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
    shared.broadcast_rows(x, mean, "gaussian_log_prob")
    sq = _kernels().squared_distance(x, mean, axis=-1)
    return -0.5 * sq / sigma**2 - x.shape[-1] * (math.log(sigma) + 0.5 * LOG_2PI)


def gaussian_log_prob_backward(g, x, mean, sigma):
    """dlp/dm_j = (x_j - m_j) / sigma^2, scaled by g."""
    shared.broadcast_rows(x, mean, "gaussian_log_prob_backward")
    return _kernels().gaussian_backward(g[..., None], x, mean, mean.dtype.type(1 / sigma**2))


# ----- Log-sum-exp -----

def logsumexp(a, axis=0):
    """log sum_k exp(a_k) along ``axis``, shifted by the max for stability (reduce.cu)."""
    cp = _cupy()
    front = cp.ascontiguousarray(cp.moveaxis(a, axis, 0))
    out = cp.empty(front.shape[1:], a.dtype)
    _launch("logsumexp_columns_{t}", a, out.size, front, np.int64(front.shape[0]), np.int64(out.size), out)
    return out


# ----- Fused optimizer steps over one flat parameter buffer (optim.cu) -----

def adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba, Algorithm 1, PyTorch's form), in place over flat buffers; step counts from 1.

    step and lr: numbers, or 0-d device arrays, which the host never reads (``shared.adam_step_sizes_array``).
    """
    shared.check_flat("adam_step", p, g, m, v)
    cp = _cupy()
    sizes = shared.adam_step_sizes_array(cp, p.dtype, step, lr, beta1, beta2, eps)
    with shared.contiguous_in_place(cp, p, m, v) as (p_dense, m_dense, v_dense):
        _launch("adam_step_{t}", p, p.size, p_dense, cp.ascontiguousarray(g), m_dense, v_dense, np.int64(p.size),
                sizes, *shared.scalars_like(p, beta1, beta2, weight_decay))


def sgd_step(p, g, velocity, lr, momentum=0.0, weight_decay=0.0):
    """SGD with momentum (PyTorch's form), in place over flat buffers: u = mu u + g'; p -= lr u."""
    shared.check_flat("sgd_step", p, g, velocity)
    cp, scalar = _cupy(), p.dtype.type
    with shared.contiguous_in_place(cp, p, velocity) as (p_dense, velocity_dense):
        _launch("sgd_step_{t}", p, p.size, p_dense, cp.ascontiguousarray(g), velocity_dense, np.int64(p.size),
                scalar(lr), scalar(momentum), scalar(weight_decay))
