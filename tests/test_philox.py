"""Philox4x32-10: the NumPy statement (kernels/philox.py) against Random123's published answers, and the CUDA C
twin (kernels/philox.cuh) built as host C++ with g++ and compared with it through ctypes, bit for bit.

The numba-cuda kernels are compared with the same statement under the simulator (cudasim/test_philox_cuda.py).
"""
import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import minivae.kernels
from checkpoint_files import altered
from kernel_cases import PHILOX_KNOWN_ANSWERS, PHILOX_TOLERANCE
from minivae.errors import MinivaeError
from minivae.kernels import philox
from runs import assert_one_line_error, reference_checkpoint, run_cli, train_argv

KERNEL_DIR = Path(minivae.kernels.__file__).parent


def words(values):
    return np.array(values, np.uint32)


def random_state(seed):
    """A state with random key and counter words, the counter's low word near its wrap so draws carry."""
    state = np.random.default_rng(seed).integers(0, 2**32, 6, dtype=np.uint32)
    state[2] = 2**32 - 5
    return state


# ----- The NumPy statement -----

@pytest.mark.parametrize("counter, key, expected", PHILOX_KNOWN_ANSWERS)
def test_statement_gives_random123s_known_answers(counter, key, expected):
    np.testing.assert_array_equal(philox.philox4x32_10(words([counter]), words(key)), words([expected]))


