"""Time one VAE training step per implementation, side by side with the GEMM floor.

    python -m benchmarks.bench_step --out results/bench [--quick] [--threads 1]

On a machine shared with other work, pass ``--threads 1``: with every core
already busy, BLAS and OpenMP threads spin waiting for descheduled siblings
and a step (the GEMM floor too) can take ten times longer.

For each batch size, every registered step and the GEMM floor (the step's
11 matrix products alone, ``benchmarks.gemm_floor``) are timed interleaved
by ``harness.compare``; the results go to ``step.json`` (every sample and
the environment), ``step.md`` and ``step.png`` (step time as a multiple of
the floor) in ``--out``. ``judge`` gives every row its products' rate and
its floor multiple with an interval, marks a row faster than the machine
allows invalid, and compares minivae's rows with the others' (ahead, behind
or level: ``benchmarks.verdicts``); with ``--threads N`` every thread is
pinned and checked after each batch (``benchmarks.confinement``).

Plug-in point: ``STEP_FACTORIES`` maps a name to a ``Factory``. The peer
frameworks are registered here; minivae's backends join with::

    from benchmarks.bench_step import main, register
    register("minivae numpy", make_step, numpy_buffers=True)
    register("minivae cupy", make_gpu_step, gpu=True)
    main()

where ``make_step(batch_size, seed)`` returns a zero-argument callable doing
one full training step (forward, backward, Adam lr 1e-3) of the 784-400-20
Bernoulli VAE on a fixed random binary batch, and returns only when the
work is done (GPU steps: wrap with ``harness.synchronized``). A factory that
cannot run here raises ``harness.Unavailable("why, in one line")`` and its
row says so; ``gpu=True`` rows say "no GPU" where there is none.
"""
import argparse
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


def register(name, make_step, *, gpu=False, numpy_buffers=False):
    """Add (or replace) an implementation to time; see the module docstring."""
    STEP_FACTORIES[name] = Factory(make_step, gpu, numpy_buffers)


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


def bench_batch(batch_size, settings, seed, has_gpu, factories=None):
    """{name: stats dict or {"skipped": why}} for one batch size; ``factories`` defaults to ``STEP_FACTORIES``."""
    factories = STEP_FACTORIES if factories is None else factories
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


def run(batch_sizes, settings, seed=0, threads=None, factories=None, peak=None, cores=None):
    """The whole report (see ``benchmarks.harness``); ``threads`` is recorded, not applied.

    ``peak`` is the machine's GEMM rate if already measured (else measured
    here); ``cores`` what ``confinement.confine`` pinned the threads to (None:
    not confined), checked after each batch, once every implementation has run.
    """
    factories = STEP_FACTORIES if factories is None else factories
    load_before, use = os.getloadavg(), harness.MachineUse()
    has_gpu = harness.gpu_name() is not None
    peak = gemm_floor.peak_gflops(repeat=settings.peak_repeat) if peak is None else peak
    batches, checks = {}, []
    for batch_size in batch_sizes:
        batches[str(batch_size)] = bench_batch(batch_size, settings, seed, has_gpu, factories)
        checks.append(confinement.check(cores))
    env = harness.environment() | {"load_average_before": load_before, "other_cores": use.other_cores()}
    return judge({"environment": env, "settings": vars(settings) | {"threads": threads}, "peak_gflops": peak,
                  "flops_per_example": gemm_floor.flops_per_example(), "floor": FLOOR, "batches": batches,
                  "gpu_rows": sorted(name for name, factory in factories.items() if factory.gpu),
                  "confinement": confinement.merge(checks)})


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_step", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for step.json, step.md, step.png")
    parser.add_argument("--quick", action="store_true", help="fewer rounds: well under a minute")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--threads", type=int, default=None,
                        help="run on N cores: cap BLAS/OpenMP/Numba threads, pin every thread (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    cores = confinement.confine(args.threads) if args.threads else None
    report = run(args.batch_sizes, QUICK if args.quick else FULL, args.seed, args.threads, cores=cores)
    os.makedirs(args.out, exist_ok=True)
    harness.write_json(report, os.path.join(args.out, "step.json"))
    harness.write_markdown(report, os.path.join(args.out, "step.md"))
    harness.write_chart(report, os.path.join(args.out, "step.png"))
    print(harness.markdown_table(report), end="")
    print(f"written to {args.out}/step.json, step.md, step.png")


if __name__ == "__main__":
    main()
