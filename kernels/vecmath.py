"""exp, log and log1p that numba's CPU loops can vectorize; a stand-in for ``math`` in compiled formulas.

Why. ``math.exp``, ``math.log`` and ``math.log1p`` in a numba loop compile to
calls into the C library (``expf``, ``logf``, ``log1pf``). A call is opaque to
LLVM's loop vectorizer, so a loop with one in it runs one element at a time.
Numba used to hand such calls to Intel's SVML, which has vector versions;
with llvmlite >= 0.45 that no longer works (``numba -s``: "SVML Operational:
False"). So for float32 this module writes exp, log and log1p as
straight-line arithmetic (bit tricks, a polynomial, branch-free selects for
the edge cases), which LLVM vectorizes like any other arithmetic: 8 lanes per
AVX2 instruction.

How to use. ``exp(x)``, ``log(x)`` and ``log1p(x)`` here are plain Python
functions (``math.exp`` / ``math.log`` / ``math.log1p``); inside ``@njit``
code numba compiles them through ``numba.extending.overload``:

- float32: the polynomial versions below, at most 0.81 ulp (exp), 0.83 ulp
  (log) and 0.84 ulp (log1p) from the exact value, measured over every
  float32 (``tests/test_vecmath.py`` sweeps every binade, subnormals
  included), with the special values NumPy gives (exp: inf, 0, nan; log:
  -inf for +-0, nan below 0, inf, nan; log1p: -inf at -1, nan below, inf,
  nan, and x itself for +-0).
- float64 and anything else: ``math.exp`` / ``math.log`` / ``math.log1p``,
  the C library, which stays the reference precision (float64 is not the
  hot path).

The float32 versions are compiled on their own, with ``fastmath={"contract"}``
(a * b + c may become one fused multiply-add, rounded once; nothing else of
IEEE arithmetic changes), so their rounding, and the bounds above, do not
depend on the flags of the loop that calls them. (Without FMA hardware the
steps round separately: measured the same bounds to 0.01 ulp.) LLVM inlines
them into the calling loop, where they vectorize with it. They are not
inlined earlier, into numba's IR (``inline="always"``): numba's IR inliner
mishandles their selects when one loop calls them twice (it warns
"variable ... is not in scope").

The module also re-exports the other ``math`` functions the formulas of
``shared.py`` call, so ``numba_cpu`` can compile those formulas with their
``math`` global bound to this module.

Numba's on-disk cache (``cache=True``) checks only the file of each kernel:
after editing this file, delete ``kernels/__pycache__`` so the CPU kernels
recompile.
"""
import math
from math import e, expm1, fabs, inf, isfinite, isinf, isnan, nan, pi, sqrt, tanh

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

__all__ = ["exp", "log", "log1p",  # below
           "e", "expm1", "fabs", "inf", "isfinite", "isinf", "isnan", "nan", "pi", "sqrt", "tanh"]  # math's

f32, i32 = np.float32, np.int32
FLOAT32_OPTIONS = {"fastmath": {"contract"}}  # see "How to use" in the module docstring
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
    """e^x for float32 x, branch-free: at most 0.81 ulp from e^x (measured over every float32).

    e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2, |r| <= ln(2) / 2:

    - clamp x to [-150, 89] first, so n fits the steps below; the results at
      the clamps (0 and inf) are those of every x beyond them. Numba's
      ``max(x, lo)`` keeps Python's rule (the first argument unless another
      is larger), so nan passes the clamps and every step after it: nan out.
    - n by the shift trick: t = x / ln 2 + 1.5 * 2^23 leaves no bits below
      the units, so that float addition itself rounds to the nearest integer
      (``math.floor`` would be a libm call again, not vectorized), and the
      low mantissa bits of t hold n as an integer: n = bits(t) - bits(shift).
    - r = x - n LN2_HI - n LN2_LO: n LN2_HI is exact and cancels the bulk
      of x exactly, the small LN2_LO part adds the rest.
    - e^r = 1 + r + r^2 P(r) by Cephes' polynomial, P evaluated by Estrin's
      scheme (pairs in r, then in r^2: a shorter chain of dependent steps
      than Horner's, which lets more loop iterations overlap in the CPU;
      the Bernoulli log-likelihood loop ran 6% faster).
      The sum is compensated: a = 1 + r rounds, its rounding error
      (1 - a) + r is exact (Fast2Sum, |r| < 1) and joins the small term.
      Plain 1 + r + r^2 P(r) is 1.01 ulp off at worst, this 0.81.
    - times 2^n as two factors 2^h 2^(n - h), h = n >> 1, each a normal
      float32 built from its bits: n runs from -216 to 128, beyond one
      factor's exponent range. 2^h e^r is exact (a power-of-two scaling of
      a normal number), so a result in the subnormal range is rounded once,
      by the last product, and a result beyond float32 max overflows to inf
      there, as it should.
    """
    y = min(max(x, EXP_LO), EXP_HI)
    t = y * LOG2E + SHIFT
    n = t - SHIFT
    k = i32(_float_bits(t) - SHIFT_BITS)
    r = y - n * LN2_HI - n * LN2_LO
    r2 = r * r
    p = (EXP_P0 * r + EXP_P1) * r2 + (EXP_P2 * r + EXP_P3)
    p = p * r2 + (EXP_P4 * r + EXP_P5)
    a = ONE + r
    e_r = a + (p * r2 + ((ONE - a) + r))
    h = k >> i32(1)
    return e_r * _pow2(h) * _pow2(k - h)


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
    """ln x for float32 x, branch-free: at most 0.83 ulp from ln x (measured over every positive float32).

    ln x = k ln 2 + ln m with x = 2^k m, m in [sqrt(1/2), sqrt(2)):

    - subnormal x is first scaled by 2^25 into the normal range (the bits
      then take the 25 back out of the exponent);
    - then ``_log_bits`` does the rest for a normal positive x;
    - then selects for what the bits cannot say: -inf for +-0, nan for
      x < 0 and nan, inf for inf.
    """
    tiny = x < SMALLEST_NORMAL
    ix = _float_bits(x * TWO25 if tiny else x)
    ix = i32(ix - SUBNORMAL_SHIFT) if tiny else ix
    result = _log_bits(ix, NEG_ZERO)
    result = result if x < INF else x  # inf, nan
    result = result if x >= ZERO else NAN  # x < 0 (a nan x stays nan)
    return NEG_INF if x == ZERO else result  # +-0


