"""The step part of ``minivae bench``: one VAE training step per implementation, side by side with the GEMM floor.

    minivae bench --only step --out results/bench [--quick] [--threads 1]

On a machine shared with other work, pass ``--threads 1``: with every core
already busy, BLAS and OpenMP threads spin waiting for descheduled siblings
and a step (the GEMM floor too) can take ten times longer.

For each batch size, every implementation ``run`` is given and the GEMM
floor (the step's 11 matrix products alone, ``benchmarks.gemm_floor``) are
timed interleaved by ``harness.compare``. ``judge`` gives every row its
products' rate and its floor multiple with an interval, marks a row faster
than the machine allows invalid, and compares minivae's rows with the
others' (ahead, behind or level: ``benchmarks.verdicts``); with
``--threads N`` every thread is pinned and checked after each batch
(``benchmarks.confinement``).

An implementation is a ``Factory``: ``STEP_FACTORIES`` holds the peer
frameworks', and ``benchmarks.suite.step_factories`` adds minivae's backends
and the GPU rows. Its ``make_step(batch_size, seed)`` returns a zero-argument
callable doing one full training step (forward, backward, Adam lr 1e-3) of
the 784-400-20 Bernoulli VAE on a fixed random binary batch, and returns only
when the work is done (GPU steps: wrap with ``harness.synchronized``). A
factory that cannot run here raises ``harness.Unavailable("why, in one
line")`` and its row says so; ``gpu=True`` rows say "no GPU" where there is none.
"""
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

from minivae.errors import one_line

from . import confinement, gemm_floor, harness, peers, verdicts

FLOOR = "GEMM floor"
GPU_FLOOR = "cuBLAS floor"  # the step's products alone on the GPU, each its own call (``benchmarks.gpu_step``)
EAGER_GPU_ROWS = ("minivae cupy", "minivae numba-cuda", "torch eager GPU")  # each product its own call, as the
#  cuBLAS floor's: held to it (``verdicts.judge_rows``)
BATCH_SIZES = (32, 128, 512)


@dataclass(frozen=True)
class Factory:
    make_step: Callable   # (batch_size, seed) -> zero-argument step callable
    gpu: bool = False     # skipped with "no GPU" where no CUDA device exists
    numpy_buffers: bool = False  # arrays live in NumPy: report tracemalloc's peak per step


STEP_FACTORIES = {name: Factory(functools.partial(peers.make_step, name), numpy_buffers=peer.numpy_buffers)
                  for name, peer in peers.PEERS.items()}


@dataclass(frozen=True)
class Settings:
    rounds: int
    warmup: int
    min_time: float  # seconds per sample
    peak_repeat: int


QUICK = Settings(rounds=5, warmup=2, min_time=0.01, peak_repeat=3)
FULL = Settings(rounds=25, warmup=5, min_time=0.1, peak_repeat=7)


def _build_steps(batch_size, seed, has_gpu, factories):
    """({name: step} of the implementations that can run, {name: why not} of the rest).

    A GPU step is called once here: one that cannot be built, or fails on the
    device, gets its failure in one line as its cell, and the other rows are timed.
    """
    steps, skipped = {}, {}
    for name, factory in factories.items():
        if factory.gpu and not has_gpu:
            skipped[name] = "no GPU"
            continue
        try:
            steps[name] = factory.make_step(batch_size, seed)
            if factory.gpu:
                steps[name]()
        except harness.Unavailable as why:
            skipped[name] = str(why)
        except Exception as failure:
            if not factory.gpu:
                raise
            steps.pop(name, None)
            skipped[name] = "failed: " + one_line(failure)
    steps[FLOOR] = gemm_floor.make_floor(batch_size, seed)
    return steps, skipped


def bench_batch(batch_size, settings, seed, has_gpu, factories):
    """{name: stats dict or {"skipped": why}} for one batch size: ``factories``' steps and the GEMM floor."""
    steps, skipped = _build_steps(batch_size, seed, has_gpu, factories)
    stats = harness.compare(steps, rounds=settings.rounds, warmup=settings.warmup,
                            min_time=settings.min_time, seed=seed)
    rows = {name: stats[name].to_dict() for name in steps}
    traced = {FLOOR} | {name for name, factory in factories.items() if factory.numpy_buffers}
    for name in traced & rows.keys():
        rows[name]["tracemalloc_peak_mib"] = harness.traced_peak_mib(steps[name])
    return rows | {name: {"skipped": why} for name, why in skipped.items()}


def judge(report):
    """Judge every CPU row against ``report["peak_gflops"]``, every eager GPU row against the cuBLAS floor,
    and compare minivae's CPU rows with the others'.

    Called again whenever the peak changes (the suite measures it at the start and the end).
    """
    gpu_rows = set(report["gpu_rows"])
    for batch, rows in report["batches"].items():
        cpu_rows = set(rows) - gpu_rows
        verdicts.judge_rows(rows, FLOOR, report["flops_per_example"] * int(batch), report["peak_gflops"], cpu_rows,
                            GPU_FLOOR, EAGER_GPU_ROWS)
    names = {name for rows in report["batches"].values() for name in rows} - gpu_rows - {FLOOR}
    ours = sorted(name for name in names if name.startswith("minivae "))
    report["comparisons"] = verdicts.compare_batches(report["batches"], ours, sorted(names - set(ours)))
    return report


def run(batch_sizes, settings, seed, threads, factories, peak, cores):
    """The whole report (see ``benchmarks.harness``); ``threads`` is recorded, not applied.

    ``peak`` is the machine's GEMM rate, measured by the caller; ``cores``
    what ``confinement.confine`` pinned the threads to (None: not confined),
    checked after each batch, once every implementation has run.
    """
    load_before, use = os.getloadavg(), harness.MachineUse()
    has_gpu = harness.gpu_name() is not None
    batches, checks = {}, []
    for batch_size in batch_sizes:
        batches[str(batch_size)] = bench_batch(batch_size, settings, seed, has_gpu, factories)
        checks.append(confinement.check(cores))
    env = harness.environment() | {"load_average_before": load_before, "other_cores": use.other_cores()}
    return judge({"environment": env, "settings": vars(settings) | {"threads": threads}, "peak_gflops": peak,
                  "flops_per_example": gemm_floor.flops_per_example(), "floor": FLOOR, "batches": batches,
                  "gpu_rows": sorted(name for name, factory in factories.items() if factory.gpu),
                  "confinement": confinement.merge(checks)})

