"""The primitives: each forward, and right below it the backward it records.

A backward receives ``g = dL/d(out)`` and returns one gradient per input
(``None`` where an input takes none), each the vector-Jacobian product
``g^T (d out / d input)``. It computes only the gradients of inputs that
require one (``t.requires_grad``): a constant, like the data or the ``n`` a
mean divides by, costs nothing backward. Binary operations broadcast like NumPy, and
``unbroadcast`` sums each gradient back to its input's shape.

Everything here computes with the active backend's array module ``xp``.
The hot paths (matrix products, bias plus activation, the reparameterized
sample, the KL and the log-likelihoods) run the backend's kernels instead;
they are in ``kernel_ops.py`` and imported at the end, so ``ops`` is the one
place to call every primitive from. This file never imports numba or cupy.
"""
import itertools
import math
import numbers

import numpy as np

from minivae.backend import get_backend
from minivae.kernels import reference
from minivae.tensor import ShapeError, Tensor, is_grad_enabled


def array_module():
    """The active backend's array module: numpy, or cupy on a GPU."""
    return get_backend().xp


def as_tensor(value):
    """A Tensor as it is; a number or array wrapped as a constant."""
    return value if isinstance(value, Tensor) else Tensor(value)


def make_result(data, parents, backward, op):
    """A new tensor; it records its parents only when a gradient can flow to them."""
    out = Tensor(data)
    if is_grad_enabled() and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
        out._op = op
    return out


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, giving ``shape``."""
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _broadcast_operands(op, a, b):
    """Both operands as tensors (a plain number becomes a scalar of the other's dtype); one line if shapes clash.

    The number stays a NumPy scalar, not an array: a constant such as the n a
    mean divides by is a kernel argument, never copied to a device.
    """
    if isinstance(a, numbers.Number) and isinstance(b, Tensor):
        a = Tensor(b.dtype.type(a), dtype=b.dtype)
    if isinstance(b, numbers.Number) and isinstance(a, Tensor):
        b = Tensor(a.dtype.type(b), dtype=a.dtype)
    a, b = as_tensor(a), as_tensor(b)
    if not _broadcastable(a.shape, b.shape):
        raise ShapeError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast")
    return a, b


def _broadcastable(shape_a, shape_b):
    """NumPy's rule, read from the last axis: each pair of sizes is equal or one of them is 1 (plain Python: fast)."""
    return shape_a == shape_b or all(m == n or m == 1 or n == 1
                                     for m, n in zip(reversed(shape_a), reversed(shape_b)))


def _normalize_axes(axis, ndim):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ShapeError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(ax % ndim for ax in axes))


def _expand_reduced(g, axes, keepdims):
    """Put back the reduced axes (as size 1) so ``g`` broadcasts against the input."""
    return g if keepdims else array_module().expand_dims(g, axes)


# ----- Simple grads: arithmetic -----

def add(a, b):
    """out = a + b;  da = g, db = g (summed over broadcast axes)."""
    a, b = _broadcast_operands("add", a, b)

    def backward(g):
        return (unbroadcast(g, a.shape) if a.requires_grad else None,
                unbroadcast(g, b.shape) if b.requires_grad else None)
    return make_result(a.data + b.data, (a, b), backward, "add")


def neg(a):
    """out = -a;  da = -g."""
    a = as_tensor(a)

    def backward(g):
        return (-g,)
    return make_result(-a.data, (a,), backward, "neg")


def sub(a, b):
    """out = a - b, built as a + (-b): no backward of its own."""
    a, b = _broadcast_operands("sub", a, b)
    return add(a, neg(b))


def mul(a, b):
    """out = a * b;  da = g * b, db = g * a."""
    a, b = _broadcast_operands("mul", a, b)

    def backward(g):
        return (unbroadcast(g * b.data, a.shape) if a.requires_grad else None,
                unbroadcast(g * a.data, b.shape) if b.requires_grad else None)
    return make_result(a.data * b.data, (a, b), backward, "mul")


def div(a, b):
    """out = a / b;  da = g / b, db = -g * a / b^2."""
    a, b = _broadcast_operands("div", a, b)

    def backward(g):
        return (unbroadcast(g / b.data, a.shape) if a.requires_grad else None,
                unbroadcast(-g * a.data / (b.data * b.data), b.shape) if b.requires_grad else None)
    return make_result(a.data / b.data, (a, b), backward, "div")


def power(a, exponent):
    """out = a^p for a number p;  da = g * p * a^(p - 1)."""
    a = as_tensor(a)
    if not isinstance(exponent, numbers.Real):
        raise TypeError("power: the exponent must be a Python number; for a tensor exponent "
                        "use exp(p * log(a))")

    def backward(g):
        return (g * exponent * a.data ** (exponent - 1),)
    return make_result(a.data ** exponent, (a,), backward, "pow")


def square(a):
    """out = a^2;  da = 2 g a."""
    a = as_tensor(a)

    def backward(g):
        return (2 * g * a.data,)
    return make_result(a.data * a.data, (a,), backward, "square")


# ----- Simple grads: elementwise functions -----

