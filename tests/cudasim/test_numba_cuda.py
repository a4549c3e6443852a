"""Every numba-cuda kernel against the NumPy reference, under the CUDA simulator (see conftest.py).

The simulator runs each CUDA thread as a Python thread (about 1 s per 16 x 16
block with barriers), so shapes stay at a few blocks, with ragged edges.
"""
import re

import numpy as np
import pytest

from kernel_cases import (CASES, assert_adam_reads_step_and_lr_from_arrays, assert_matches_reference,
                          assert_rng_state_round_trips)
from minivae.errors import MinivaeError
from minivae.kernels import numba_cuda, reference

# Seeding xoroshiro states runs numba's CPU seeding code in object mode under the simulator.
pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning",
                                        "ignore:overflow encountered:RuntimeWarning")

TABLE = [name for name in CASES if name not in ("matmul", "make_rng", "standard_normal")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name", TABLE)
def test_kernel_matches_reference(name, layout, dtype):
    assert_matches_reference(numba_cuda, name, dtype, layout)


@pytest.mark.parametrize("dtype, trans_a, trans_b, m, k, n", [
    (np.float32, False, False, 33, 17, 20), (np.float32, True, False, 33, 17, 20),
    (np.float32, False, True, 33, 17, 20), (np.float32, True, True, 33, 17, 20),
    (np.float64, True, False, 33, 17, 20),
    (np.float32, False, True, numba_cuda.TILE_MN + 3, 5, 2)])  # two blocks, the second 3 rows high
def test_register_tiled_matmul_with_ragged_edges(dtype, trans_a, trans_b, m, k, n):
    """Ragged in every dimension: k not a multiple of TILE_K, m and n not of TILE_MN or of SIDE."""
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


@pytest.fixture(scope="module")
def draws():
    """Two draws from one seeded DeviceRNG and one from a fresh RNG with the same seed."""
    rng = numba_cuda.make_rng(42)
    first = numba_cuda.standard_normal(rng, (20, 20), np.float32)
    second = numba_cuda.standard_normal(rng, (20, 20), np.float64)
    again = numba_cuda.standard_normal(numba_cuda.make_rng(42), (20, 20), np.float32)
    return first, second, again


def test_standard_normal_has_zero_mean_and_unit_variance(draws):
    for eps in draws[:2]:
        n = eps.size
        assert abs(eps.mean()) < 4 / np.sqrt(n)  # 4 standard errors
        assert abs(eps.var() - 1) < 4 * np.sqrt(2 / (n - 1))


def test_standard_normal_keeps_dtype_shape_and_seed(draws):
    first, second, again = draws
    assert (first.dtype, second.dtype, first.shape) == (np.float32, np.float64, (20, 20))
    np.testing.assert_array_equal(first, again)  # same seed, same stream
    assert not np.allclose(first, second)  # the state advanced
    assert abs(np.corrcoef(first.ravel()[:-1], first.ravel()[1:])[0, 1]) < 4 / np.sqrt(first.size)


def test_rng_state_round_trips_through_the_host():
    assert_rng_state_round_trips(numba_cuda)


def test_adam_reads_step_and_lr_from_device_arrays():
    assert_adam_reads_step_and_lr_from_arrays(numba_cuda)


def test_standard_normal_refuses_a_numpy_generator():
    with pytest.raises(TypeError, match="DeviceRNG, got Generator.*make_rng"):
        numba_cuda.standard_normal(np.random.default_rng(0), (2, 2))


@pytest.mark.parametrize("state, fragment", [
    (reference.rng_state(np.random.default_rng(0)), "generator 'PCG64'"),
    ({"generator": numba_cuda.GENERATOR, "states": np.zeros((3, 2), np.uint64)}, "shape (3, 2)"),
    (None, "generator None"),
])
def test_restore_rng_refuses_another_generators_state(state, fragment):
    with pytest.raises(MinivaeError, match=re.escape(fragment)):
        numba_cuda.restore_rng(state)
