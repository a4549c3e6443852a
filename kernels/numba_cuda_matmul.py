"""The numba-cuda matrix product: shared-memory tiles of k, a block of outputs in each thread's registers.

``numba_cuda.matmul`` launches ``MATMUL[dtype]`` on a grid of ``TILE_MN`` x ``TILE_MN`` output tiles.
"""
import numpy as np
from numba import cuda, float32, float64

SIDE = 16  # blocks of SIDE x SIDE threads
PER_THREAD = 4  # each thread computes PER_THREAD x PER_THREAD outputs
TILE_MN = SIDE * PER_THREAD  # a block's output tile: TILE_MN x TILE_MN
TILE_K = 8  # the k-width of the shared tiles of op(a) and op(b)
LOADS = TILE_K * TILE_MN // (SIDE * SIDE)  # elements of each shared tile one thread loads per slab


@cuda.jit(device=True)
def _op_element(a, trans, r, c):
    """op(a)[r, c] with op = transpose when ``trans``; 0 past op(a)'s edge (ragged last tiles)."""
    if trans:
        r, c = c, r
    if r < a.shape[0] and c < a.shape[1]:
        return a[r, c]
    return 0


@cuda.jit(device=True)
def _tile_place(flat, contiguous_along_k, width):
    """(kk, x) of the ``flat``-th element of a TILE_K x ``width`` tile, numbered along the operand's rows."""
    # Consecutive threads take consecutive ``flat``: numbered as the operand lies in memory, their loads coalesce.
    if contiguous_along_k:
        return flat % TILE_K, flat // TILE_K
    return flat // width, flat % width


def _register_tiled_matmul(scalar):
    """The register-tiled matmul kernel for one element type (shared and local arrays need a fixed type)."""

    @cuda.jit
    def matmul_kernel(a, b, out, trans_a, trans_b):
        """for i: for j: out[i, j] = sum_k op(a)[i, k] op(b)[k, j]

        Launch: grid (ceil(N / TILE_MN), ceil(M / TILE_MN)), block (SIDE, SIDE).
        Block (bx, by) owns the TILE_MN x TILE_MN tile of out at (i0, j0) =
        (by TILE_MN, bx TILE_MN); thread (x, y) owns the PER_THREAD x PER_THREAD
        outputs out[i0 + y + SIDE r, j0 + x + SIDE c] in registers (``acc``).
        For each TILE_K-wide slab of k:
          load: the block copies op(a)[i0:i0+TILE_MN, k0:k0+TILE_K] into
            a_tile[kk, i] and op(b)[k0:k0+TILE_K, j0:j0+TILE_MN] into b_tile[kk, j],
            LOADS elements per thread, numbered the way each operand lies in memory
            (coalesced whether or not it is transposed), 0 past the edges; syncthreads;
          for kk: a_reg[r] = a_tile[kk, y + SIDE r]; b_reg[c] = b_tile[kk, x + SIDE c];
            acc[r, c] += a_reg[r] b_reg[c]  (PER_THREAD^2 products from 2 PER_THREAD
            shared reads; neighbouring x read neighbouring b_tile columns);
          syncthreads.
        Each output is written once; neighbouring threads write neighbouring j.
        """
        a_tile = cuda.shared.array((TILE_K, TILE_MN), scalar)
        b_tile = cuda.shared.array((TILE_K, TILE_MN), scalar)
        a_reg = cuda.local.array(PER_THREAD, scalar)
        b_reg = cuda.local.array(PER_THREAD, scalar)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), scalar)
        x, y = cuda.threadIdx.x, cuda.threadIdx.y
        thread = y * SIDE + x
        i0, j0 = cuda.blockIdx.y * TILE_MN, cuda.blockIdx.x * TILE_MN
        inner = a.shape[0] if trans_a else a.shape[1]
        for r in range(PER_THREAD):
            for c in range(PER_THREAD):
                acc[r, c] = 0
        for k0 in range(0, inner, TILE_K):
            for load in range(LOADS):
                flat = thread + load * SIDE * SIDE
                kk, i = _tile_place(flat, not trans_a, TILE_MN)  # a (M, K) lies along k; a.T along i
                a_tile[kk, i] = _op_element(a, trans_a, i0 + i, k0 + kk)
                kk, j = _tile_place(flat, trans_b, TILE_MN)  # b (K, N) lies along j; b.T along k
                b_tile[kk, j] = _op_element(b, trans_b, k0 + kk, j0 + j)
            cuda.syncthreads()
            for kk in range(TILE_K):
                for r in range(PER_THREAD):
                    a_reg[r] = a_tile[kk, y + SIDE * r]
                    b_reg[r] = b_tile[kk, x + SIDE * r]
                for r in range(PER_THREAD):
                    for c in range(PER_THREAD):
                        acc[r, c] += a_reg[r] * b_reg[c]
            cuda.syncthreads()
        for r in range(PER_THREAD):
            for c in range(PER_THREAD):
                i, j = i0 + y + SIDE * r, j0 + x + SIDE * c
                if i < out.shape[0] and j < out.shape[1]:
                    out[i, j] = acc[r, c]

    return matmul_kernel


MATMUL = {np.dtype(np.float32): _register_tiled_matmul(float32),
          np.dtype(np.float64): _register_tiled_matmul(float64)}
