"""Micro benchmarks: every kernel of every backend, at the shapes of the 784-400-20 VAE.

For each kernel of the contract (``minivae.kernels.reference.KERNEL_NAMES``)
and each size, every backend runs the same calls on the same inputs, timed
interleaved by ``harness.compare``. A row gives each backend's median time,
its rate and its speed-up over the ``numpy`` backend (numpy's time divided
by its own):

- ``matmul`` in GFLOP/s (2 FLOP per multiply-add): the 11 products of one
  training step (``gemm_floor.products``) at each batch size, and one square
  product;
- every other kernel in GB/s of memory traffic: each input array read once,
  each result (and each buffer updated in place) written once;
- ``make_rng``, ``rng_state`` and ``restore_rng`` in time only (saving and
  restoring a device generator copies its states between host and device).

Shapes at batch B, float32: hidden activations (B, 400) with ReLU; latents
(B, 20) with one sample (1, B, 20); pixels (B, 784) with logits (1, B, 784);
the log-weights of importance sampling (500, B), reduced over the 500
samples; the optimizers over one flat buffer of the model's 652,824
parameters (the same at every batch size).
"""
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from minivae.backend import load_backend
from minivae.kernels import reference
from minivae.kernels.reference import KERNEL_NAMES

from . import gemm_floor, harness

HIDDEN, LATENT, PIXELS = gemm_floor.HIDDEN, gemm_floor.LATENT, gemm_floor.X
LAYERS = ((PIXELS, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, PIXELS))  # mu|logvar heads fused
PARAMETERS = sum(fan_in * fan_out + fan_out for fan_in, fan_out in LAYERS)  # 652,824
IW_CHUNK = 500  # samples per example reduced at once (likelihood.DEFAULT_CHUNK)
SIGMA = 0.1
CUBE = 1024
GPU_RUNTIMES = {"cupy": "cupy", "numba-cuda": "numba"}  # for harness.synchronized


class Array(NamedTuple):
    """A float32 input to draw: standard normal times ``scale``, or 0/1 pixels, or its absolute value."""

    shape: tuple
    scale: float = 1.0
    kind: str = "normal"  # "normal", "binary" or "nonnegative"


RNG = "rng"  # stands for the backend's own generator, ``kernels.make_rng(seed)``
RNG_STATE = "rng state"  # stands for that generator's ``kernels.rng_state``


@dataclass(frozen=True)
class Case:
    """Calls of one kernel timed together; ``Array``, ``RNG`` and ``RNG_STATE`` arguments are made on each backend."""

    kernel: str
    size: str
    calls: tuple           # one tuple of positional arguments per call
    flops: int = 0         # matmul: 2 m k n per product
    written: tuple = ()    # positions of the arguments a kernel updates in place


# ----- The cases -----

def _product(product):
    """matmul's arguments for one ``gemm_floor.Product``, operands stored as the step stores them."""
    a = (product.k, product.m) if product.transpose_a else (product.m, product.k)
    b = (product.n, product.k) if product.transpose_b else (product.k, product.n)
    return Array(a), Array(b), product.transpose_a, product.transpose_b


def batch_cases(b):
    """Every kernel that depends on the batch, at batch ``b``."""
    hidden, latent, sample = (b, HIDDEN), (b, LATENT), (1, b, LATENT)
    pixels, logits, logvar = Array((b, PIXELS), kind="binary"), Array((1, b, PIXELS)), Array(latent, 0.1)
    size = f"batch {b}"
    return [
        Case("matmul", f"11 step products, batch {b}", tuple(map(_product, gemm_floor.products(b))),
             flops=gemm_floor.flops_per_example() * b),
        Case("bias_act", size, ((Array(hidden), Array((HIDDEN,)), "relu"),)),
        Case("bias_act_backward", size, ((Array(hidden), Array(hidden, kind="nonnegative"), "relu"),)),
        Case("standard_normal", size, ((RNG, sample, np.float32),)),
        Case("reparameterize", size, ((Array(latent), logvar, Array(sample)),)),
        Case("reparameterize_backward", size, ((Array(sample), logvar, Array(sample)),)),
        Case("kl_normal", size, ((Array(latent), logvar),)),
        Case("kl_normal_backward", size, ((Array((b,)), Array(latent), logvar),)),
        Case("bernoulli_log_prob", size, ((pixels, logits),)),
        Case("bernoulli_log_prob_backward", size, ((Array((1, b)), pixels, logits),)),
        Case("gaussian_log_prob", size, ((pixels, logits, SIGMA),)),
        Case("gaussian_log_prob_backward", size, ((Array((1, b)), pixels, logits, SIGMA),)),
        Case("logsumexp", size, ((Array((IW_CHUNK, b), 10.0), 0),)),
    ]