def exp(a):
    """out = e^a;  da = g * out."""
    a = as_tensor(a)
    out = array_module().exp(a.data)

    def backward(g):
        return (g * out,)
    return make_result(out, (a,), backward, "exp")


def log(a):
    """out = ln a;  da = g / a."""
    a = as_tensor(a)

    def backward(g):
        return (g / a.data,)
    return make_result(array_module().log(a.data), (a,), backward, "log")


def log1p(a):
    """out = ln(1 + a), accurate for small a;  da = g / (1 + a)."""
    a = as_tensor(a)

    def backward(g):
        return (g / (1 + a.data),)
    return make_result(array_module().log1p(a.data), (a,), backward, "log1p")


def sqrt(a):
    """out = sqrt(a);  da = g / (2 out)."""
    a = as_tensor(a)
    out = array_module().sqrt(a.data)

    def backward(g):
        return (g / (2 * out),)
    return make_result(out, (a,), backward, "sqrt")


def absolute(a):
    """out = |a|;  da = g * sign(a)  (0 at a = 0)."""
    a = as_tensor(a)

    def backward(g):
        return (g * array_module().sign(a.data),)
    return make_result(array_module().abs(a.data), (a,), backward, "abs")


def tanh(a):
    """out = tanh a;  da = g * (1 - out^2)."""
    a = as_tensor(a)
    out = array_module().tanh(a.data)

    def backward(g):
        return (g * (1 - out * out),)
    return make_result(out, (a,), backward, "tanh")


def sigmoid(a):
    """out = 1 / (1 + e^-a), without overflow (``reference.sigmoid``);  da = g out (1 - out)."""
    a = as_tensor(a)
    out = reference.sigmoid(a.data)

    def backward(g):
        return (g * out * (1 - out),)
    return make_result(out, (a,), backward, "sigmoid")


def relu(a):
    """out = max(a, 0);  da = g where a > 0, else 0."""
    a = as_tensor(a)

    def backward(g):
        return (g * (a.data > 0),)
    return make_result(array_module().maximum(a.data, 0), (a,), backward, "relu")


def softplus(a):
    """out = ln(1 + e^a), finite for any a (``reference.softplus``);  da = g * sigmoid(a)."""
    a = as_tensor(a)

    def backward(g):
        return (g * reference.sigmoid(a.data),)
    return make_result(reference.softplus(a.data), (a,), backward, "softplus")


def clip(a, low, high):
    """out = min(max(a, low), high);  da = g where low < a < high, else 0."""
    a = as_tensor(a)

    def backward(g):
        return (g * ((a.data > low) & (a.data < high)),)
    return make_result(array_module().clip(a.data, low, high), (a,), backward, "clip")


def maximum(a, b):
    """out = max(a, b) elementwise;  g goes to the larger input, split evenly on ties."""
    a, b = _broadcast_operands("maximum", a, b)
    share_a = (a.data > b.data) + 0.5 * (a.data == b.data)

    def backward(g):
        return (unbroadcast(g * share_a, a.shape) if a.requires_grad else None,
                unbroadcast(g * (1 - share_a), b.shape) if b.requires_grad else None)
    return make_result(array_module().maximum(a.data, b.data), (a, b), backward, "maximum")


def where(condition, a, b):
    """out = a where condition else b;  g goes to a where condition holds, to b elsewhere."""
    condition = condition.data if isinstance(condition, Tensor) else array_module().asarray(condition)
    a, b = _broadcast_operands("where", a, b)
    xp = array_module()

    def backward(g):
        return (unbroadcast(xp.where(condition, g, 0), a.shape) if a.requires_grad else None,
                unbroadcast(xp.where(condition, 0, g), b.shape) if b.requires_grad else None)
    return make_result(xp.where(condition, a.data, b.data), (a, b), backward, "where")


# ----- Reductions -----

def reduce_sum(a, axis=None, keepdims=False):
    """out = sum of a over ``axis``;  da = g copied back along the summed axes."""
    a = as_tensor(a)
    axes = _normalize_axes(axis, a.ndim)

    def backward(g):
        return (array_module().broadcast_to(_expand_reduced(g, axes, keepdims), a.shape),)
    return make_result(a.data.sum(axis=axes, keepdims=keepdims), (a,), backward, "sum")


def mean(a, axis=None, keepdims=False):
    """out = sum(a) / n over ``axis``, built from sum and div."""
    a = as_tensor(a)
    axes = _normalize_axes(axis, a.ndim)
    return reduce_sum(a, axes, keepdims) / math.prod(a.shape[ax] for ax in axes)


def reduce_max(a, axis=None, keepdims=False):
    """out = max of a over ``axis``;  g goes to the maximal entries, split evenly on ties."""
    a = as_tensor(a)
    axes = _normalize_axes(axis, a.ndim)
    out = a.data.max(axis=axes, keepdims=True)

    def backward(g):
        is_max = a.data == out
        share = is_max / is_max.sum(axis=axes, keepdims=True)
        return (_expand_reduced(g, axes, keepdims) * share,)
    return make_result(out if keepdims else out.squeeze(axis=axes), (a,), backward, "max")


