"""The numba-cuda Philox4x32-10 kernels against the NumPy statement (kernels/philox.py), under the CUDA simulator.

The raw words bit for bit (Random123's known answers among them), the normals closely (the simulator's
log, cos and sin are Python's float64 ones), and the counter on the device advanced by the kernels alone.
"""
import numpy as np
import pytest
from numba import cuda

from kernel_cases import PHILOX_KNOWN_ANSWERS, PHILOX_TOLERANCE
from minivae.kernels import numba_cuda, philox
from minivae.kernels.numba_cuda_random import advance_kernel, counter_plus, normals_kernel, philox4x32_10


@cuda.jit
def _words_kernel(counters, keys, out):
    """Row t of out = philox4x32_10(counters[t], keys[t]) and, next to it, counters[t] + t (counter_plus)."""
    t = cuda.grid(1)
    if t < out.shape[0]:
        x = philox4x32_10(np.uint64(counters[t, 0]), np.uint64(counters[t, 1]), np.uint64(counters[t, 2]),
                          np.uint64(counters[t, 3]), np.uint64(keys[t, 0]), np.uint64(keys[t, 1]))
        state = cuda.local.array(6, np.uint32)
        for j in range(4):
            state[2 + j] = counters[t, j]
        c = counter_plus(state, np.uint64(t))
        for j in range(4):
            out[t, j] = x[j]
            out[t, 4 + j] = c[j]


def test_device_words_and_counters_match_the_statement_bit_for_bit():
    rng = np.random.default_rng(0)
    counters = np.concatenate([np.array([c for c, _, _ in PHILOX_KNOWN_ANSWERS], np.uint32),
                               rng.integers(0, 2**32, (29, 4), dtype=np.uint32)])
    counters[3:6] = [2**32 - 1, 2**32 - 1, 2**32 - 1, 0]  # counter + t carries into the top word
    keys = np.concatenate([np.array([k for _, k, _ in PHILOX_KNOWN_ANSWERS], np.uint32),
                           rng.integers(0, 2**32, (29, 2), dtype=np.uint32)])
    out = np.zeros((32, 8), np.uint32)
    _words_kernel[1, 32](counters, keys, out)
    np.testing.assert_array_equal(out[:3, :4], np.array([w for _, _, w in PHILOX_KNOWN_ANSWERS], np.uint32))
    for t in range(32):
        np.testing.assert_array_equal(out[t, :4], philox.philox4x32_10(counters[t:t + 1], keys[t])[0])
        np.testing.assert_array_equal(out[t, 4:], philox.counters_at(counters[t], [t])[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (3,), (2, 5), (7, 13)])
def test_draw_matches_the_statement_and_advances_the_counter(dtype, shape):
    rng = numba_cuda.make_rng(2**33 + 9)
    rng.words[2] = 2**32 - 2  # the draw's counters carry into the next word
    before = rng.words.copy()
    got = numba_cuda.standard_normal(rng, shape, dtype)
    want, after = philox.standard_normal(before, int(np.prod(shape)), dtype)
    assert got.shape == shape and got.dtype == dtype
    np.testing.assert_allclose(got.ravel(), want, **PHILOX_TOLERANCE[dtype])
    np.testing.assert_array_equal(rng.words, after)


def test_replaying_the_same_launches_draws_new_numbers():
    """A CUDA graph replays a draw's two launches with the same arguments: the counter lives on the device."""
    state = numba_cuda.make_rng(5).words
    draws = []
    for _ in range(2):
        out = np.empty(6, np.float32)
        normals_kernel[1, numba_cuda.THREADS](state, out, 4)
        advance_kernel[1, 1](state, 2)
        draws.append(out)
    both, _ = philox.standard_normal(numba_cuda.make_rng(5).words, 16, np.float32)
    np.testing.assert_allclose(np.concatenate(draws), np.concatenate([both[:6], both[8:14]]), **PHILOX_TOLERANCE[np.float32])


def test_empty_draw_leaves_the_state_alone():
    rng = numba_cuda.make_rng(1)
    assert numba_cuda.standard_normal(rng, (0, 4)).shape == (0, 4)
    assert numba_cuda.rng_state(rng)["counter"] == [0, 0, 0, 0]


def test_state_is_json_values_and_restores_on_the_device():
    rng = numba_cuda.make_rng(3)
    numba_cuda.standard_normal(rng, (5,), np.float64)
    state = numba_cuda.rng_state(rng)
    assert state == {"generator": "Philox4x32-10", "key": [3, 0], "counter": [3, 0, 0, 0]}
    np.testing.assert_array_equal(numba_cuda.restore_rng(state).words, rng.words)
