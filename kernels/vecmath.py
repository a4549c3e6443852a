"""exp, log and log1p that numba's CPU loops can vectorize; a stand-in for ``math`` in compiled formulas.

``math.exp`` and friends compile to C library calls, which keep a numba loop
scalar (numba's SVML vector versions no longer work with llvmlite >= 0.45).
So for float32 this module writes exp, log and log1p as straight-line
arithmetic (bit tricks, a polynomial, branch-free selects for the edge
cases), which LLVM vectorizes like any other arithmetic.

``exp(x)``, ``log(x)`` and ``log1p(x)`` here are plain Python functions
(``math``'s); inside ``@njit`` code ``numba.extending.overload`` compiles them
to the float32 versions below (within 0.84 ulp of the exact value over every
float32, with NumPy's special values; ``tests/test_vecmath.py`` checks both),
and anything else to ``math``'s. The float32 versions are compiled on their
own with fused multiply-adds allowed (``fastmath={"contract"}``), so their
error does not depend on the calling loop's flags. The module also
re-exports the other ``math`` names the formulas of ``shared.py`` use, so
``numba_cpu`` can bind those formulas' ``math`` to it.

Measured errors, speeds and the alternatives tried: docs/performance.md.
After editing this file, delete ``kernels/__pycache__`` (numba's cache
checks only the kernel's own file).
"""
import math
from math import e, expm1, fabs, inf, isfinite, isinf, isnan, nan, pi, sqrt, tanh

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

__all__ = ["exp", "log", "log1p",  # below
           "e", "expm1", "fabs", "inf", "isfinite", "isinf", "isnan", "nan", "pi", "sqrt", "tanh"]  # math's

f32, i32 = np.float32, np.int32
FLOAT32_OPTIONS = {"fastmath": {"contract"}}  # a * b + c may be one fused multiply-add; nothing else changes
ZERO, HALF, ONE = f32(0), f32(0.5), f32(1)
INF = f32(np.inf)

# ln 2 split in two (Cody and Waite): LN2_HI has 9 significant bits, so n LN2_HI
# is exact for |n| < 2^15, and LN2_HI + LN2_LO is ln 2 within 2^-39.
LN2_HI, LN2_LO = f32(0.693359375), f32(-2.12194440e-4)


def exp(x):
    """e^x; compiled for float32 by ``_exp_f32`` (see ``_overload_exp``)."""
    return math.exp(x)


def log(x):
    """ln x; compiled for float32 by ``_log_f32`` (see ``_overload_log``)."""
    return math.log(x)


def log1p(x):
    """ln(1 + x); compiled for float32 by ``_log1p_f32`` (see ``_overload_log1p``)."""
    return math.log1p(x)


# ----- exp -----

