"""The numba-cuda matrix product under the CUDA simulator: each launch plan on ragged, transposed and strided
operands, and the plans the training step's products get (see docs/performance.md).

A block of 16 x 16 threads with barriers takes the simulator about a second, one of 8 x 8 a quarter of
that, so the shapes stay at a few blocks; a test picks its plan by replacing ``plan_matmul``.
"""
import math

import numpy as np
import pytest

from minivae.kernels import numba_cuda, numba_cuda_matmul, reference
from minivae.kernels.numba_cuda_matmul import MIN_SLICE_K, SMS, TILE_K, Plan, plan_matmul

BIG, SMALL = numba_cuda_matmul.SIDES  # 64 x 64 and 32 x 32 output tiles
F32, F64 = np.float32, np.float64
# (m, k, n) of the 784-400-20 VAE's 11 products at batch 128: the forward pass, then each layer's dW and dx.
STEP_PRODUCTS = {"x W1": (128, 784, 400), "h W2": (128, 400, 40), "z W3": (128, 20, 400), "h W4": (128, 400, 784),
                 "h^T g4": (400, 128, 784), "g4 W4^T": (128, 784, 400), "z^T g3": (20, 128, 400),
                 "g3 W3^T": (128, 400, 20), "h^T g2": (400, 128, 40), "g2 W2^T": (128, 40, 400),
                 "x^T g1": (784, 128, 400)}


def blocks(plan, m, n):
    return math.ceil(m / plan.tile) * math.ceil(n / plan.tile) * plan.slices


@pytest.mark.parametrize("dtype, trans_a, trans_b, m, k, n, plan", [
    # 64 x 64 tiles: ragged in every dimension (k not a multiple of TILE_K, m and n not of the tile or the side)
    (F32, False, False, 33, 17, 20, Plan(BIG, 1, 24)), (F32, True, False, 33, 17, 20, Plan(BIG, 1, 24)),
    (F32, False, True, 33, 17, 20, Plan(BIG, 1, 24)), (F32, True, True, 33, 17, 20, Plan(BIG, 1, 24)),
    (F64, True, False, 33, 17, 20, Plan(BIG, 1, 24)),
    (F32, False, True, 67, 5, 2, Plan(BIG, 1, 8)),  # two blocks, the second 3 rows high
    # 32 x 32 tiles: four blocks, the last ones 3 rows high and 1 column wide
    (F32, True, True, 35, 17, 33, Plan(SMALL, 1, 24)), (F64, False, False, 35, 17, 33, Plan(SMALL, 1, 24)),
    # k in 3 slices of 16, the last 8 deep, summed in order
    (F32, False, False, 5, 40, 3, Plan(SMALL, 3, 16)), (F32, True, True, 5, 40, 3, Plan(SMALL, 3, 16)),
    (F64, True, False, 5, 40, 3, Plan(SMALL, 3, 16)),
])
def test_each_plan_with_ragged_edges(dtype, trans_a, trans_b, m, k, n, plan, monkeypatch):
    assert plan.slices == math.ceil(k / plan.slice_k)  # as plan_matmul makes them
    monkeypatch.setattr(numba_cuda_matmul, "plan_matmul", lambda *shape: plan)
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, (k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.uniform(-2, 2, (n, k) if trans_b else (k, n)).astype(dtype)
    got = numba_cuda.matmul(a, b, trans_a, trans_b)
    assert got.shape == (m, n) and got.dtype == dtype
    np.testing.assert_allclose(got, reference.matmul(a, b, trans_a, trans_b), rtol=1e-5, atol=1e-5)


def test_matmul_of_a_column_slice():
    """The decoder's input mu is a column slice of the fused heads' output: a strided operand."""
    rng = np.random.default_rng(1)
    heads, w = rng.uniform(-2, 2, (6, 8)).astype(np.float32), rng.uniform(-2, 2, (4, 5)).astype(np.float32)
    mu = heads[:, :4]
    np.testing.assert_allclose(numba_cuda.matmul(mu, w), reference.matmul(mu, w), rtol=1e-5, atol=1e-5)


def test_matmul_over_an_empty_k_is_zeros():
    np.testing.assert_array_equal(numba_cuda.matmul(np.ones((3, 0), F32), np.ones((0, 2), F32)), np.zeros((3, 2)))


@pytest.mark.parametrize("m, n, k", [(0, 4, 3), (4, 0, 3)])
@pytest.mark.parametrize("trans_a", [False, True])
def test_an_empty_product_is_an_empty_array(m, n, k, trans_a):
    a, b = np.ones((k, m) if trans_a else (m, k), F64), np.ones((k, n), F64)
    got, want = numba_cuda.matmul(a, b, trans_a), reference.matmul(a, b, trans_a)
    assert got.shape == want.shape == (m, n) and got.dtype == want.dtype == F64


# (m, k, n); the empty products are plan_matmul(0, 4, 3) and plan_matmul(4, 0, 3)
@pytest.mark.parametrize("m, k, n", [*STEP_PRODUCTS.values(), (1024, 1024, 1024), (3, 0, 2), (1, 1, 1),
                                     (0, 3, 4), (4, 3, 0)])
def test_plan_slices_cover_k_in_whole_slabs(m, k, n):
    plan = plan_matmul(m, n, k)
    assert plan.slice_k % TILE_K == 0 and plan.slices >= 1
    assert (plan.slices - 1) * plan.slice_k < max(k, 1) <= plan.slices * plan.slice_k


@pytest.mark.parametrize("name", STEP_PRODUCTS)
def test_plan_gives_every_sm_work_where_the_shape_allows(name):
    """Two blocks of 32 x 32 tiles per SM (a warp for each of its 4 schedulers), unless k is too shallow to
    slice further; or 64 x 64 tiles (8 warps each) on every SM."""
    m, k, n = STEP_PRODUCTS[name]
    plan = plan_matmul(m, n, k)
    if plan.side == BIG:
        assert blocks(plan, m, n) >= SMS and plan.slices == 1
    else:
        assert blocks(plan, m, n) >= 2 * SMS or plan.slices == max(1, k // MIN_SLICE_K)


def test_plan_fills_the_sms_for_the_steps_large_products_and_keeps_big_tiles_for_big_ones():
    large = [name for name, (m, k, n) in STEP_PRODUCTS.items() if 2 * m * k * n > 40e6]
    assert len(large) == 5
    for name in large:
        m, k, n = STEP_PRODUCTS[name]
        assert blocks(plan_matmul(m, n, k), m, n) >= 2 * SMS, name
    assert plan_matmul(1024, 1024, 1024) == Plan(BIG, 1, 1024)
