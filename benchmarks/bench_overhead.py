"""The engine's overhead per primitive: minivae's time minus the bare NumPy call, on tiny arrays.

On a (4, 4) array the arithmetic costs about a microsecond, so what is left
is the engine: wrapping numbers in Tensors, checking shapes, recording the
graph, walking it backward. For each primitive this times

- forward: the minivae op on inputs with ``requires_grad=True`` (so the graph
  is recorded, as in training) against the same computation in NumPy (the
  same stable formula: ``sigmoid`` through tanh, ``logsumexp`` shifted);
- forward + backward: the op then ``backward(g)`` against the NumPy forward
  plus the NumPy statement of its vector-Jacobian product.

Each number is the median over ``--repeat`` rounds of the mean per-call time
of enough back-to-back calls to last ``--sample-us``, after a warm-up, timed
with ``time.perf_counter_ns`` by ``benchmarks.harness.compare``: every round
takes one sample of each candidate in a shuffled order, so a slow spell on a
shared machine lands on all of them. The target is under 5 us of forward
overhead per primitive; this script reports, it does not assert.

    python -m benchmarks.bench_overhead --repeat 31 --json overhead.json
"""
import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minivae import Tensor, ops
from minivae.commands.argtypes import positive_int

from . import harness

TARGET_US = 5.0
SHAPE = (4, 4)


@dataclass(frozen=True)
class Primitive:
    """A minivae op and its NumPy twin: the forward, and the VJP ``backward(g, out, *arrays)``."""
    name: str
    inputs: tuple  # keys of ``make_arrays``
    ours: Callable
    forward: Callable
    backward: Callable


def make_arrays(seed=0):
    """The fixed inputs, by name: (4, 4) arrays, a positive one for log and div, a (4,) bias."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(SHAPE), "y": rng.standard_normal(SHAPE),
            "positive": rng.random(SHAPE) + 0.5, "w": rng.standard_normal(SHAPE),
            "bias": rng.standard_normal(SHAPE[-1]), "logvar": 0.1 * rng.standard_normal(SHAPE)}


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def _logsumexp(x):
    """ops.logsumexp's statements over axis 1, in bare NumPy."""
    shift = x.max(axis=(1,), keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.exp(x - shift).sum(axis=(1,), keepdims=True)) + shift
    return out.squeeze(axis=(1,))


def _max_share(x, out):
    is_max = x == out[:, None]
    return is_max / is_max.sum(axis=1, keepdims=True)


def _getitem_vjp(g, x):
    grad = np.zeros_like(x)
    grad[1:3] += g
    return grad


def _bias_tanh_vjp(g, out):
    gx = g * (1 - out * out)
    return gx, gx.sum(axis=0)


PRIMITIVES = [
    Primitive("add", ("x", "y"), lambda a, b: a + b, np.add, lambda g, out, x, y: (g, g)),
    Primitive("sub", ("x", "y"), lambda a, b: a - b, np.subtract, lambda g, out, x, y: (g, -g)),
    Primitive("mul", ("x", "y"), lambda a, b: a * b, np.multiply, lambda g, out, x, y: (g * y, g * x)),
    Primitive("div", ("x", "positive"), lambda a, b: a / b, np.divide,
              lambda g, out, x, p: (g / p, -g * x / (p * p))),
    Primitive("add_bias", ("x", "bias"), lambda a, b: a + b, np.add,
              lambda g, out, x, b: (g, g.sum(axis=0))),
    Primitive("neg", ("x",), lambda a: -a, np.negative, lambda g, out, x: -g),
    Primitive("exp", ("x",), ops.exp, np.exp, lambda g, out, x: g * out),
    Primitive("log", ("positive",), ops.log, np.log, lambda g, out, p: g / p),
    Primitive("tanh", ("x",), ops.tanh, np.tanh, lambda g, out, x: g * (1 - out * out)),
    Primitive("sigmoid", ("x",), ops.sigmoid, _sigmoid, lambda g, out, x: g * out * (1 - out)),
    Primitive("relu", ("x",), ops.relu, lambda x: np.maximum(x, 0), lambda g, out, x: g * (x > 0)),
    Primitive("softplus", ("x",), ops.softplus,
              lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), lambda g, out, x: g * _sigmoid(x)),
    Primitive("sum", ("x",), lambda a: a.sum(), np.sum, lambda g, out, x: np.broadcast_to(g, x.shape)),
    Primitive("mean", ("x",), lambda a: a.mean(), np.mean,
              lambda g, out, x: np.broadcast_to(g / x.size, x.shape)),
    Primitive("max_axis", ("x",), lambda a: a.max(axis=1), lambda x: x.max(axis=1),
              lambda g, out, x: g[:, None] * _max_share(x, out)),
    Primitive("logsumexp", ("x",), lambda a: a.logsumexp(axis=1), _logsumexp,
              lambda g, out, x: g[:, None] * np.exp(x - out[:, None])),
    Primitive("reshape", ("x",), lambda a: a.reshape(2, 8), lambda x: x.reshape(2, 8),
              lambda g, out, x: g.reshape(x.shape)),
    Primitive("transpose", ("x",), lambda a: a.T, np.transpose, lambda g, out, x: g.T),
    Primitive("getitem", ("x",), lambda a: a[1:3], lambda x: x[1:3], lambda g, out, x: _getitem_vjp(g, x)),
    Primitive("matmul", ("x", "w"), ops.matmul, np.matmul, lambda g, out, x, w: (g @ w.T, x.T @ g)),
    Primitive("bias_act_tanh", ("x", "bias"), lambda a, b: ops.bias_act(a, b, "tanh"),
              lambda x, b: np.tanh(x + b), lambda g, out, x, b: _bias_tanh_vjp(g, out)),
    Primitive("kl_normal", ("x", "logvar"), ops.kl_normal,
              lambda mu, lv: -0.5 * (1 + lv - mu * mu - np.exp(lv)).sum(axis=-1),
              lambda g, out, mu, lv: (g[:, None] * mu, 0.5 * g[:, None] * np.expm1(lv))),
]


