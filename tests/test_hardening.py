"""Hardening (issue 7): numerical extremes, the gradient checker in float32, the logvar clamp.

Faults and hostile input at the command line are in test_cli.py and
test_train.py; hostile files at the library level in test_data.py and
test_checkpoint.py. docs/reliability.md maps each case to its test.
"""
import numpy as np
import pytest

from minivae.gradcheck import GradcheckError, check_grads
from minivae.ops import make_result


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
