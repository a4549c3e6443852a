"""The numba-cuda matrix product: shared-memory tiles of k, a block of outputs in each thread's registers.

``plan_matmul`` picks the launch from the shape alone (so a shape gives the
same bits on every GPU): 64 x 64 output tiles when they give every SM of an
H200 a block, else 32 x 32 tiles, with k split into slices when even those
leave fewer than two blocks per SM. ``numba_cuda.matmul`` launches
``MATMUL[dtype, side]`` on a grid of (n tiles, m tiles, slices), each slice
writing its partial products to its own (m, n) plane, then sums the planes in
order (``numba_cuda``'s ``_sum_parts_kernel``): no atomics, so the sum is the
same every run. docs/performance.md counts the blocks of the training step's
products.
"""
import math
from dataclasses import dataclass

import numpy as np
from numba import cuda, float32, float64

PER_THREAD = 4  # each thread computes PER_THREAD x PER_THREAD outputs
TILE_K = 8  # the k-width of the shared tiles of op(a) and op(b)
SIDES = (16, 8)  # blocks of SIDE x SIDE threads: 64 x 64 output tiles (8 warps), 32 x 32 (2 warps)
SMS = 132  # an H200's streaming multiprocessors, each with 4 warp schedulers
MIN_SLICE_K = 64  # no slice of k thinner than this (8 slabs): thinner, its partial plane costs more than it adds


@dataclass(frozen=True)
class Plan:
    """A launch of the matmul kernel: blocks of ``side`` x ``side`` threads, k cut into ``slices`` of ``slice_k``."""
    side: int
    slices: int
    slice_k: int

    @property
    def tile(self):
        return self.side * PER_THREAD


def _tiles(m, n, tile):
    """Output tiles of an m x n product: at least 1, so that an empty product gets a plan too."""
    return max(1, math.ceil(m / tile) * math.ceil(n / tile))


def plan_matmul(m, n, k):
    """The launch for (m x k) @ (k x n): big tiles when they fill the SMs, else small tiles and slices of k.

    64 x 64 tiles when there are at least SMS of them (every SM gets a block, its 4 schedulers 8 warps);
    else 32 x 32 tiles (2 warps each), with k split into enough slices (each at least MIN_SLICE_K deep, a
    multiple of TILE_K) for two blocks per SM, so that every scheduler has a warp.
    """
    if _tiles(m, n, SIDES[0] * PER_THREAD) >= SMS:
        side, slices = SIDES[0], 1
    else:
        side = SIDES[1]
        slices = max(1, min(math.ceil(2 * SMS / _tiles(m, n, side * PER_THREAD)), k // MIN_SLICE_K))
    slice_k = TILE_K * max(1, math.ceil(k / slices / TILE_K))
    return Plan(side, max(1, math.ceil(k / slice_k)), slice_k)


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


def _register_tiled_matmul(scalar, side):
    """The register-tiled matmul kernel for one element type and block side (shared and local arrays need both)."""
    tile_mn = side * PER_THREAD  # a block's output tile: tile_mn x tile_mn
    loads = TILE_K * tile_mn // (side * side)  # elements of each shared tile one thread loads per slab

    @cuda.jit(cache=True)
    def matmul_kernel(a, b, parts, trans_a, trans_b, slice_k):
        """for s: for i: for j: parts[s, i, j] = sum_{k in slice s} op(a)[i, k] op(b)[k, j]

        Launch: grid (ceil(N / tile_mn), ceil(M / tile_mn), slices), block (side, side).
        Block (bx, by, s) owns the tile_mn x tile_mn tile of parts[s] at (i0, j0) =
        (by tile_mn, bx tile_mn) and the k of slice s, [s slice_k, (s + 1) slice_k);
        thread (x, y) owns the PER_THREAD x PER_THREAD outputs
        parts[s, i0 + y + side r, j0 + x + side c] in registers (``acc``).
        For each TILE_K-wide slab of the slice's k:
          load: the block copies op(a)[i0:i0+tile_mn, k0:k0+TILE_K] into
            a_tile[kk, i] and op(b)[k0:k0+TILE_K, j0:j0+tile_mn] into b_tile[kk, j],
            ``loads`` elements per thread, numbered the way each operand lies in memory
            (coalesced whether or not it is transposed), 0 past the edges; syncthreads;
          for kk: a_reg[r] = a_tile[kk, y + side r]; b_reg[c] = b_tile[kk, x + side c];
            acc[r, c] += a_reg[r] b_reg[c]  (PER_THREAD^2 products from 2 PER_THREAD
            shared reads; neighbouring x read neighbouring b_tile columns);
          syncthreads.
        slice_k is a multiple of TILE_K, so only the last slice meets op(a)'s edge in k.
        Each output is written once; neighbouring threads write neighbouring j.
        """
        a_tile = cuda.shared.array((TILE_K, tile_mn), scalar)
        b_tile = cuda.shared.array((TILE_K, tile_mn), scalar)
        a_reg = cuda.local.array(PER_THREAD, scalar)
        b_reg = cuda.local.array(PER_THREAD, scalar)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), scalar)
        x, y = cuda.threadIdx.x, cuda.threadIdx.y
        thread = y * side + x
        i0, j0 = cuda.blockIdx.y * tile_mn, cuda.blockIdx.x * tile_mn
        k_start = cuda.blockIdx.z * slice_k
        k_stop = min(a.shape[0] if trans_a else a.shape[1], k_start + slice_k)
        for r in range(PER_THREAD):
            for c in range(PER_THREAD):
                acc[r, c] = 0
        for k0 in range(k_start, k_stop, TILE_K):
            for load in range(loads):
                flat = thread + load * side * side
                kk, i = _tile_place(flat, not trans_a, tile_mn)  # a (M, K) lies along k; a.T along i
                a_tile[kk, i] = _op_element(a, trans_a, i0 + i, k0 + kk)
                kk, j = _tile_place(flat, trans_b, tile_mn)  # b (K, N) lies along j; b.T along k
                b_tile[kk, j] = _op_element(b, trans_b, k0 + kk, j0 + j)
            cuda.syncthreads()
            for kk in range(TILE_K):
                for r in range(PER_THREAD):
                    a_reg[r] = a_tile[kk, y + side * r]
                    b_reg[r] = b_tile[kk, x + side * r]
                for r in range(PER_THREAD):
                    for c in range(PER_THREAD):
                        acc[r, c] += a_reg[r] * b_reg[c]
            cuda.syncthreads()
        for r in range(PER_THREAD):
            for c in range(PER_THREAD):
                i, j = i0 + y + side * r, j0 + x + side * c
                if i < parts.shape[1] and j < parts.shape[2]:
                    parts[cuda.blockIdx.z, i, j] = acc[r, c]

    return matmul_kernel


MATMUL = {(np.dtype(dtype), side): _register_tiled_matmul(scalar, side)
          for dtype, scalar in ((np.float32, float32), (np.float64, float64)) for side in SIDES}
