"""vecmath's float32 exp, log and log1p against float64 truth, in ulps; its float64 path against libm; special values.

The truth is NumPy's float64 exp / log / log1p of the same float32 inputs:
its own error (under a float64 ulp) is 2^-29 of a float32 ulp. An error in
ulps is |got - truth| over the spacing of float32 numbers at the truth
(2^-149 for subnormal results). The bound asserted is the one the module
promises, 1 ulp; a scan of every float32 measured 0.81 (exp), 0.83 (log) and
0.84 (log1p).
"""
import ast
import inspect
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

from minivae.kernels import shared, vecmath

ULPS = 1.0
FLOAT32_MAX_ROUNDED = 3.4028235677973366e38  # float32 max + half an ulp: from here float32 rounds to inf


def _elementwise(function):
    """A compiled loop out[i] = function(x[i]), the way a kernel calls it."""
    @njit(error_model="numpy")
    def loop(x, out):
        for i in range(x.size):
            out[i] = function(x[i])
    return loop


_exp_loop, _log_loop, _log1p_loop = map(_elementwise, (vecmath.exp, vecmath.log, vecmath.log1p))
_libm_exp_loop, _libm_log_loop, _libm_log1p_loop = map(_elementwise, (math.exp, math.log, math.log1p))


def compiled(loop, x):
    out = np.empty_like(x)
    loop(x, out)
    return out


def float32_grid(step, negative=False):
    """Every ``step``-th float32 from +0 (or -0) to inf in bit order: each binade equally, subnormals included."""
    bits = np.arange(0, 0x7F800001, step, dtype=np.int64).astype(np.uint32)
    bits = np.append(bits, np.uint32(0x7F800000))  # and inf itself
    if negative:
        bits |= np.uint32(0x80000000)
    return bits.view(np.float32)


def ulps(got, truth):
    """|got - truth| in float32 ulps at the truth."""
    _, exponent = np.frexp(np.abs(truth))
    spacing = np.ldexp(1.0, np.where(truth == 0, -149, np.maximum(exponent - 24, -149)))
    return np.abs(got.astype(np.float64) - truth) / spacing


def assert_within_ulps(got, truth, x):
    """Finite truths within ULPS; a truth that float32 rounds to +-inf must come out inf."""
    overflow = np.abs(truth) >= FLOAT32_MAX_ROUNDED
    np.testing.assert_array_equal(got[overflow], np.copysign(np.float32(np.inf), truth[overflow]))
    error = ulps(got[~overflow], truth[~overflow])
    if error.size:
        worst = np.argmax(error)
        assert error[worst] <= ULPS, f"{error[worst]:.3f} ulps at x = {x[~overflow][worst]!r}"


# ----- exp -----

@pytest.mark.parametrize("negative", [False, True])
def test_exp_float32_within_one_ulp_over_every_binade(negative):
    x = float32_grid(997, negative)
    with np.errstate(over="ignore"):
        truth = np.exp(x.astype(np.float64))
    assert_within_ulps(compiled(_exp_loop, x), truth, x)


def test_exp_float32_within_one_ulp_where_results_underflow_and_overflow():
    """Dense over [-104, 89]: from results below the smallest subnormal, through subnormal ones, to inf."""
    x = np.linspace(-104, 89, 2_000_001, dtype=np.float32)
    x = np.concatenate([x, np.linspace(-103.98, -87.33, 500_001, dtype=np.float32),  # subnormal results
                        np.linspace(88.70, 88.75, 100_001, dtype=np.float32)])  # around float32 max
    got = compiled(_exp_loop, x)
    assert_within_ulps(got, np.exp(x.astype(np.float64)), x)
    overflows = x > np.log(FLOAT32_MAX_ROUNDED)
    assert (got[overflows] == np.inf).all() and np.isfinite(got[~overflows]).all()
    subnormal = got[(x > -103.97) & (x < -87.34)]
    assert (got[x < np.log(2.0**-150)] == 0).all() and (subnormal > 0).all() and (subnormal < 2.0**-126).all()


def test_exp_float32_special_values_are_numpys():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 88.8, 1e30, -104.0, -1e30,
                  np.finfo(np.float32).max, -np.finfo(np.float32).max], np.float32)
    with np.errstate(over="ignore", under="ignore"):
        expected = np.exp(x)
    got = compiled(_exp_loop, x)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32


# ----- log -----

def test_log_float32_within_one_ulp_over_every_binade():
    x = float32_grid(509)[1:]  # every positive float32 binade, subnormals included, and inf
    assert_within_ulps(compiled(_log_loop, x), np.log(x.astype(np.float64)), x)


def test_log_float32_within_one_ulp_near_one_and_among_subnormals():
    """Near 1 the result is near 0, so its ulp is tiny: the hardest place for a relative bound."""
    near_one = np.linspace(0.5, 2.0, 2_000_001, dtype=np.float32)
    subnormal = np.arange(1, 0x800000, 7, dtype=np.int32).view(np.float32)
    x = np.concatenate([near_one, [np.nextafter(np.float32(1), np.float32(0))], np.float32([1.0])
                        + np.arange(1, 1000, dtype=np.float32) * np.finfo(np.float32).eps, subnormal])
    assert_within_ulps(compiled(_log_loop, x), np.log(x.astype(np.float64)), x)
    assert compiled(_log_loop, np.float32([1.0]))[0] == 0


def test_log_float32_special_values_are_numpys():
    tiny = np.finfo(np.float32).smallest_subnormal
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -tiny, tiny, 1.0, np.finfo(np.float32).max],
                 np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.log(x)
    got = compiled(_log_loop, x)
    special = ~np.isfinite(expected) | (expected == 0)
    np.testing.assert_array_equal(got[special], expected[special])
    assert np.signbit(got[:2]).all()  # -inf for both zeros
    assert got.dtype == np.float32


