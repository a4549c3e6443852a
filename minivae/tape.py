"""The tape as plain data: what ``backward()`` walks, as nodes and edges that a picture or a test can read.

A scalar loss remembers how it was made: each operation's result keeps its
op and its parents (``Tensor._parents``), down to the leaves. ``trace(loss)``
lists that tape, parents before children, one ``Node`` per tensor and one
``Edge`` per (input, operation), with each node's role:

- ``parameter``: a leaf that requires grad (what the optimizer updates);
- ``data``: the observed x (the input a likelihood scores, or named so);
- ``noise``: the eps of ``reparameterize`` (or a sample named so), a leaf that takes no gradient;
- ``constant``: any other leaf (a fixed array); a number, such as the n a mean
  divides by, is no node: its value is written into its operation's label;
- ``op``: an operation's result.

After ``retain_grads(loss)`` and ``loss.backward()``, each node carries the
norm of the gradient it received, ||dL/d(tensor)||; a constant receives none,
and so does every edge out of it (``Edge.carries_grad`` is False): the
gradient stops at data and noise. This module reads the tape and never
changes it.
"""
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from minivae.backend import get_backend
from minivae.errors import MinivaeError

ROLES = ("parameter", "data", "noise", "constant", "op")
# The inputs a primitive names by its own signature, (name, role of a constant leaf there, or None);
# None leaves an input to be named by its op.
INPUT_NAMES = {
    "reparameterize": (("mu", None), ("logvar", None), ("eps", "noise")),
    "bernoulli_log_prob": (("x", "data"), None),
    "gaussian_log_prob": (("x", "data"), None),
}
OUTPUT_NAMES = {"reparameterize": "z"}  # the results a primitive's own math names
SMALL = 4  # a constant leaf of at most this many numbers shows them in its label


@dataclass(frozen=True)
class Node:
    """One tensor of the tape: its label (a name, else its op), op ("" for a leaf), shape, role, gradient norm.

    ``numbers`` are the values of the plain numbers the operation also read (the 4 of ``div 4``).
    """
    index: int
    label: str
    op: str
    shape: tuple
    role: str
    grad_norm: float | None  # ||dL/d(tensor)|| after backward; None where no gradient was received or kept
    numbers: tuple = ()

    @property
    def operation(self):
        """The op and the numbers it read ("div 2"), an operation's label unless it is named; "" for a leaf."""
        return " ".join((self.op,) + self.numbers)


@dataclass(frozen=True)
class Edge:
    """Data flows from node ``source`` into the operation ``target``; ``carries_grad``: backward sends one back."""
    source: int
    target: int
    carries_grad: bool


@dataclass
class Tape:
    """The nodes, parents before children (the last is the output), and the edges between them."""
    nodes: list
    edges: list

    def node(self, label):
        """The node labelled ``label``; a MinivaeError naming the labels there are if none is."""
        for node in self.nodes:
            if node.label == label:
                return node
        raise MinivaeError(f"the tape has no node {label!r}; its labels are {', '.join(n.label for n in self.nodes)}")

    def inputs(self, index):
        """The nodes that node ``index`` was computed from, in argument order."""
        return [self.nodes[edge.source] for edge in self.edges if edge.target == index]

    def summary(self):
        """One line: the operations and parameters, and the leaves that no gradient reaches."""
        roles = Counter(node.role for node in self.nodes)
        stopped = [node.label for node in self.nodes if not node.op and node.grad_norm is None]
        return (f"{roles['op']} operations, {roles['parameter']} parameters; no gradient reaches "
                f"{', '.join(stopped) or 'no leaf'}")

    def table(self):
        """One line per node: index, label, role, shape, the nodes it reads, and its gradient's norm."""
        lines = []
        for node in self.nodes:
            reads = ", ".join([str(n.index) for n in self.inputs(node.index)] + list(node.numbers))
            grad = "no gradient" if node.grad_norm is None else f"|grad| {node.grad_norm:.3g}"
            what = f"{node.op}({reads})" if node.op else ""
            lines.append(f"{node.index:3d}  {node.label:<24} {node.role:<9} {str(node.shape):<12} {what:<28} {grad}")
        return "\n".join(lines)


def retain_grads(output):
    """Make every operation on ``output``'s tape keep its gradient, so that the next backward stores them all."""
    for tensor in _operations(output):
        tensor.retain_grad()


