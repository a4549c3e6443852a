"""Optimizers over one flat parameter buffer: SGD, Adam, Adagrad.

Constructing an optimizer copies the parameters into one contiguous buffer
(``flatten_parameters``) whose slices the parameters then view, so a step
is one fused pass over every parameter at once instead of a loop of small
array operations. Usage reads like PyTorch::

    optimizer = Adam(model.parameters(), lr=1e-3)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

Create the optimizer after the model is built and before training; creating
a second one over the same parameters moves them into a new buffer.
"""
import math
import numbers
from dataclasses import dataclass

from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.tensor import Tensor


# ----- One flat buffer for every parameter -----

@dataclass
class FlatParameters:
    """All parameters in one contiguous ``data`` array, their gradients in ``grad``.

    Each parameter's ``.data`` and ``.grad`` are views of a slice of these,
    so an optimizer updates every parameter with one pass over ``data``.
    Read the gradients through ``gradients()``, which zero-fills the slices
    of parameters whose gradient was reset and not written since.
    """
    data: object
    grad: object
    params: list

    def gradients(self):
        """The flat gradient, every reset slice zero-filled first (see ``Tensor.zero_grad``)."""
        for p in self.params:
            p.fill_reset_grad()
        return self.grad


def flatten_parameters(params):
    """Copy ``params`` into one flat buffer and rebind each ``.data`` / ``.grad`` to views of it.

    The gradient views start at zero; backward adds into them in place
    (``Tensor._accumulate``), so they fill the flat ``grad`` directly.
    """
    params = list(params)
    _check_flattenable(params)
    xp = get_backend().xp
    total = sum(p.size for p in params)
    data = xp.empty(total, dtype=params[0].dtype)
    grad = xp.zeros(total, dtype=params[0].dtype)
    offset = 0
    for p in params:
        end = offset + p.size
        data[offset:end] = p.data.ravel()
        p.data = data[offset:end].reshape(p.shape)
        p.grad = grad[offset:end].reshape(p.shape)
        offset = end
    return FlatParameters(data, grad, params)


def _check_flattenable(params):
    """A one-line MinivaeError unless params are distinct Tensors of one float dtype."""
    if not params:
        raise MinivaeError("no parameters to optimize; pass model.parameters()")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise MinivaeError(f"parameter {i} is a {type(p).__name__}, not a Tensor; pass model.parameters()")
    if len({id(p) for p in params}) != len(params):
        raise MinivaeError("a parameter appears twice in the list; pass each parameter once")
    dtypes = sorted({str(p.dtype) for p in params})
    if len(dtypes) > 1:
        raise MinivaeError(f"parameters have mixed dtypes ({', '.join(dtypes)}); one flat buffer needs one dtype")


# Each rule: what a valid value is, in words, and the test.
POSITIVE = ("a finite number > 0", lambda v: 0 < v < math.inf)
NON_NEGATIVE = ("a finite number >= 0", lambda v: 0 <= v < math.inf)
FRACTION = ("a number in [0, 1)", lambda v: 0 <= v < 1)


def _checked(optimizer, name, value, rule):
    """``value`` as a float, or a one-line MinivaeError naming the rule it breaks."""
    words, valid = rule
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not valid(value):
        raise MinivaeError(f"{optimizer}: {name} must be {words}, got {value!r}")
    return float(value)


