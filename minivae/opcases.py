"""The table of primitives that ``minivae gradcheck`` and the test suite check.

Each case is a function of tensors, default input shapes, and for each input
a domain: the map that moves raw values where the primitive is smooth
(``log`` needs positive inputs; ``relu``, ``abs``, ``max`` need inputs away
from their kinks and ties, since a central difference across a kink is not a
derivative). ``kind`` says how the tests may vary the shapes: ``elementwise``
(any shape), ``broadcast`` (two broadcast-compatible shapes) or ``fixed``.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from minivae import ops
from minivae.gradcheck import GradcheckError, check_grads


def _separated(x, offset):
    """Values made distinct and kept off 0 and +-1 (ties and kinks), whatever the raw draw: the draw on a 0.01
    grid plus a ladder of 0.00123 steps, which no difference of grid values matches (gaps >= 1.6e-4 up to 24
    values, far above check_grads' step of 1e-6)."""
    return np.round(x, 2) + offset + 0.00123 * np.arange(x.size).reshape(x.shape)


DOMAINS = {
    "real": lambda x: x,
    "positive": lambda x: np.abs(x) + 0.5,
    "separated": lambda x: _separated(x, 0.0005),
    "separated_b": lambda x: _separated(x, 0.00075),
    "probability": lambda x: 0.5 * (1 + np.tanh(x)),
}


@dataclass(frozen=True)
class OpCase:
    name: str
    fn: Callable
    shapes: tuple
    domains: tuple
    kind: str = "fixed"

    def inputs(self, raw):
        """Map raw arrays (one per input) into this case's domains."""
        return [DOMAINS[d](np.asarray(r, dtype=np.float64)) for d, r in zip(self.domains, raw)]


def fixed_normal(shape, seed=0):
    """A fixed standard-normal array: the eps or data a case holds constant."""
    return np.random.default_rng(seed).standard_normal(shape)


def _checkerboard(shape):
    return np.indices(shape).sum(axis=0) % 2 == 0


def _reparameterize(mu, logvar):
    return ops.reparameterize(mu, logvar, fixed_normal((3,) + mu.shape))


def _bernoulli(logits):
    return ops.bernoulli_log_prob(0.5 * (1 + np.tanh(fixed_normal(logits.shape[-1:], 1))), logits)


def _gaussian(mean):
    return ops.gaussian_log_prob(fixed_normal(mean.shape[-1:], 2), mean, 0.7)


UNARY = (3, 4)
PAIR = ((3, 4), (4,))
CASES = (
    # elementwise arithmetic, broadcasting
    OpCase("add", lambda a, b: a + b, PAIR, ("real", "real"), "broadcast"),
    OpCase("sub", lambda a, b: a - b, PAIR, ("real", "real"), "broadcast"),
    OpCase("mul", lambda a, b: a * b, PAIR, ("real", "real"), "broadcast"),
    OpCase("div", lambda a, b: a / b, PAIR, ("real", "positive"), "broadcast"),
    OpCase("rsub_scalar", lambda a: 2.0 - a, (UNARY,), ("real",), "elementwise"),
    OpCase("rdiv_scalar", lambda a: 3.0 / a, (UNARY,), ("positive",), "elementwise"),
    OpCase("neg", lambda a: -a, (UNARY,), ("real",), "elementwise"),
    OpCase("pow", lambda a: a ** 2.5, (UNARY,), ("positive",), "elementwise"),
    OpCase("square", ops.square, (UNARY,), ("real",), "elementwise"),
    OpCase("maximum", ops.maximum, PAIR, ("separated", "separated_b"), "fixed"),
    OpCase("where", lambda a, b: ops.where(_checkerboard(a.shape), a, b), (UNARY, UNARY),
           ("real", "real")),
    # elementwise functions
    OpCase("exp", ops.exp, (UNARY,), ("real",), "elementwise"),
    OpCase("log", ops.log, (UNARY,), ("positive",), "elementwise"),
    OpCase("log1p", ops.log1p, (UNARY,), ("positive",), "elementwise"),
    OpCase("sqrt", ops.sqrt, (UNARY,), ("positive",), "elementwise"),
    OpCase("abs", ops.absolute, (UNARY,), ("separated",), "elementwise"),
    OpCase("tanh", ops.tanh, (UNARY,), ("real",), "elementwise"),
    OpCase("sigmoid", ops.sigmoid, (UNARY,), ("real",), "elementwise"),
    OpCase("relu", ops.relu, (UNARY,), ("separated",), "elementwise"),
    OpCase("softplus", ops.softplus, (UNARY,), ("real",), "elementwise"),
    OpCase("clip", lambda a: ops.clip(a, -1.0, 1.0), (UNARY,), ("separated",), "elementwise"),
    # reductions
    OpCase("sum", lambda a: a.sum(), ((2, 3, 4),), ("real",)),
    OpCase("sum_axis_keepdims", lambda a: a.sum(axis=1, keepdims=True), ((2, 3, 4),), ("real",)),
    OpCase("mean_axis", lambda a: a.mean(axis=(0, 2)), ((2, 3, 4),), ("real",)),
    OpCase("max", lambda a: a.max(axis=-1), ((2, 3, 4),), ("separated",)),
    OpCase("max_all", lambda a: a.max(), ((3, 4),), ("separated",)),
    OpCase("logsumexp", lambda a: a.logsumexp(axis=1), ((2, 3, 4),), ("real",)),
    OpCase("logsumexp_all", lambda a: a.logsumexp(), ((3, 4),), ("real",)),
    # shapes, indexing, joining
    OpCase("reshape", lambda a: a.reshape(2, 6), ((3, 4),), ("real",)),
    OpCase("transpose", lambda a: a.T, ((3, 4),), ("real",)),
    OpCase("permute", lambda a: ops.permute(a, 2, 0, 1), ((2, 3, 4),), ("real",)),
    OpCase("broadcast_to", lambda a: ops.broadcast_to(a, (2, 3, 4)), ((3, 1),), ("real",)),
    OpCase("getitem_slice", lambda a: a[:, 1:3], ((3, 4),), ("real",)),
    OpCase("getitem_repeated", lambda a: a[np.array([0, 2, 0])], ((3, 4),), ("real",)),
    OpCase("concatenate", lambda a, b: ops.concatenate([a, b], axis=1), ((2, 3), (2, 4)), ("real", "real")),
    OpCase("stack", lambda a, b: ops.stack([a, b], axis=1), ((2, 3), (2, 3)), ("real", "real")),
    # matrix products
    OpCase("matmul", ops.matmul, ((3, 4), (4, 5)), ("real", "real")),
    OpCase("matmul_batched", ops.matmul, ((2, 1, 3, 4), (3, 4, 2)), ("real", "real")),
    # fused VAE primitives
    OpCase("bias_act_identity", lambda x, b: ops.bias_act(x, b, "identity"), PAIR, ("real", "real")),
    OpCase("bias_act_relu", lambda x, b: ops.bias_act(x, b, "relu"), PAIR, ("separated", "separated_b")),
    OpCase("bias_act_tanh", lambda x, b: ops.bias_act(x, b, "tanh"), PAIR, ("real", "real")),
    OpCase("bias_act_sigmoid", lambda x, b: ops.bias_act(x, b, "sigmoid"), PAIR, ("real", "real")),
    OpCase("reparameterize", _reparameterize, ((3, 2), (3, 2)), ("real", "real")),
    OpCase("kl_normal", ops.kl_normal, ((3, 2), (3, 2)), ("real", "real")),
    OpCase("bernoulli_log_prob", _bernoulli, ((2, 3, 4),), ("real",)),
    OpCase("gaussian_log_prob", _gaussian, ((2, 3, 4),), ("real",)),
)



@dataclass
class TableRow:
    name: str
    shapes: tuple
    max_abs_error: float
    max_rel_error: float
    passed: bool


def check_table(cases=CASES, trials=3, seed=0, rtol=1e-5, atol=1e-8):
    """Gradient-check every case on ``trials`` random draws; one row per case with its worst errors."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in cases:
        worst_abs = worst_rel = 0.0
        passed = True
        for _ in range(trials):
            inputs = case.inputs([rng.standard_normal(s) for s in case.shapes])
            try:
                report = check_grads(case.fn, *inputs, rtol=rtol, atol=atol, name=case.name)
                errors = report.max_abs_error, report.max_rel_error
            except GradcheckError:
                passed = False
                errors = _errors_unchecked(case, inputs)
            worst_abs, worst_rel = max(worst_abs, errors[0]), max(worst_rel, errors[1])
        rows.append(TableRow(case.name, case.shapes, worst_abs, worst_rel, passed))
    return rows


def _errors_unchecked(case, inputs):
    """(max abs, max rel) error of a case that failed its check, measured with no tolerance; inf if not finite."""
    try:
        report = check_grads(case.fn, *inputs, rtol=0.0, atol=np.inf, name=case.name)
    except GradcheckError:  # a gradient or a difference that is NaN or infinite fails even an infinite tolerance
        return np.inf, np.inf
    return report.max_abs_error, report.max_rel_error