@register_jitable(**FLOAT32_OPTIONS)
def _log_bits(ix, tail):
    """ln x + tail for the normal positive float32 x whose bits are ``ix``; ``tail`` is small beside ln x.

    - k and m from the bits: subtracting the bits of sqrt(1/2) from those
      of x leaves k in the exponent field (an arithmetic shift reads it; an
      m below sqrt(1/2) borrows from it, into the binade below), and taking
      k's exponent back out of x's bits leaves m.
    - ln m = ln(1 + f), f = m - 1 (exact), by Cephes' polynomial
      f - f^2 / 2 + f^3 Q(f), Q evaluated by Estrin's scheme. No division
      (FreeBSD's s = f / (2 + f) form needs one, and made the Bernoulli
      log-likelihood loop 5% slower); the exact f carries the bulk and the
      rounding errors sit in the small terms.
    - plus k ln 2, with ln 2 split in two (Cody-Waite) so k LN2_HI is exact
      and added last; ``tail`` joins the small terms.
    """
    t = i32(ix - SQRT_HALF_BITS)
    k = f32(t >> MANTISSA_BITS)
    f = _float_from_bits(ix - (t & EXPONENT_MASK)) - ONE
    z = f * f
    q = (((LOG_Q0 * f + LOG_Q1) * z + (LOG_Q2 * f + LOG_Q3)) * (z * z)
         + ((LOG_Q4 * f + LOG_Q5) * z + (LOG_Q6 * f + LOG_Q7)))
    q = q * f + LOG_Q8
    small = (q * f * z + (k * LN2_LO + tail)) - HALF * z
    return (f + small) + k * LN2_HI


# ----- log1p -----

MINUS_ONE = f32(-1)


def _log1p_f32(x):
    """ln(1 + x) for float32 x, branch-free: at most 0.84 ulp off (measured over every float32 x > -1).

    ln(1 + x) = ln(u + c) = ln u + ln(1 + c / u), u = 1 + x rounded:

    - c = x - (u - 1) is the rounding error of u: u - 1 is exact for
      -1 < x <= 2^24, and so is the difference, a few low bits of x (for
      |x| <= 1 this is Fast2Sum). Past 2^24, c may be off by 1, and c / u by
      1 / u < 2^-24, below 0.03 ulp of the result (ln u > 16).
    - ln(1 + c / u) = c / u - (c / u)^2 / 2 + ..., |c / u| <= 2^-24: the
      dropped square is at most 2^-49, near half an ulp only for results
      near 2^-24, where u = 1 and nothing else rounds. For |x| below 2^-25,
      u = 1 and c = x: the result is x itself, correctly rounded.
    - ln u by ``_log_bits``, log's own steps, with c / u as the tail: u is
      normal (at least 2^-24) wherever x > -1, so no subnormal scaling.
    - then selects for what the bits cannot say: inf for inf, nan for nan,
      -inf at -1, nan below -1, and x itself for +-0 (the sum gives +0 for
      -0).

    Why not ln(1 + x) = 2 atanh(s), s = x / (2 + x), a series in s^2, on x
    itself: without reducing 1 + x to a mantissa it needs ever more terms as
    x grows. On [0, 1] alone (the e of the Bernoulli log-likelihood) 7 terms
    do, and that loop of terms ran about 20% faster than with this function;
    but a log1p right only on [0, 1] would not be log1p. FreeBSD reduces
    first, as here, then uses the series (4 terms instead of Cephes' 9, one
    more division): that loop ran 5% slower than with this one.
    """
    u = ONE + x
    c = x - (u - ONE)
    result = _log_bits(_float_bits(u), c / u)
    result = result if x < INF else x  # inf, nan
    result = result if x > MINUS_ONE else (NEG_INF if x == MINUS_ONE else NAN)
    return x if x == ZERO else result  # +-0


# ----- numba: float32 to the versions above, the rest to math -----

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
