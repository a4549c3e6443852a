"""Hardening (issue 7): numerical extremes, the gradient checker in float32, the logvar clamp.

Faults and hostile input at the command line are in test_cli.py and
test_train.py; hostile files at the library level in test_data.py and
test_checkpoint.py. docs/reliability.md maps each case to its test.
"""
import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minivae import ops
from minivae.gradcheck import GradcheckError, check_grads
from minivae.ops import make_result
from minivae.tensor import Tensor

# ----- Numerical extremes: logits up to +-1e4, logvar from -50 to 50, against 40-digit mpmath -----
#
# Each result is compared with the exact value at the same (dtype-rounded)
# inputs. A sum of terms can only be as accurate as its largest terms allow,
# so its error is measured against the sum of the terms' sizes, in units of
# the dtype's epsilon; a single value against itself.

mpmath.mp.dps = 40
DTYPES = [np.float32, np.float64]
NO_FLOAT_WARNINGS = {"over": "raise", "divide": "raise", "invalid": "raise"}


def vectors(low, high):
    """1 to 8 numbers in [low, high]."""
    return hnp.arrays(np.float64, st.integers(1, 8), elements=st.floats(low, high))


LOGITS, LOGVARS = vectors(-1e4, 1e4), vectors(-50, 50)


def engine(fn, dtype, *arrays):
    """fn's value and its inputs' gradients (seeded with ones), run in ``dtype`` with float warnings as errors."""
    tensors = [Tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays]
    with np.errstate(**NO_FLOAT_WARNINGS):
        out = fn(*tensors)
        out.backward(np.ones(out.shape))
    assert out.dtype == dtype
    return out.numpy().astype(np.float64), [t.grad.astype(np.float64) for t in tensors]


def exact(fn, *arrays):
    """fn of mpmath numbers, elementwise over equal-length arrays, rounded to float64."""
    return np.array([float(fn(*map(mpmath.mpf, row))) for row in zip(*(a.tolist() for a in arrays))])


def rounded(array, dtype):
    """The inputs the engine really sees: ``array`` rounded to ``dtype``, held in float64."""
    return np.asarray(array, dtype=dtype).astype(np.float64)


def assert_accurate(out, truth, scale, dtype, ulps):
    """|out - truth| <= ulps * eps * scale, plus the smallest normal number for results that underflow."""
    finfo = np.finfo(dtype)
    assert np.isfinite(out).all()
    error = np.abs(out - truth)
    allowed = ulps * finfo.eps * np.asarray(scale) + finfo.smallest_normal
    assert (error <= allowed).all(), f"error {error} > allowed {allowed} (out {out}, exact {truth})"


def mp_sigmoid(a):
    return 1 / (1 + mpmath.exp(-a))


def mp_softplus(a):
    return mpmath.log1p(mpmath.exp(a))


