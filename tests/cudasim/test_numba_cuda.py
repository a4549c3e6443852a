"""Every numba-cuda kernel against the NumPy reference, under the CUDA simulator (see conftest.py).

The simulator runs each CUDA thread as a Python thread (about 1 s per 16 x 16
block with barriers), so shapes stay at a few blocks, with ragged edges.
"""
import re

import numpy as np
import pytest

from kernel_cases import (CASES, TOLERANCE, assert_matches_reference,
                          assert_rng_state_round_trips)
from minivae.errors import MinivaeError
from minivae.kernels import numba_cuda, reference

TABLE = [name for name in CASES if name not in ("matmul", "make_rng", "standard_normal")]  # matmul: its own file


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name", TABLE)
def test_kernel_matches_reference(name, layout, dtype):
    assert_matches_reference(numba_cuda, name, dtype, layout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_gradient_with_rows_strided_over_blocks_and_ragged_columns(dtype, monkeypatch):
    """11 rows over 2 row blocks of BIAS_ROWS threads (each thread takes a row, then the row 8 further on);
    33 columns, the second block of columns 1 wide."""
    monkeypatch.setattr(numba_cuda, "BIAS_ROW_BLOCKS", 2)
    rng = np.random.default_rng(2)
    g, y = rng.uniform(-2, 2, (11, 33)).astype(dtype), rng.uniform(-1, 1, (11, 33)).astype(dtype)
    for got, want in zip(numba_cuda.bias_act_backward(g, y, "tanh"), reference.bias_act_backward(g, y, "tanh")):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype])


@pytest.fixture(scope="module")
def draws():
    """Two draws from one seeded generator and one from a fresh one with the same seed."""
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


def test_standard_normal_refuses_a_numpy_generator():
    with pytest.raises(TypeError, match="DeviceRNG, got Generator.*make_rng"):
        numba_cuda.standard_normal(np.random.default_rng(0), (2, 2))


@pytest.mark.parametrize("state, fragment", [
    (reference.rng_state(np.random.default_rng(0)), "generator 'PCG64'"),
    ({"generator": "xoroshiro128+", "states": np.zeros((3, 2), np.uint64)}, "generator 'xoroshiro128+'"),
    ({"generator": "Philox4x32-10", "key": [1], "counter": [0, 0, 0, 0]}, "needs a key of 2"),
    (None, "generator None"),
])
def test_restore_rng_refuses_another_generators_state(state, fragment):
    with pytest.raises(MinivaeError, match=re.escape(fragment)):
        numba_cuda.restore_rng(state)
