"""check_grads itself: it passes right gradients, and names the place of a wrong one."""
import re

import numpy as np
import pytest

from minivae.gradcheck import GradcheckError, check_grads
from minivae.ops import make_result

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal(4)
W = RNG.standard_normal((30, 5))


def doubled_at_1_2(a, b):
    """out = a * b, whose backward gives b twice its true gradient at index (1, 2) only."""
    def backward(g):
        grad_b = g * a.data
        grad_b[1, 2] *= 2
        return g * b.data, grad_b
    return make_result(a.data * b.data, (a, b), backward, "doubled_at_1_2")


def square_off_by(relative, absolute=0.0):
    """A primitive out = a^2 whose backward is off: 2 g a (1 + relative) + g absolute."""
    def square(a):
        def backward(g):
            return (2 * g * a.data * (1 + relative) + g * absolute,)
        return make_result(a.data * a.data, (a,), backward, "square")
    return square


def numbers_in(message):
    """The analytic and numeric values a GradcheckError reports."""
    found = re.search(r"analytic (\S+) vs numeric (\S+) ", message)
    assert found, message
    return float(found.group(1)), float(found.group(2))


def test_right_gradients_pass_element_by_element():
    report = check_grads(lambda a, b: (a * b).tanh() + b, X, Y)
    assert [(r.mode, r.checks) for r in report.inputs] == [("elementwise", 12), ("elementwise", 4)]
    assert report.max_rel_error < 1e-6


def test_large_inputs_are_checked_along_random_directions():
    x = RNG.standard_normal((20, 30))
    report = check_grads(lambda a: (a @ W).tanh(), x, projections=3)
    (only,) = report.inputs
    assert (only.mode, only.checks, only.shape) == ("projection", 3, (20, 30))
    assert report.max_rel_error < 1e-6


def test_a_wrong_gradient_names_function_argument_index_and_values():
    x = RNG.standard_normal((2, 3))
    with pytest.raises(GradcheckError) as raised:
        check_grads(doubled_at_1_2, x, x + 1)
    message = str(raised.value)
    assert "doubled_at_1_2, argument 1, index (1, 2):" in message
    analytic, numeric = numbers_in(message)
    assert analytic == pytest.approx(2 * numeric, rel=1e-6)


def test_a_wrong_gradient_is_caught_along_random_directions():
    x = RNG.standard_normal((10, 10))
    with pytest.raises(GradcheckError, match="argument 0, index random direction 0"):
        check_grads(square_off_by(0.5), x, max_elementwise=50)


def test_float32_results_are_refused_with_the_reason():
    with pytest.raises(GradcheckError, match="float32.*float64"):
        check_grads(lambda a: a.astype(np.float32), X)


def test_a_function_returning_no_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="ndarray, not a Tensor"):
        check_grads(lambda a: a.numpy(), X)


def test_relative_tolerance_is_honoured():
    slightly_off = square_off_by(1e-4)
    report = check_grads(slightly_off, X, rtol=1e-3)
    assert 5e-5 < report.max_rel_error < 2e-4
    with pytest.raises(GradcheckError, match="allowed 1e-08 \\+ 1e-06"):
        check_grads(slightly_off, X, rtol=1e-6)


def test_absolute_tolerance_is_honoured():
    offset = square_off_by(0.0, absolute=1e-6)
    x = np.zeros((2, 2))  # true gradient 0: only atol can absorb the offset
    check_grads(offset, x, rtol=0.0, atol=1e-5)
    with pytest.raises(GradcheckError):
        check_grads(offset, x, rtol=0.0, atol=1e-7)

