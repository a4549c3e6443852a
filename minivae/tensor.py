"""Tensor: an array that remembers how it was made, so gradients can flow back.

Each tensor made by an operation keeps its parents and a ``_backward``
function: given dL/d(out), it returns dL/d(parent) for each parent (the
vector-Jacobian product). ``backward()`` visits the graph in reverse
topological order, found without recursion, and adds up every contribution a
tensor receives: a tensor used twice (``mu`` is, in the KL and in the sample)
gets both. Gradients accumulate across backward calls too, until
``zero_grad`` resets them.
"""
import contextlib

import numpy as np

from minivae.backend import get_backend
from minivae.errors import MinivaeError

DEFAULT_DTYPE = np.float32

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block operations record no graph (evaluation, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


class ShapeError(MinivaeError, ValueError):
    """Operands whose shapes do not fit the operation; the message names both."""


def to_array(data, dtype=None):
    """An array of the active backend: float arrays keep their precision, anything else becomes float32."""
    xp = get_backend().xp
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.generic) and data.dtype.kind == "f" and dtype in (None, data.dtype):
        return data  # a NumPy float scalar stays one: a kernel argument, never copied to a device
    if dtype is None and getattr(data, "dtype", None) is not None and data.dtype.kind == "f":
        return xp.asarray(data)
    return xp.asarray(data, dtype=dtype or DEFAULT_DTYPE)


class Tensor:
    """An n-dimensional array with ``requires_grad``, ``.grad`` and a backward pass."""

    __array_ufunc__ = None  # ndarray + Tensor defers to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = to_array(data, dtype)
        self.requires_grad = requires_grad
        self._grad = None
        self._grad_is_stale = False  # zero_grad was called: _grad holds old values that stand for zeros
        self._parents = ()
        self._backward = None
        self._op = ""

    # ----- Array facts -----

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def item(self):
        return self.data.item()

    def numpy(self):
        """The values as a NumPy array (copied from the device on a GPU backend)."""
        return get_backend().asnumpy(self.data)

    def detach(self):
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def astype(self, dtype):
        """A copy in another float precision, cut from the graph."""
        return Tensor(self.data, dtype=dtype)

    def __repr__(self):
        values = np.array2string(self.numpy(), precision=4, threshold=20, separator=", ",
                                 prefix="Tensor(")
        extra = f", grad_fn={self._op}" if self._op else (
            ", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({values}, dtype={self.dtype}{extra})"

    # ----- The backward pass -----

    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires it.

        ``grad`` seeds the pass with dL/d(self); it may be omitted only when
        self holds a single number (then it is 1).
        """
        if not self.requires_grad:
            raise MinivaeError("backward: this tensor does not require grad; "
                               "no input it was computed from has requires_grad=True")
        if grad is None:
            if self.size != 1:
                raise MinivaeError(
                    f"backward: the output has shape {self.shape}, not a single number; "
                    "reduce it (e.g. .sum()) or pass grad= of the same shape")
            grad = get_backend().xp.ones_like(self.data)
        grad = to_array(grad, self.dtype)
        if grad.shape != self.shape:
            raise ShapeError(f"backward: grad of shape {grad.shape} for an output of shape {self.shape}")
        pending = {self: grad}  # tensor -> the sum of the gradients it has received so far
        for node in reversed(self._topological_order()):
            node_grad = pending.pop(node, None)
            if node_grad is not None:
                node._propagate(node_grad, pending)

    def _topological_order(self):
        """Every tensor self depends on (needing grad), parents before children; iterative DFS.

        The stack holds each unfinished tensor with an iterator over its
        parents; a tensor is finished, and listed, once all its parents are.
        (Tensors hash by identity, so they are their own keys in sets and dicts.)
        """
        order, visited, stack = [], {self}, [(self, iter(self._parents))]
        while stack:
            node, parents = stack[-1]
            for parent in parents:
                if parent.requires_grad and parent not in visited:
                    visited.add(parent)
                    stack.append((parent, iter(parent._parents)))
                    break
            else:
                stack.pop()
                order.append(node)
        return order

    def _propagate(self, grad, pending):
        """Store grad on a leaf or a tensor that retains it; hand each parent its share, summed with what it has."""
        if self._backward is None:
            self._accumulate(grad)
            return
        if self._retains_grad:
            self._accumulate(grad)
        for parent, parent_grad in zip(self._parents, self._backward(grad)):
            if parent_grad is None or not parent.requires_grad:
                continue
            if parent_grad.dtype != parent.dtype:
                parent_grad = parent_grad.astype(parent.dtype)
            pending[parent] = pending[parent] + parent_grad if parent in pending else parent_grad

    # ----- The gradient: accumulated by backward, reset by zero_grad -----

    _retains_grad = False  # a class default: an operation's result keeps no gradient unless asked

    def retain_grad(self):
        """Keep this operation's result's gradient in ``.grad`` too, as a leaf's is (to look at it)."""
        self._retains_grad = True

    @property
    def grad(self):
        """dL/d(self) summed over every backward since the last ``zero_grad``; None before the first."""
        self.fill_reset_grad()
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad, self._grad_is_stale = value, False

    def _accumulate(self, grad):
        """grad += g, in place, so a grad that views the optimizer's flat buffer stays one.

        Right after ``zero_grad`` the old values stand for zeros, so g is written over them by the array
        module's ``copyto``: one call, which a wrapper of the array module can see (an assignment it cannot).
        """
        if self._grad is None:
            self._grad = get_backend().xp.array(grad)  # an array copy, also of a 0-d leaf's NumPy scalar gradient
        elif self._grad_is_stale:
            get_backend().xp.copyto(self._grad, grad)
        else:
            self._grad += grad
        self._grad_is_stale = False

    def zero_grad(self):
        """Reset the gradient to zero, lazily: the next backward writes over it, a read before then finds zeros."""
        self._grad_is_stale = self._grad is not None

    def fill_reset_grad(self):
        """Write the zeros a reset gradient stands for, so its buffer can be read directly (``FlatParameters``)."""
        if self._grad_is_stale:
            self._grad[...] = 0
            self._grad_is_stale = False

    # ----- Python operators (each is one primitive of minivae.ops) -----

    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __neg__(self):
        return ops.neg(self)

    def __pow__(self, exponent):
        return ops.power(self, exponent)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    # ----- Methods (the same primitives, for chaining) -----

    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def abs(self):
        return ops.absolute(self)

    def sqrt(self):
        return ops.sqrt(self)

    def tanh(self):
        return ops.tanh(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def relu(self):
        return ops.relu(self)

    def sum(self, axis=None, keepdims=False):
        return ops.reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.reduce_max(self, axis, keepdims)

    def logsumexp(self, axis=None, keepdims=False):
        return ops.logsumexp(self, axis, keepdims)

    def reshape(self, *shape):
        return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)

    def transpose(self, *axes):
        return ops.transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple) else (axes or None))

    @property
    def T(self):
        return ops.transpose(self)


from minivae import ops  # noqa: E402  (ops builds on Tensor, so it comes after it)
