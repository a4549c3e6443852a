"""Check the engine's gradients against central finite differences in float64.

For f: R^n -> R^m and a random direction u in R^m, let L(x) = <u, f(x)>.
The engine's backward, seeded with u, gives grad L = J^T u. A central
difference gives the same quantity along a direction v:

    <J^T u, v>  ~=  (L(x + h v) - L(x - h v)) / (2 h),   error O(h^2).

Small inputs are checked element by element (v = each unit vector), large
ones along a few random directions (HIPS/autograd's ``check_grads`` does the
same). Two numbers a (analytic) and n (numeric) agree when
``|a - n| <= atol + rtol * max(|a|, |n|)``.

Tolerances. In float64 the difference quotient carries a truncation error
near h^2 = 1e-12 and a rounding error near 1e-16 / h = 1e-10 (relative), so
a right gradient agrees to about 1e-9: the default rtol 1e-5 leaves room for
ill-conditioned functions while a wrong formula (off by a factor, a sign, an
index) misses by far more; atol 1e-8 absorbs gradients that are exactly 0.

Precision. ``dtype=np.float32`` runs the engine's forward and backward in
float32 and compares them with the same float64 finite differences (float32
differences would drown in rounding), at the same float32-rounded inputs.
Each float32 operation rounds at about 6e-8 relative, so a well-conditioned
float32 gradient agrees to about 1e-6 and rtol 1e-4 is a fair bound; a
backward that cancels (``exp(a) - 1`` for small a, where ``expm1(a)`` keeps
the digits) loses far more, and the check reports it instead of hiding it.
"""
from dataclasses import dataclass, field

import numpy as np

from minivae.backend import get_backend
from minivae.tensor import Tensor


class GradcheckError(AssertionError):
    """The engine's gradient and the finite difference disagree; the message says where."""


@dataclass
class InputReport:
    """How one input's gradient compared: the worst absolute and relative errors."""
    argument: int
    shape: tuple
    mode: str
    checks: int
    max_abs_error: float
    max_rel_error: float


@dataclass
class GradcheckReport:
    name: str
    dtype: str = "float64"
    inputs: list = field(default_factory=list)

    @property
    def max_abs_error(self):
        return max((r.max_abs_error for r in self.inputs), default=0.0)

    @property
    def max_rel_error(self):
        return max((r.max_rel_error for r in self.inputs), default=0.0)


def check_grads(f, *inputs, eps=1e-6, rtol=1e-5, atol=1e-8, max_elementwise=64,
                projections=4, seed=0, name=None, dtype=np.float64):
    """Verify d f / d input for every input of ``f``; return a report, raise ``GradcheckError`` on a mismatch.

    ``f`` takes Tensors (one per input, requiring grad) and returns a Tensor
    of their dtype: ``dtype`` for the engine's pass, float64 for the finite
    differences. Inputs with at most ``max_elementwise``
    elements are checked at every index; larger ones along ``projections``
    random directions. ``dtype`` is the engine's precision (float64, or
    float32 to measure what float32 costs; see the module docstring for the
    tolerances each needs); the finite differences are always float64.
    """
    name = name or getattr(f, "__name__", "f")
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    # Round the inputs to dtype first, so the engine and the differences see the same point.
    arrays = [np.array(x.numpy() if isinstance(x, Tensor) else x, dtype=dtype).astype(np.float64)
              for x in inputs]
    u, analytic = _engine_gradients(f, arrays, rng, name, dtype)
    report = GradcheckReport(name, dtype.name)
    for argument, (array, grad) in enumerate(zip(arrays, analytic)):
        directions = _directions(array, max_elementwise, projections, rng)
        errors = []
        for where, v in directions:
            numeric = _central_difference(f, arrays, argument, v, u, eps)
            exact = float(np.sum(grad * v))
            errors.append(_compare(name, argument, where, exact, numeric, rtol, atol, dtype))
        mode = "elementwise" if array.size <= max_elementwise else "projection"
        abs_errors, rel_errors = zip(*errors) if errors else ((0.0,), (0.0,))
        report.inputs.append(InputReport(argument, array.shape, mode, len(errors),
                                         max(abs_errors), max(rel_errors)))
    return report


def _evaluate(f, arrays, name, dtype=np.float64):
    """f at ``dtype`` copies of the inputs, each a Tensor requiring grad."""
    tensors = [Tensor(get_backend().xp.asarray(a), requires_grad=True, dtype=dtype) for a in arrays]
    out = f(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"check_grads: {name} returned {type(out).__name__}, not a Tensor")
    if out.dtype != dtype:
        raise GradcheckError(
            f"check_grads: {name} returned {out.dtype} for {np.dtype(dtype).name} inputs; the check needs "
            f"{np.dtype(dtype).name} throughout (build its parameters and constants in that dtype)")
    return tensors, out


def _engine_gradients(f, arrays, rng, name, dtype):
    """A random output direction u, and J^T u for each input, from one backward pass in ``dtype``."""
    tensors, out = _evaluate(f, arrays, name, dtype)
    u = rng.standard_normal(out.shape).astype(dtype).astype(np.float64)  # the same u for both sides
    if out.requires_grad:
        out.backward(u)
    return u, [np.zeros_like(a) if t.grad is None else get_backend().asnumpy(t.grad).astype(np.float64)
               for t, a in zip(tensors, arrays)]


def _directions(array, max_elementwise, projections, rng):
    """Unit vectors at every index (small inputs) or random unit directions (large ones)."""
    if array.size <= max_elementwise:
        for flat in range(array.size):
            v = np.zeros(array.shape)
            v.flat[flat] = 1.0
            yield tuple(int(i) for i in np.unravel_index(flat, array.shape)), v
    else:
        for k in range(projections):
            v = rng.standard_normal(array.shape)
            yield f"random direction {k}", v / np.linalg.norm(v)


def _central_difference(f, arrays, argument, v, u, eps):
    """(L(x + h v) - L(x - h v)) / 2h with L = <u, f>, moving only input ``argument``."""
    def objective(sign):
        moved = list(arrays)
        moved[argument] = arrays[argument] + sign * eps * v
        _, out = _evaluate(f, moved, "f")
        return float(np.sum(u * out.numpy()))
    return (objective(+1) - objective(-1)) / (2 * eps)


def _compare(name, argument, where, exact, numeric, rtol, atol, dtype):
    """The absolute and relative error, or a GradcheckError naming the place (and a float32 engine)."""
    abs_error = abs(exact - numeric)
    scale = max(abs(exact), abs(numeric))
    rel_error = abs_error / scale if scale > 0 else 0.0
    if not abs_error <= atol + rtol * scale:
        engine = "" if dtype == np.float64 else f" ({dtype.name} engine vs float64 differences)"
        raise GradcheckError(
            f"check_grads: {name}, argument {argument}, index {where}: analytic {exact:.10g} vs "
            f"numeric {numeric:.10g}{engine} (abs error {abs_error:.3g}, rel error {rel_error:.3g}; "
            f"allowed {atol:g} + {rtol:g} * {scale:.3g})")
    return abs_error, rel_error
