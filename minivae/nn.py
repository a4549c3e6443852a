"""Layers: Parameter, Module, Linear, MLP and activations.

A ``Module`` finds its parameters and sub-modules by looking at its own
attributes (a Parameter, a Module, or a list of Modules), so a model is
written as plain Python and ``model.parameters()`` just works. Names are
dotted paths: ``encoder.layers.0.weight``.

Weights are stored (in, out) so a layer is ``x @ W + b``: one matrix product
and one fused bias-plus-activation kernel (``ops.bias_act``) per layer.
"""
import math
import numbers

import numpy as np

from minivae import ops
from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.kernels.reference import ACTIVATIONS
from minivae.tensor import ShapeError, Tensor

INITS = ("pytorch", "glorot", "he")


class Parameter(Tensor):
    """A Tensor a model learns: it always requires grad."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


def is_int(value):
    """An integer of any integral type (NumPy's too), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_positive_int(value):
    return is_int(value) and value > 0


def check_positive_int(owner, name, value):
    """A one-line MinivaeError unless ``value`` is a positive integer."""
    if not is_positive_int(value):
        raise MinivaeError(f"{owner}: {name} must be a positive integer, got {value!r}")


# ----- Module -----

class Module:
    """A container of parameters and sub-modules; ``module(x)`` calls ``forward(x)``."""

    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_children(self):
        """(name, module) for each attribute that is a Module or a list of Modules (items named name.i)."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def modules(self):
        """This module and every module inside it, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def _parameter_slots(self, prefix=""):
        """(dotted name, owning module, attribute) for every parameter: own first, then children's."""
        for attribute, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + attribute, self, attribute
        for name, child in self.named_children():
            yield from child._parameter_slots(f"{prefix}{name}.")

    def named_parameters(self):
        """(dotted name, Parameter) pairs, e.g. ("encoder.layers.0.weight", W)."""
        for name, owner, attribute in self._parameter_slots():
            yield name, getattr(owner, attribute)

    def parameters(self):
        """Every parameter once (a shared one is not repeated)."""
        unique = {id(p): p for _, p in self.named_parameters()}
        return list(unique.values())

    def train(self, mode=True):
        """Set the training flag on this module and all inside it; returns self."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def state_dict(self):
        """{dotted name: NumPy copy of the parameter}."""
        backend = get_backend()
        return {name: np.array(backend.asnumpy(p.data)) for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters, in place (flat-buffer views stay views).

        Every name and shape must match; the first mismatch is a MinivaeError.
        """
        own = dict(self.named_parameters())
        for name, p in own.items():
            if name not in state:
                raise MinivaeError(f"checkpoint does not fit this model: it has no {name}")
            shape = tuple(np.shape(state[name]))
            if shape != p.shape:
                raise MinivaeError(f"checkpoint does not fit this model: {name} has shape {shape} "
                                   f"in the checkpoint but {p.shape} here")
        extra = [name for name in state if name not in own]
        if extra:
            raise MinivaeError(f"checkpoint does not fit this model: it has {extra[0]}, "
                               "which this model lacks")
        xp = get_backend().xp
        for name, p in own.items():
            p.data[...] = xp.asarray(state[name], dtype=p.dtype)


def functional_call(module, tensors, *args, **kwargs):
    """``module(*args, **kwargs)`` with the parameters named in ``tensors`` replaced by those Tensors.

    Gradients then flow to the given Tensors, so any use of a model can be
    written as a function of its parameters (to gradient-check it). The
    module's own parameters are put back afterwards.
    """
    slots = {name: (owner, attribute) for name, owner, attribute in module._parameter_slots()}
    unknown = [name for name in tensors if name not in slots]
    if unknown:
        raise MinivaeError(f"{type(module).__name__} has no parameter {unknown[0]}; "
                           f"its parameters are {', '.join(slots)}")
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in slots.items()}
    try:
        for name, tensor in tensors.items():
            owner, attribute = slots[name]
            setattr(owner, attribute, tensor)
        return module(*args, **kwargs)
    finally:
        for name, (owner, attribute) in slots.items():
            setattr(owner, attribute, originals[name])


# ----- Initialization -----

def init_weight_and_bias(in_features, out_features, init, rng):
    """Initial (weight (in, out), bias (out,)) as float64 NumPy arrays.

    - ``pytorch``: kaiming_uniform(a=sqrt 5), i.e. W, b ~ U(-1/sqrt(in), 1/sqrt(in))
      (torch.nn.Linear.reset_parameters).
    - ``glorot``: W ~ U(-a, a), a = sqrt(6 / (in + out)) (Glorot & Bengio 2010, eq. 16); b = 0.
    - ``he``: W ~ N(0, 2 / in) (He et al. 2015, eq. 10); b = 0.
    """
    shape = (in_features, out_features)
    if init == "pytorch":
        bound = 1 / math.sqrt(in_features)
        return rng.uniform(-bound, bound, shape), rng.uniform(-bound, bound, out_features)
    if init == "glorot":
        bound = math.sqrt(6 / (in_features + out_features))
        return rng.uniform(-bound, bound, shape), np.zeros(out_features)
    if init == "he":
        return rng.normal(0, math.sqrt(2 / in_features), shape), np.zeros(out_features)
    raise MinivaeError(f"unknown init {init!r}; use one of {', '.join(INITS)}")


# ----- Layers -----

class Linear(Module):
    """y = act(x @ W + b), W of shape (in, out): one matmul and one fused bias_act kernel."""

    def __init__(self, in_features, out_features, activation="identity", init="pytorch", rng=None,
                 dtype=np.float32):
        check_positive_int("Linear", "in_features", in_features)
        check_positive_int("Linear", "out_features", out_features)
        if activation not in ACTIVATIONS:
            raise MinivaeError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        rng = np.random.default_rng(0) if rng is None else rng
        weight, bias = init_weight_and_bias(in_features, out_features, init, rng)
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = Parameter(weight, dtype=dtype)
        self.bias = Parameter(bias, dtype=dtype)

    def forward(self, x):
        """x (B, in) -> (B, out); a plain array is taken in the weight's dtype."""
        x = x if isinstance(x, Tensor) else Tensor(x, dtype=self.weight.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}): input of shape "
                             f"{x.shape}, expected (batch, {self.in_features})")
        return ops.bias_act(x @ self.weight, self.bias, self.activation)


class MLP(Module):
    """Linear layers sizes[0] -> sizes[1] -> ... with ``activation`` between them.

    The last layer uses ``final_activation`` (None: identity). Each activation
    is fused into its layer's bias_act kernel.
    """

    def __init__(self, sizes, activation="relu", final_activation=None, init="pytorch", rng=None,
                 dtype=np.float32):
        rng = np.random.default_rng(0) if rng is None else rng
        last = len(sizes) - 2
        self.layers = [
            Linear(n_in, n_out, (final_activation or "identity") if i == last else activation,
                   init=init, rng=rng, dtype=dtype)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


# ----- Activations as modules (MLP fuses them instead) -----

class ReLU(Module):
    def forward(self, x):
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x):
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return ops.sigmoid(x)
