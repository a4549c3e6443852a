"""The numba-cuda row sums: each row of the KL and of the log-likelihoods summed by one block, in float64.

The block's threads stride along the row, then tree-reduce their partial sums in shared memory.
``numba_cuda``'s host wrappers launch one block of ``ROW_THREADS`` per row.
"""
import math

from numba import cuda, float64

from minivae.kernels import shared
from minivae.kernels.reference import LOG_2PI

ROW_THREADS = 32  # threads per block (one block per row); a power of 2

_kl_term = cuda.jit(device=True)(shared.kl_term)
_bernoulli_term = cuda.jit(device=True)(shared.bernoulli_term)


@cuda.jit(device=True)
def _block_sum(partial):
    """Tree-reduce ``partial[0:ROW_THREADS]`` (shared memory, one value per thread) to its total."""
    tid = cuda.threadIdx.x
    cuda.syncthreads()
    half = ROW_THREADS // 2
    while half > 0:
        if tid < half:
            partial[tid] += partial[tid + half]
        cuda.syncthreads()
        half //= 2
    return partial[0]


# ----- KL(N(mu, diag(exp(logvar))) || N(0, I)) (Kingma & Welling, Appendix B) -----

@cuda.jit(cache=True)
def kl_row_sums(mu, logvar, out):
    """for i: out[i] = -1/2 sum_j (1 + logvar[i, j] - mu[i, j]^2 - exp(logvar[i, j]))

    Launch: one block of ROW_THREADS per row i; thread t adds j = t, t + ROW_THREADS, ...,
    then ``_block_sum`` adds the threads' sums and thread 0 writes out[i].
    """
    i, t = cuda.blockIdx.x, cuda.threadIdx.x
    partial = cuda.shared.array(ROW_THREADS, float64)
    s = 0.0
    for j in range(t, mu.shape[1], ROW_THREADS):
        s += _kl_term(mu[i, j], logvar[i, j])
    partial[t] = s
    total = _block_sum(partial)
    if t == 0:
        out[i] = -0.5 * total


# ----- Log-likelihoods; x broadcasts over leading axes -----

@cuda.jit(cache=True)
def bernoulli_row_sums(x, logits, out):
    """for i: out[i] = sum_j x[i', j] l[i'', j] - softplus(l[i'', j])   (i' = i mod rows(x), i'' likewise)

    Launch: one block of ROW_THREADS per row, as for the KL.
    """
    i, t = cuda.blockIdx.x, cuda.threadIdx.x
    xi, li = i % x.shape[0], i % logits.shape[0]
    partial = cuda.shared.array(ROW_THREADS, float64)
    s = 0.0
    for j in range(t, x.shape[1], ROW_THREADS):
        s += _bernoulli_term(x[xi, j], logits[li, j])
    partial[t] = s
    total = _block_sum(partial)
    if t == 0:
        out[i] = total


@cuda.jit(cache=True)
def gaussian_row_sums(x, mean, sigma, out):
    """for i: out[i] = -sum_j (x[i', j] - m[i'', j])^2 / (2 sigma^2) - D (log sigma + log(2 pi) / 2)

    Launch: one block of ROW_THREADS per row, as for the KL.
    """
    i, t = cuda.blockIdx.x, cuda.threadIdx.x
    xi, mi = i % x.shape[0], i % mean.shape[0]
    partial = cuda.shared.array(ROW_THREADS, float64)
    s = 0.0
    for j in range(t, x.shape[1], ROW_THREADS):
        s += (x[xi, j] - mean[mi, j]) ** 2
    partial[t] = s
    total = _block_sum(partial)
    if t == 0:
        out[i] = -0.5 * total / (sigma * sigma) - x.shape[1] * (math.log(sigma) + 0.5 * LOG_2PI)