@pytest.mark.parametrize("dtype", DTYPES)
@given(logits=LOGITS)
def test_softplus_and_sigmoid_are_accurate_to_a_few_ulps(dtype, logits):
    logits = rounded(logits, dtype)
    softplus, (d_softplus,) = engine(ops.softplus, dtype, logits)
    sigmoid, (d_sigmoid,) = engine(ops.sigmoid, dtype, logits)
    assert_accurate(softplus, exact(mp_softplus, logits), exact(mp_softplus, logits), dtype, ulps=2)
    assert_accurate(d_softplus, exact(mp_sigmoid, logits), exact(mp_sigmoid, logits), dtype, ulps=2)
    assert_accurate(sigmoid, exact(mp_sigmoid, logits), exact(mp_sigmoid, logits), dtype, ulps=2)
    # out (1 - out): relative accuracy for a < 0; for a > 0 the 1 - out step keeps eps / 4 absolute.
    d_exact = exact(lambda a: mp_sigmoid(a) * (1 - mp_sigmoid(a)), logits)
    assert_accurate(d_sigmoid, d_exact, np.maximum(d_exact, 0.25), dtype, ulps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_bernoulli_log_likelihood_from_logits(dtype, data):
    """sum(x l - softplus(l)), accurate relative to the size of its terms; dl = x - sigmoid(l) to a few eps."""
    logits = rounded(data.draw(LOGITS), dtype)
    x = rounded(data.draw(hnp.arrays(np.float64, logits.shape, elements=st.floats(0, 1))), dtype)
    out, (d_logits,) = engine(lambda l: ops.bernoulli_log_prob(x.astype(dtype), l), dtype, logits)
    terms = exact(lambda xj, lj: xj * lj - mp_softplus(lj), x, logits)
    sizes = exact(lambda xj, lj: abs(xj * lj) + mp_softplus(lj), x, logits)
    assert_accurate(out, [sum(terms)], sizes.sum(), dtype, ulps=2 * len(x))
    assert_accurate(d_logits, exact(lambda xj, lj: xj - mp_sigmoid(lj), x, logits), 1.0, dtype, ulps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(a=LOGITS)
def test_logsumexp(dtype, a):
    """ln sum e^a, within a few eps of (max |a| + ln n); the softmax gradient within eps (|a_i| + out) of itself."""
    a = rounded(a, dtype)
    out, (softmax,) = engine(lambda t: t.logsumexp(), dtype, a)
    lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in a.tolist()))
    assert_accurate(out, [float(lse)], np.abs(a).max() + np.log(len(a)) + 1, dtype, ulps=4)
    softmax_exact = exact(lambda v: mpmath.exp(v - lse), a)
    assert_accurate(softmax, softmax_exact, softmax_exact * (np.abs(a) + abs(float(lse)) + 1), dtype, ulps=4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_kl_standard_normal(dtype, data):
    """-1/2 sum(1 + lv - mu^2 - e^lv), relative to the size of its terms; d/dlv = (e^lv - 1) / 2 to a few ulps."""
    logvar = rounded(data.draw(LOGVARS), dtype)
    mu = rounded(data.draw(hnp.arrays(np.float64, logvar.shape, elements=st.floats(-100, 100))), dtype)
    out, (d_mu, d_logvar) = engine(lambda m, lv: ops.kl_normal(m.reshape(1, -1), lv.reshape(1, -1)), dtype,
                                   mu, logvar)
    terms = exact(lambda m, lv: -(1 + lv - m * m - mpmath.exp(lv)) / 2, mu, logvar)
    sizes = exact(lambda m, lv: (1 + abs(lv) + m * m + mpmath.exp(lv)) / 2, mu, logvar)
    assert_accurate(out, [sum(terms)], sizes.sum(), dtype, ulps=2 * len(mu) + 2)
    np.testing.assert_array_equal(d_mu, mu)
    d_exact = exact(lambda lv: mpmath.expm1(lv) / 2, logvar)
    assert_accurate(d_logvar, d_exact, np.abs(d_exact), dtype, ulps=2)


# ----- The gradient checker under stress: float32 -----

def half_expm1_minus_identity(backward_formula):
    """A primitive out = (e^a - 1 - a) / 2 whose backward computes (e^a - 1) / 2 by ``backward_formula``."""
    def primitive(a):
        def backward(g):
            return (g * backward_formula(a.data) / 2,)
        return make_result((np.expm1(a.data) - a.data) / 2, (a,), backward, backward_formula.__name__)
    return primitive


def cancelling(a):
    """e^a - 1 as written: for |a| ~ 1e-4 the subtraction keeps only the last few digits of e^a."""
    return np.exp(a) - 1


SMALL = np.random.default_rng(0).uniform(-1e-4, 1e-4, 6)


@pytest.mark.parametrize("formula", [np.expm1, cancelling], ids=["expm1", "exp-1"])
def test_float64_cannot_tell_a_cancelling_backward_from_a_careful_one(formula):
    report = check_grads(half_expm1_minus_identity(formula), SMALL)
    assert report.dtype == "float64" and report.max_rel_error < 1e-6


def test_float32_reports_the_gradient_that_loses_its_digits():
    careful = check_grads(half_expm1_minus_identity(np.expm1), SMALL, dtype=np.float32, rtol=1e-4)
    assert careful.dtype == "float32" and careful.max_rel_error < 1e-6
    with pytest.raises(GradcheckError, match=r"exp-1, argument 0, index \(\d,\).*"
                                             r"\(float32 engine vs float64 differences\) .*rel error 0\.00"):
        check_grads(half_expm1_minus_identity(cancelling), SMALL, dtype=np.float32, rtol=1e-4, name="exp-1")


def test_float32_report_measures_float32_rounding_of_a_right_gradient():
    """A right gradient in float32 is off by float32 rounding (1e-7..1e-5), not by float64's 1e-9."""
    x = np.random.default_rng(1).standard_normal((3, 4))
    single = check_grads(lambda a: (a * a).tanh().sum(axis=1).exp(), x, dtype=np.float32, rtol=1e-4)
    double = check_grads(lambda a: (a * a).tanh().sum(axis=1).exp(), x)
    assert 1e-9 < single.max_rel_error < 1e-4 and double.max_rel_error < 1e-8