def trace(output, names=None, roles=None):
    """``output``'s tape as a ``Tape``; ``names`` {Tensor: label} and ``roles`` {Tensor: role} override the defaults.

    Defaults: an operation is labelled by its op, a leaf by its role; the
    inputs of ``reparameterize`` are named mu, logvar and eps (noise), its
    result z, and the x of a likelihood is data; other leaves are constants.
    A constant wrapped twice around one array (the data x read by the encoder
    and by the likelihood) is one node.
    """
    names, roles = names or {}, roles or {}
    unknown = set(roles.values()) - set(ROLES)
    if unknown:
        raise MinivaeError(f"trace: unknown role {unknown.pop()!r}; use one of {', '.join(ROLES)}")
    builder = _TapeBuilder({_key(t): label for t, label in names.items()}, {_key(t): role for t, role in roles.items()})
    for tensor in _operations(output):
        builder.add_operation(tensor)
    return Tape(builder.nodes, builder.edges)


def _operations(output):
    """Every operation's result on the tape, parents before children (the order backward walks in reverse)."""
    if not output.requires_grad or not output._parents:
        raise MinivaeError("this tensor has no tape: no input it was computed from requires grad "
                           "(was it computed under no_grad, or from constants only?)")
    return [tensor for tensor in output._topological_order() if tensor._parents]


def _key(tensor):
    """A constant leaf is known by its array, so two wrappers of one array are one node; any other tensor by itself."""
    return id(tensor.data) if _is_constant(tensor) else id(tensor)


def _is_constant(tensor):
    return not tensor.requires_grad and not tensor._parents


def _is_number(tensor):
    return _is_constant(tensor) and tensor.size == 1


def _grad_norm(tensor):
    grad = tensor.grad
    return None if grad is None else float(np.linalg.norm(get_backend().asnumpy(grad).astype(np.float64)))


def _leaf_label(tensor, role):
    """A leaf's role; a small constant's values too (the prior's zeros: "constant [0, 0]")."""
    if role != "constant" or tensor.size > SMALL:
        return role
    return f"{role} [{', '.join(_format(v) for v in get_backend().asnumpy(tensor.data).ravel())}]"


def _number(tensor):
    return _format(get_backend().asnumpy(tensor.data).reshape(()))


def _format(value):
    return f"{float(value):.4g}"


class _TapeBuilder:
    """Adds nodes and edges in order, each tensor once; labels and roles from the caller, else from INPUT_NAMES."""

    def __init__(self, names, roles):
        self.names, self.roles = names, roles
        self.index = {}  # _key(tensor) -> node index
        self.nodes, self.edges = [], []

    def add_operation(self, tensor):
        """The operation's new leaf inputs, then its own node and edges; numbers go into its label."""
        defaults = INPUT_NAMES.get(tensor._op) or (None,) * len(tensor._parents)
        sources = [parent for parent in tensor._parents if not _is_number(parent)]
        for parent, default in zip(tensor._parents, defaults):
            if _is_number(parent):
                continue
            if _key(parent) not in self.index:  # a leaf: every operation was added before its users
                self._add(parent)
            if default is not None:
                self._name_by_signature(parent, *default)
        numbers = tuple(_number(parent) for parent in tensor._parents if _is_number(parent))
        target = self._add(tensor, tensor._op, numbers)
        self.edges += [Edge(self.index[_key(parent)], target, parent.requires_grad) for parent in sources]

    def _add(self, tensor, op="", numbers=()):
        key = _key(tensor)
        role = self.roles.get(key) or ("op" if op else "parameter" if tensor.requires_grad else "constant")
        node = Node(len(self.nodes), "", op, tuple(tensor.shape), role, _grad_norm(tensor), numbers)
        label = self.names.get(key) or OUTPUT_NAMES.get(op) or (node.operation if op else _leaf_label(tensor, role))
        self.index[key] = node.index
        self.nodes.append(replace(node, label=label))
        return node.index

    def _name_by_signature(self, tensor, name, role):
        """Name an input (mu, eps, x) as the operation reading it does, unless the caller did; a constant leaf
        there takes the role given (eps: noise, x: data), unless the caller gave one."""
        key = _key(tensor)
        node = self.nodes[self.index[key]]
        if key not in self.names:
            node = replace(node, label=name)
        if role is not None and key not in self.roles and node.role == "constant":
            node = replace(node, role=role)
        self.nodes[node.index] = node