# ----- log1p -----

def test_log1p_float32_within_one_ulp_over_every_binade():
    """Every binade of x > 0, subnormals included, and inf; and of -1 < x < 0, from -0 to the float32 above -1."""
    positive = float32_grid(509)
    negative = float32_grid(509, negative=True)
    x = np.concatenate([positive, negative[negative > -1], [np.nextafter(np.float32(-1), np.float32(0))]])
    assert_within_ulps(compiled(_log1p_loop, x), np.log1p(x.astype(np.float64)), x)


def test_log1p_float32_within_one_ulp_where_its_steps_change():
    """Dense where 1 + x rounds to 1 (|x| near 2^-24), where its exponent changes (1 + x near sqrt(1/2),
    sqrt(2), 2 and 2^24), and near -1, where 1 + x is tiny and the result large and negative."""
    eps = np.finfo(np.float32).eps  # 2^-23
    steps = np.arange(-20_000, 20_001, dtype=np.float32)
    x = np.concatenate([
        np.linspace(-1, 2, 3_000_001, dtype=np.float32)[1:],
        steps * eps / 1024,  # |x| up to 20 ulps of 1, in steps of 2^-33
        *(np.float32(a) + steps * np.spacing(np.float32(a))  # 20,000 neighbours either side
          for a in (np.sqrt(0.5) - 1, np.sqrt(2) - 1, 1, 2.0**24, 2.0**24 - 1)),
        np.float32(-1) + np.arange(1, 20_001, dtype=np.float32) * eps / 2,  # from the float32 above -1
    ])
    assert_within_ulps(compiled(_log1p_loop, x), np.log1p(x.astype(np.float64)), x)


def test_log1p_float32_tiny_x_is_x():
    """ln(1 + x) = x - x^2 / 2 + ...: below 2^-25 in magnitude the rounded result is x itself, subnormals too."""
    x = np.concatenate([float32_grid(4099)[:np.searchsorted(float32_grid(4099), 2.0**-25)],
                        np.arange(1, 0x800000, 997, dtype=np.int32).view(np.float32)])
    x = np.concatenate([x, -x])
    np.testing.assert_array_equal(compiled(_log1p_loop, x), x)


def test_log1p_float32_special_values_are_numpys():
    tiny = np.finfo(np.float32).smallest_subnormal
    big = np.finfo(np.float32).max
    x = np.array([0.0, -0.0, tiny, -tiny, np.inf, -np.inf, np.nan, -1.0, -2.0, -1.0000001, -big, big,
                  np.nextafter(np.float32(-1), np.float32(0)), 1.0, 1e-30, -1e-30], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.log1p(x)
    got = compiled(_log1p_loop, x)
    special = ~np.isfinite(expected) | (np.abs(x) < 1e-20)
    np.testing.assert_array_equal(got[special], expected[special])
    assert np.signbit(got[1]) and not np.signbit(got[0])  # -0 stays -0
    assert got.dtype == np.float32


# ----- Any float32, every function -----

@given(hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(width=32)))
def test_float32_property_within_one_ulp_or_numpys_special_value(x):
    with np.errstate(all="ignore"):
        for loop, truth, numpy_f32 in ((_exp_loop, np.exp, np.exp), (_log_loop, np.log, np.log),
                                       (_log1p_loop, np.log1p, np.log1p)):
            got = compiled(loop, x)
            expected = truth(x.astype(np.float64))
            special = ~np.isfinite(expected) | (x == 0)
            np.testing.assert_array_equal(got[special], numpy_f32(x[special]))
            assert_within_ulps(got[~special], expected[~special], x[~special])


# ----- float64 and plain Python: the C library itself -----

def test_float64_is_libm_exactly():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-750, 710, 100_000), rng.standard_normal(10_000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-310, 709.78, -745.2]])
    np.testing.assert_array_equal(compiled(_exp_loop, x), compiled(_libm_exp_loop, x))
    positive = np.concatenate([np.abs(x), np.exp(rng.uniform(-700, 700, 10_000))])
    np.testing.assert_array_equal(compiled(_log_loop, positive), compiled(_libm_log_loop, positive))
    above_minus_one = np.concatenate([x[x > -1], np.expm1(rng.uniform(-700, 700, 10_000)), [-1.0, -2.0]])
    np.testing.assert_array_equal(compiled(_log1p_loop, above_minus_one), compiled(_libm_log1p_loop, above_minus_one))
    sample = x[:500]
    np.testing.assert_array_equal(compiled(_exp_loop, sample), [math.exp(v) for v in sample])
    np.testing.assert_array_equal(compiled(_log_loop, positive[:500]), [math.log(v) for v in positive[:500]])
    sample = above_minus_one[np.isfinite(above_minus_one) & (above_minus_one > -1)][:500]
    np.testing.assert_array_equal(compiled(_log1p_loop, sample), [math.log1p(v) for v in sample])


def test_python_level_functions_are_maths():
    assert vecmath.exp(1.5) == math.exp(1.5) and vecmath.log(1.5) == math.log(1.5)
    assert vecmath.log1p(1e-20) == math.log1p(1e-20)
    assert vecmath.exp is not math.exp  # its own function, which numba's overload then targets


def test_vecmath_stands_in_for_math_in_every_shared_formula():
    """numba_cpu binds the formulas' ``math`` to vecmath: every ``math.name`` they use must be there."""
    used = {node.attr for node in ast.walk(ast.parse(inspect.getsource(shared)))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math"}
    assert used and not used - set(dir(vecmath)), used - set(dir(vecmath))