def logsumexp(a, axis=None, keepdims=False):
    """out = ln sum exp(a) over ``axis``, shifted by the max;  da = g * softmax(a) = g * exp(a - out)."""
    a = as_tensor(a)
    axes = _normalize_axes(axis, a.ndim)
    xp = array_module()
    shift = a.data.max(axis=axes, keepdims=True)
    shift = xp.where(xp.isfinite(shift), shift, 0)
    with np.errstate(divide="ignore"):  # every term -inf: the sum is 0 and the answer -inf
        out = xp.log(xp.exp(a.data - shift).sum(axis=axes, keepdims=True)) + shift

    def backward(g):
        return (_expand_reduced(g, axes, keepdims) * xp.exp(a.data - out),)
    return make_result(out if keepdims else out.squeeze(axis=axes), (a,), backward, "logsumexp")


# ----- Shapes, indexing and joining -----

def reshape(a, shape):
    """out = a with a new shape (same elements);  da = g reshaped back."""
    a = as_tensor(a)
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ShapeError(f"reshape: cannot reshape {a.shape} ({a.size} elements) to {tuple(shape)}") from None

    def backward(g):
        return (g.reshape(a.shape),)
    return make_result(out, (a,), backward, "reshape")


def transpose(a, axes=None):
    """out = a with its axes permuted (reversed by default);  da = g permuted back."""
    a = as_tensor(a)
    given = tuple(reversed(range(a.ndim))) if axes is None else tuple(axes)
    axes = tuple(ax + a.ndim if ax < 0 else ax for ax in given)
    if sorted(axes) != list(range(a.ndim)):
        raise ShapeError(f"transpose: axes {given} are not a permutation of the {a.ndim} axes of {a.shape}")
    inverse = tuple(sorted(range(a.ndim), key=axes.__getitem__))

    def backward(g):
        return (g.transpose(inverse),)
    return make_result(a.data.transpose(axes), (a,), backward, "transpose")


def permute(a, *axes):
    """out = a with axes in the given order (PyTorch's name for transpose with axes)."""
    return transpose(a, axes)


def broadcast_to(a, shape):
    """out = a repeated along broadcast axes to ``shape``;  da = g summed back."""
    a = as_tensor(a)
    try:
        out = array_module().broadcast_to(a.data, shape)
    except ValueError:
        raise ShapeError(f"broadcast_to: cannot broadcast {a.shape} to {tuple(shape)}") from None

    def backward(g):
        return (unbroadcast(g, a.shape),)
    return make_result(out, (a,), backward, "broadcast_to")



def _is_basic_index(index):
    """True for NumPy's basic indexing (integers, slices, ``...``, None): it picks each element at most once."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(part, (numbers.Integral, slice)) or part is None or part is Ellipsis
               for part in parts)


def getitem(a, index):
    """out = a[index] (slices, integers, arrays);  da = zeros with g added at the indexed places.

    A basic index (slices, integers) picks each element at most once, so g is
    simply written into its place; an index array may pick one element twice
    (``a[[0, 0]]``), so ``add.at`` adds every copy's gradient (it is far slower).
    """
    a = as_tensor(a)
    if isinstance(index, Tensor):
        index = index.data
    try:
        out = a.data[index]
    except IndexError as err:
        raise ShapeError(f"getitem: index {index!r} does not fit shape {a.shape} ({err})") from None
    basic = _is_basic_index(index)

    def backward(g):
        xp = array_module()
        grad = xp.zeros_like(a.data)
        if basic:
            grad[index] = g
        else:
            xp.add.at(grad, index, g)
        return (grad,)
    return make_result(out, (a,), backward, "getitem")


def concatenate(tensors, axis=0):
    """out = the tensors joined along ``axis``;  each gets its slice of g."""
    tensors = tuple(as_tensor(t) for t in tensors)
    xp = array_module()
    try:
        out = xp.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        raise ShapeError(f"concatenate: shapes {[t.shape for t in tensors]} do not join along axis {axis}") from None
    boundaries = list(itertools.accumulate(t.shape[axis] for t in tensors))[:-1]

    def backward(g):
        return tuple(xp.split(g, boundaries, axis=axis))
    return make_result(out, tensors, backward, "concatenate")


def stack(tensors, axis=0):
    """out = the tensors stacked along a new ``axis``;  each gets its slice of g."""
    tensors = tuple(as_tensor(t) for t in tensors)
    xp = array_module()
    try:
        out = xp.stack([t.data for t in tensors], axis=axis)
    except ValueError as err:  # unequal shapes, or an axis the result does not have: NumPy says which
        raise ShapeError(f"stack: shapes {[t.shape for t in tensors]} along a new axis {axis}: {err}") from None

    def backward(g):
        return tuple(xp.moveaxis(g, axis, 0))
    return make_result(out, tensors, backward, "stack")


# The primitives the backend's kernels compute (kernel_ops builds on the helpers above).
from minivae.kernel_ops import (bernoulli_log_prob, bias_act, gaussian_log_prob, kl_normal,  # noqa: E402,F401
                                matmul, reparameterize)