LOG2E = f32(1.4426950408889634)
SHIFT = f32(1.5 * 2**23)  # y + SHIFT rounds y (|y| < 2^22) to an integer, held in the low mantissa bits
SHIFT_BITS = i32(SHIFT.view(np.int32))
EXP_LO, EXP_HI = f32(-150.0), f32(89.0)  # e^-150 < 2^-150 rounds to 0, e^89 > float32 max
# Cephes' expf: e^r ~ 1 + r + r^2 P(r) on |r| <= ln(2) / 2, P of degree 5.
EXP_P0, EXP_P1, EXP_P2, EXP_P3, EXP_P4, EXP_P5 = map(f32, (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
EXPONENT_BIAS, MANTISSA_BITS = i32(127), i32(23)


@register_jitable
def _float_bits(x):
    """The bits of float32 x as an int32."""
    return np.float32(x).view(np.int32)  # numba's .view wants a value it sees built as a NumPy scalar


@register_jitable
def _float_from_bits(bits):
    """The float32 whose bits are those of int32 ``bits``."""
    return np.int32(bits).view(np.float32)


@register_jitable
def _pow2(n):
    """2^n for int32 n in [-126, 127], built from its bits: biased exponent n + 127, mantissa 0."""
    return _float_from_bits((n + EXPONENT_BIAS) << MANTISSA_BITS)


def _exp_f32(x):
    """e^x = 2^n e^r for float32 x, n = round(x / ln 2), |r| <= ln(2) / 2; branch-free, at most 0.81 ulp off."""
    y = min(max(x, EXP_LO), EXP_HI)  # beyond the clamps e^x is 0 or inf anyway; nan passes max and min
    t = y * LOG2E + SHIFT  # adding SHIFT rounds x / ln 2 to an integer n (no libm floor) ...
    n = t - SHIFT
    k = i32(_float_bits(t) - SHIFT_BITS)  # ... held in t's low mantissa bits
    r = y - n * LN2_HI - n * LN2_LO  # n LN2_HI is exact and cancels the bulk of y
    r2 = r * r
    p = (EXP_P0 * r + EXP_P1) * r2 + (EXP_P2 * r + EXP_P3)  # Cephes' P(r) by Estrin's scheme
    p = p * r2 + (EXP_P4 * r + EXP_P5)
    a = ONE + r
    e_r = a + (p * r2 + ((ONE - a) + r))  # e^r = 1 + r + r^2 P(r), 1 + r's rounding error added back
    h = k >> i32(1)
    return e_r * _pow2(h) * _pow2(k - h)  # 2^n in two normal factors: n runs from -216 to 128


# ----- log -----

SMALLEST_NORMAL = f32(np.finfo(np.float32).smallest_normal)  # 2^-126
TWO25 = f32(2.0**25)
SUBNORMAL_SHIFT = i32(25 << 23)  # what multiplying by 2^25 adds to the bits
SQRT_HALF_BITS = i32(0x3F3504F3)  # bits of sqrt(1/2): where the mantissa range starts
EXPONENT_MASK = i32(-(1 << 23))  # 0xff800000: sign and exponent bits
NEG_INF, NAN = f32(-np.inf), f32(np.nan)
NEG_ZERO = f32(-0.0)  # y + (-0) is y for every y (y + (+0) is not, for y = -0): LLVM drops the add
# Cephes' logf: ln(1 + f) ~ f - f^2 / 2 + f^3 Q(f) on sqrt(1/2) - 1 <= f < sqrt(2) - 1, Q of degree 8.
LOG_Q0, LOG_Q1, LOG_Q2, LOG_Q3, LOG_Q4, LOG_Q5, LOG_Q6, LOG_Q7, LOG_Q8 = map(f32, (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))


def _log_f32(x):
    """ln x = k ln 2 + ln m for float32 x = 2^k m, m in [sqrt(1/2), sqrt(2)); branch-free, at most 0.83 ulp off."""
    tiny = x < SMALLEST_NORMAL  # a subnormal x is scaled by 2^25 into the normal range ...
    ix = _float_bits(x * TWO25 if tiny else x)
    ix = i32(ix - SUBNORMAL_SHIFT) if tiny else ix  # ... and the 25 taken back out of its exponent
    result = _log_bits(ix, NEG_ZERO)
    result = result if x < INF else x  # inf, nan
    result = result if x >= ZERO else NAN  # x < 0 (a nan x stays nan)
    return NEG_INF if x == ZERO else result  # +-0


@register_jitable(**FLOAT32_OPTIONS)
def _log_bits(ix, tail):
    """ln x + tail for the normal positive float32 x whose bits are ``ix``; ``tail`` is small beside ln x."""
    t = i32(ix - SQRT_HALF_BITS)  # k sits in t's exponent field (an m below sqrt(1/2) borrows from it)
    k = f32(t >> MANTISSA_BITS)
    f = _float_from_bits(ix - (t & EXPONENT_MASK)) - ONE  # m - 1, exact
    z = f * f
    q = (((LOG_Q0 * f + LOG_Q1) * z + (LOG_Q2 * f + LOG_Q3)) * (z * z)  # Cephes' Q(f) by Estrin's scheme
         + ((LOG_Q4 * f + LOG_Q5) * z + (LOG_Q6 * f + LOG_Q7)))
    q = q * f + LOG_Q8
    small = (q * f * z + (k * LN2_LO + tail)) - HALF * z  # ln(1 + f) = f - f^2 / 2 + f^3 Q(f): f carries the bulk
    return (f + small) + k * LN2_HI  # k LN2_HI is exact, added last


# ----- log1p -----

MINUS_ONE = f32(-1)


def _log1p_f32(x):
    """ln(1 + x) = ln u + ln(1 + c / u), u = 1 + x rounded, c its rounding error; at most 0.84 ulp off."""
    u = ONE + x
    c = x - (u - ONE)  # exact for -1 < x <= 2^24; beyond, off by < 0.03 ulp of the result
    result = _log_bits(_float_bits(u), c / u)  # ln(1 + c / u) ~ c / u: |c / u| <= 2^-24
    result = result if x < INF else x  # inf, nan
    result = result if x > MINUS_ONE else (NEG_INF if x == MINUS_ONE else NAN)
    return x if x == ZERO else result  # +-0 (the sum gives +0 for -0)


# ----- numba: float32 to the versions above, the rest to math -----
# Not inline="always": numba's IR inliner mishandles these selects when one loop calls them twice;
# LLVM inlines them into the loop anyway.

def _is_float32(x):
    """Whether numba type ``x`` is float32."""
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(exp, jit_options=FLOAT32_OPTIONS)
def _overload_exp(x):
    if _is_float32(x):
        return _exp_f32
    return lambda x: math.exp(x)


@overload(log, jit_options=FLOAT32_OPTIONS)
def _overload_log(x):
    if _is_float32(x):
        return _log_f32
    return lambda x: math.log(x)


@overload(log1p, jit_options=FLOAT32_OPTIONS)
def _overload_log1p(x):
    if _is_float32(x):
        return _log1p_f32
    return lambda x: math.log1p(x)