def fixed_cases(cube=CUBE):
    """The kernels whose size does not follow the batch: a square product, a generator, the optimizers."""
    flat, squares = Array((PARAMETERS,)), Array((PARAMETERS,), kind="nonnegative")
    size = f"{PARAMETERS:,} parameters"
    return [
        Case("matmul", f"{cube} x {cube} x {cube}", ((Array((cube, cube)), Array((cube, cube))),),
             flops=2 * cube**3),
        Case("make_rng", "one generator", ((0,),)),
        Case("rng_state", "one generator", ((RNG,),)),
        Case("restore_rng", "one generator", ((RNG_STATE,),)),
        Case("adam_step", size, ((flat, flat, flat, squares, 1, 1e-3),), written=(0, 2, 3)),
        Case("sgd_step", size, ((flat, flat, flat, 1e-3, 0.9),), written=(0, 2)),
    ]


def cases(batch_sizes, cube=CUBE):
    """Every case, in ``KERNEL_NAMES`` order, sizes ascending within a kernel."""
    every = [case for b in sorted(batch_sizes) for case in batch_cases(b)] + fixed_cases(cube)
    return sorted(every, key=lambda case: KERNEL_NAMES.index(case.kernel))


# ----- Inputs, work, timing -----

def _draw(spec, rng):
    if spec.kind == "binary":
        return (rng.random(spec.shape) < 0.5).astype(np.float32)
    values = spec.scale * rng.standard_normal(spec.shape, dtype=np.float32)
    return np.abs(values) if spec.kind == "nonnegative" else values


def _arguments(case, backend, seed):
    """Each call's arguments on ``backend``: the same draws on every backend for a seed."""
    rng = np.random.default_rng(seed)

    def make(argument):
        if isinstance(argument, Array):
            return backend.xp.asarray(_draw(argument, rng))
        if argument == RNG_STATE:
            return backend.kernels.rng_state(backend.kernels.make_rng(seed))
        return backend.kernels.make_rng(seed) if argument == RNG else argument
    return [tuple(map(make, call)) for call in case.calls]


def candidate(case, backend, seed=0):
    """A zero-argument callable running ``case`` on ``backend``; on a GPU it waits for the device."""
    kernel = getattr(backend.kernels, case.kernel)
    calls = _arguments(case, backend, seed)

    def run():
        for arguments in calls:
            kernel(*arguments)
    return harness.synchronized(run, GPU_RUNTIMES[backend.name]) if backend.name in GPU_RUNTIMES else run


def traffic(case):
    """Bytes one run of ``case`` moves: array inputs read once, results and in-place buffers written once.

    The results' sizes come from running the NumPy reference once.
    """
    total = 0
    for arguments in _arguments(case, load_backend("numpy"), seed=0):
        arrays = [a for a in arguments if isinstance(a, np.ndarray)]
        result = getattr(reference, case.kernel)(*arguments)
        results = [r for r in (result if isinstance(result, tuple) else (result,)) if isinstance(r, np.ndarray)]
        total += sum(a.nbytes for a in arrays + results) + sum(arguments[i].nbytes for i in case.written)
    return total


def measure(cases_to_run, backends, settings, seed=0):
    """One row per case: its work and ``{backend name: Stats.to_dict()}``, the backends timed interleaved.

    ``backends`` maps names to loaded ``minivae.backend.Backend`` objects;
    ``settings`` gives ``rounds``, ``warmup`` and ``min_time`` (see ``harness.compare``).
    """
    rows = []
    for case in cases_to_run:
        stats = harness.compare({name: candidate(case, backend, seed) for name, backend in backends.items()},
                                rounds=settings.rounds, warmup=settings.warmup, min_time=settings.min_time,
                                seed=seed)
        rows.append({"kernel": case.kernel, "size": case.size, "flops": case.flops,
                     "bytes": 0 if case.flops else traffic(case),
                     "times": {name: s.to_dict() for name, s in stats.items()}})
    return rows


# ----- Report -----

def _rate(row, seconds):
    """'41.2 GFLOP/s', '3.1 GB/s', or '' for a kernel that does neither."""
    if row["flops"]:
        return f"{row['flops'] / seconds / 1e9:.3g} GFLOP/s"
    return f"{row['bytes'] / seconds / 1e9:.3g} GB/s" if row["bytes"] else ""


def _cell(row, name):
    """'1.23 ms, 4.5 GB/s, 2.10x numpy': median, rate, speed-up over the numpy backend."""
    median = row["times"][name]["median"]
    parts = [harness.format_duration(median), _rate(row, median)]
    if name != "numpy" and "numpy" in row["times"]:
        parts.append(f"{row['times']['numpy']['median'] / median:.2f}x numpy")
    return ", ".join(part for part in parts if part)


def markdown(rows, timed):
    """One Markdown line per kernel and size, a column per backend in ``timed``, and the legend."""
    lines = ["| kernel | size | " + " | ".join(timed) + " |", "|---" * (len(timed) + 2) + "|"]
    lines += [f"| {row['kernel']} | {row['size']} | " + " | ".join(_cell(row, name) for name in timed) + " |"
              for row in rows]
    legend = ("Median per call; rate: GFLOP/s for products (2 FLOP per multiply-add), else GB/s of memory"
              " traffic (inputs read once, outputs written once); Nx numpy: the numpy backend's time over"
              " this one, timed interleaved.")
    return [*lines, "", legend]