# ----- Timing (benchmarks.harness, on the nanosecond clock) -----

def median_times_us(candidates, repeat, sample_us, warmup):
    """{name: median microseconds per call}, candidates interleaved round by round."""
    stats = harness.compare(candidates, rounds=repeat, warmup=warmup, min_time=sample_us * 1000,
                            clock=time.perf_counter_ns)  # min_time in the clock's unit: ns
    return {name: s.median / 1000 for name, s in stats.items()}


def candidates_for(primitive, arrays):
    """The zero-argument calls to time: NumPy and minivae, forward and forward + backward."""
    xs = [arrays[key] for key in primitive.inputs]
    leaves = [Tensor(x, requires_grad=True) for x in xs]
    g = np.ones(np.shape(primitive.forward(*xs)))
    return {"numpy_forward": lambda: primitive.forward(*xs),
            "minivae_forward": lambda: primitive.ours(*leaves),
            "numpy_forward_backward": lambda: primitive.backward(g, primitive.forward(*xs), *xs),
            "minivae_forward_backward": lambda: primitive.ours(*leaves).backward(g)}


def measure(primitives, repeat, sample_us, warmup):
    arrays = make_arrays()
    rows = []
    for primitive in primitives:
        times = median_times_us(candidates_for(primitive, arrays), repeat, sample_us, warmup)
        rows.append({"primitive": primitive.name, **times,
                     "forward_overhead": times["minivae_forward"] - times["numpy_forward"],
                     "forward_backward_overhead": (times["minivae_forward_backward"]
                                                   - times["numpy_forward_backward"])})
    return rows


# ----- Report -----

COLUMNS = [("numpy_forward", "np fwd"), ("minivae_forward", "mv fwd"), ("forward_overhead", "overhead"),
           ("numpy_forward_backward", "np f+b"), ("minivae_forward_backward", "mv f+b"),
           ("forward_backward_overhead", "overhead")]


def format_table(rows):
    """One line per primitive, microseconds; primitives over the forward target are flagged."""
    lines = [f"{'primitive':<14}" + "".join(f"{title:>10}" for _, title in COLUMNS)
             + "   (microseconds per call, medians)"]
    for row in rows:
        flag = "  > target" if row["forward_overhead"] > TARGET_US else ""
        lines.append(f"{row['primitive']:<14}" + "".join(f"{row[key]:10.2f}" for key, _ in COLUMNS) + flag)
    over = [row["primitive"] for row in rows if row["forward_overhead"] > TARGET_US]
    lines.append(f"forward overhead over {TARGET_US:g} us: {', '.join(over) if over else 'none'}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=positive_int, default=31, help="timed rounds per candidate (default 31)")
    parser.add_argument("--sample-us", type=positive_int, default=2000,
                        help="calls per sample: enough to last this many microseconds (default 2000)")
    parser.add_argument("--warmup", type=positive_int, default=200, help="untimed calls first (default 200)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="time only these primitives")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    primitives = [p for p in PRIMITIVES if not args.only or p.name in args.only]
    if not primitives:
        parser.error(f"--only matched none of: {', '.join(p.name for p in PRIMITIVES)}")
    rows = measure(primitives, args.repeat, args.sample_us, args.warmup)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": harness.environment(), "shape": list(SHAPE), "dtype": "float64",
                       "target_us": TARGET_US, "repeat": args.repeat, "sample_us": args.sample_us,
                       "rows": rows}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