class Optimizer:
    """Base: the flat buffers, zero_grad, gradient clipping and the state for checkpoints.

    A subclass lists its ``HYPERPARAMETERS`` (name: rule) and its per-parameter
    ``BUFFERS`` (flat arrays like Adam's moments), and defines ``step``.
    """

    HYPERPARAMETERS = {}
    BUFFERS = ()

    def __init__(self, params, **hyperparameters):
        self._set_hyperparameters(hyperparameters)
        self.flat = flatten_parameters(params)
        xp = get_backend().xp
        for name in self.BUFFERS:
            setattr(self, name, xp.zeros_like(self.flat.data))
        self.step_count = 0

    def _set_hyperparameters(self, values):
        for name, rule in self.HYPERPARAMETERS.items():
            setattr(self, name, _checked(type(self).__name__, name, values.get(name), rule))

    def step(self):
        raise NotImplementedError(f"{type(self).__name__} does not define step")

    def zero_grad(self):
        """Reset every parameter's gradient to zero, lazily (see ``Tensor.zero_grad``): no pass over memory."""
        for p in self.flat.params:
            p.zero_grad()

    def clip_grad_norm(self, max_norm):
        """Scale the gradients so their total L2 norm is at most ``max_norm``; return the norm before.

        g <- g * max_norm / (||g|| + 1e-6) when ||g|| > max_norm (PyTorch's clip_grad_norm_).
        """
        max_norm = _checked("clip_grad_norm", "max_norm", max_norm, POSITIVE)
        grad = self.flat.gradients()
        total = float(get_backend().xp.linalg.norm(grad))
        if total > max_norm:
            grad *= max_norm / (total + 1e-6)
        return total

    # ----- State, so a checkpoint resumes exactly -----

    def state_dict(self):
        """(arrays, scalars): NumPy copies of the buffers, and the JSON-safe hyperparameters and step count.

        The pair maps onto a checkpoint's (arrays, meta).
        """
        backend = get_backend()
        arrays = {name: backend.asnumpy(getattr(self, name)).copy() for name in self.BUFFERS}
        scalars = {"optimizer": type(self).__name__, "step_count": self.step_count}
        scalars.update({name: getattr(self, name) for name in self.HYPERPARAMETERS})
        return arrays, scalars

    def load_state_dict(self, arrays, scalars):
        """Restore what ``state_dict`` returned; a MinivaeError names the first thing that does not fit."""
        kind = type(self).__name__
        if scalars.get("optimizer") != kind:
            raise MinivaeError(f"optimizer state is for {scalars.get('optimizer')}, not {kind}")
        for name in self.BUFFERS:
            if name not in arrays:
                raise MinivaeError(f"optimizer state has no {name} buffer, so it does not fit this {kind}")
            if arrays[name].shape != self.flat.data.shape:
                raise MinivaeError(f"optimizer state does not fit these parameters: {name} has shape "
                                   f"{arrays[name].shape} in the checkpoint but {self.flat.data.shape} here")
        step_count = scalars.get("step_count")
        if isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral) or step_count < 0:
            raise MinivaeError(f"optimizer state: step_count must be an integer >= 0, got {step_count!r}")
        self._set_hyperparameters(scalars)
        self.step_count = int(step_count)
        xp = get_backend().xp
        for name in self.BUFFERS:
            getattr(self, name)[...] = xp.asarray(arrays[name])


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's form, one fused kernel).

    g' = g + wd p;  u = momentum u + g';  p -= lr u   (u = g' when momentum is 0).
    """

    HYPERPARAMETERS = {"lr": POSITIVE, "momentum": FRACTION, "weight_decay": NON_NEGATIVE}
    BUFFERS = ("velocity",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def step(self):
        self.step_count += 1
        get_backend().kernels.sgd_step(self.flat.data, self.flat.gradients(), self.velocity, self.lr,
                                       self.momentum, self.weight_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, Algorithm 1; PyTorch's form): the moments m and v of the gradient, bias-corrected.

    One fused kernel pass over the flat buffers per step; its formula is
    ``kernels.reference.adam_step`` (linked, not copied, so it is written once).
    """

    HYPERPARAMETERS = {"lr": POSITIVE, "beta1": FRACTION, "beta2": FRACTION, "eps": NON_NEGATIVE,
                       "weight_decay": NON_NEGATIVE}
    BUFFERS = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise MinivaeError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        beta1, beta2 = betas
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)

    def step(self):
        self.step_count += 1
        self.update(self.step_count, self.lr)

    def update(self, t, lr):
        """The kernel's update at step t with learning rate lr, leaving ``step_count`` as it is.

        t and lr are numbers, or 0-d arrays of the backend, which the kernel reads
        where they live: on a GPU they can change on the device with no copy to or from the host.
        """
        get_backend().kernels.adam_step(self.flat.data, self.flat.gradients(), self.m, self.v, t, lr,
                                        self.beta1, self.beta2, self.eps, self.weight_decay)


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer 2011; PyTorch's form), in place over the flat buffer.

    g' = g + wd p;  s += g'^2;  p -= lr g' / (sqrt(s) + eps).
    """

    HYPERPARAMETERS = {"lr": POSITIVE, "eps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE}
    BUFFERS = ("sum_squares",)

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)

    def step(self):
        self.step_count += 1
        p, g = self.flat.data, self.flat.gradients()
        if self.weight_decay:
            g = g + self.weight_decay * p
        self.sum_squares += g * g
        p -= self.lr * g / (get_backend().xp.sqrt(self.sum_squares) + self.eps)