def test_counters_carry_across_all_four_words():
    got = philox.counters_at(words([2**32 - 1, 2**32 - 1, 2**32 - 1, 7]), [0, 1, 2**32, 2**64 - 1])
    expected = [[2**32 - 1, 2**32 - 1, 2**32 - 1, 7], [0, 0, 0, 8], [2**32 - 1, 0, 0, 8], [2**32 - 2, 2**32 - 1, 0, 8]]
    np.testing.assert_array_equal(got, words(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniforms_are_exact_and_never_zero(dtype):
    extremes = words([[0, 0, 0xFFFFFFFF, 0xFFFFFFFF]])
    u = philox.uniforms(extremes, dtype)
    smallest = 2.0**-24 if dtype == np.float32 else 2.0**-53
    assert u.dtype == dtype and u.min() == smallest and u.max() == 1.0
    assert np.isfinite(philox.box_muller(u)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_draw_is_normal_and_advances_the_counter_by_its_calls(dtype):
    state = random_state(0)
    n = 100_001
    z, after = philox.standard_normal(state, n, dtype)
    calls = -(-n // philox.PER_CALL[np.dtype(dtype)])
    assert z.shape == (n,) and z.dtype == dtype
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.var() - 1) < 4 * np.sqrt(2 / (n - 1))
    np.testing.assert_array_equal(after[philox.KEY], state[philox.KEY])
    np.testing.assert_array_equal(after[philox.COUNTER], philox.counters_at(state[philox.COUNTER], [calls])[0])


def test_consecutive_draws_continue_one_stream():
    """Two draws of 4 float32 normals each are the one draw of 8: each call's outputs are used once."""
    state = random_state(1)
    first, middle = philox.standard_normal(state, 4, np.float32)
    second, _ = philox.standard_normal(middle, 4, np.float32)
    both, _ = philox.standard_normal(state, 8, np.float32)
    np.testing.assert_array_equal(np.concatenate([first, second]), both)


# ----- Seeding and the state a checkpoint keeps -----

def test_seed_is_the_key_and_the_state_is_json():
    rng = philox.new_rng(2**40 + 3, np)
    state = json.loads(json.dumps(philox.state_of(rng.words)))
    assert state == {"generator": "Philox4x32-10", "key": [3, 2**8], "counter": [0, 0, 0, 0]}
    np.testing.assert_array_equal(philox.words_of(state), rng.words)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "7"])
def test_bad_seed_is_refused_in_one_line(seed):
    with pytest.raises(MinivaeError, match="a random seed is an integer from 0 to 2\\^64 - 1"):
        philox.new_rng(seed, np)


@pytest.mark.parametrize("state, fragment", [
    ({"bit_generator": "PCG64", "state": {}}, "random state is from generator 'PCG64', not Philox4x32-10"),
    ({"generator": "xoroshiro128+"}, "generator 'xoroshiro128+'"),
    (None, "generator None"),
    ({"generator": "Philox4x32-10", "key": [1, 2], "counter": [0, 0, 0]}, "counter of 4 integers"),
    ({"generator": "Philox4x32-10", "key": [1, 2**32], "counter": [0, 0, 0, 0]}, "damaged"),
    ({"generator": "Philox4x32-10", "key": [1, True], "counter": [0, 0, 0, 0]}, "damaged"),
])
def test_restoring_a_state_philox_did_not_write_is_refused_in_one_line(state, fragment):
    with pytest.raises(MinivaeError, match=fragment.replace("(", "\\(").replace("+", "\\+")) as info:
        philox.words_of(state)
    assert "\n" not in str(info.value)


def test_checked_refuses_a_numpy_generator():
    with pytest.raises(TypeError, match="DeviceRNG, got Generator.*make_rng"):
        philox.checked(np.random.default_rng(0), "cupy")


# ----- philox.cuh as host C++, through ctypes -----

SHIM = """#include "philox.cuh"
extern "C" void philox_words(const unsigned int* counters, const unsigned int* key, unsigned int* out, long long n) {
    for (long long i = 0; i < n; ++i) {
        mv_words4 c = {{counters[4 * i], counters[4 * i + 1], counters[4 * i + 2], counters[4 * i + 3]}};
        mv_words4 x = mv_philox4x32_10(c, key[0], key[1]);
        for (int j = 0; j < 4; ++j) out[4 * i + j] = x.v[j];
    }
}
extern "C" void counter_plus(const unsigned int* counter, unsigned long long t, unsigned int* out) {
    mv_words4 sum = mv_counter_plus(counter, t);
    for (int j = 0; j < 4; ++j) out[j] = sum.v[j];
}
extern "C" void normals_f32(const unsigned int* state, float* out, long long n) {
    for (long long t = 0; 4 * t < n; ++t) mv_philox_normals(state, t, out, n);
}
extern "C" void normals_f64(const unsigned int* state, double* out, long long n) {
    for (long long t = 0; 2 * t < n; ++t) mv_philox_normals(state, t, out, n);
}
"""


@pytest.fixture(scope="module")
def host_philox(tmp_path_factory):
    """philox.cuh compiled as host C++ by g++ into a shared library, loaded with ctypes."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not on PATH: install it to check philox.cuh on the host")
    build = tmp_path_factory.mktemp("philox")
    (build / "shim.cpp").write_text(SHIM)
    cmd = [gxx, "-O2", "-shared", "-fPIC", f"-I{KERNEL_DIR}", "-o", str(build / "philox.so"), str(build / "shim.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr}"
    return ctypes.CDLL(str(build / "philox.so"))


def pointer(array):
    return array.ctypes.data_as(ctypes.c_void_p)


def test_host_cuh_gives_the_statements_words_bit_for_bit(host_philox):
    rng = np.random.default_rng(2)
    counters = np.concatenate([words([c for c, _, _ in PHILOX_KNOWN_ANSWERS]),
                               rng.integers(0, 2**32, (997, 4), dtype=np.uint32)])
    for key in [words(k) for _, k, _ in PHILOX_KNOWN_ANSWERS]:
        out = np.empty_like(counters)
        host_philox.philox_words(pointer(counters), pointer(key), pointer(out), ctypes.c_longlong(len(counters)))
        np.testing.assert_array_equal(out, philox.philox4x32_10(counters, key))


@pytest.mark.parametrize("t", [0, 1, 5, 2**32 - 1, 2**63 + 2**32 + 7])
def test_host_cuh_counter_plus_carries_like_the_statement(host_philox, t):
    counter = words([2**32 - 3, 2**32 - 1, 2**32 - 1, 0])
    out = np.empty(4, np.uint32)
    host_philox.counter_plus(pointer(counter), ctypes.c_ulonglong(t), pointer(out))
    np.testing.assert_array_equal(out, philox.counters_at(counter, [t])[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 4001])
def test_host_cuh_normals_match_the_statement(host_philox, dtype, n):
    state = random_state(3)
    out = np.full(n + 1, np.nan, dtype)  # one guard element past the end
    draw = host_philox.normals_f32 if dtype == np.float32 else host_philox.normals_f64
    draw(pointer(state), pointer(out), ctypes.c_longlong(n))
    assert np.isnan(out[n]), "wrote past the draw"
    np.testing.assert_allclose(out[:n], philox.standard_normal(state, n, dtype)[0], **PHILOX_TOLERANCE[dtype])


# ----- A checkpoint keeps the state in its JSON metadata -----

def test_a_checkpoint_holding_an_older_gpu_generators_states_is_refused_in_one_line(tmp_path, tmp_path_factory,
                                                                                    capsys):
    """Checkpoints of the generators before Philox kept their states as arrays under rng/ (xoroshiro128+ here)."""
    def older_generator(arrays, meta):
        arrays["rng/sample/states"] = np.zeros((32, 2), np.uint64)
        meta["backend"], meta["rng"]["sample"] = "numba-cuda", {"generator": "xoroshiro128+"}

    (tmp_path / "run").mkdir()
    older = altered(reference_checkpoint(tmp_path_factory, 1), tmp_path / "run" / "checkpoint.npz", older_generator)
    status, _, err = run_cli(train_argv(tmp_path / "run", 2, "--resume", str(older)), capsys)
    assert_one_line_error(status, err, "holds the states of a GPU generator this minivae no longer has",
                          "train the run again")
