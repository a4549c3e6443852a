"""``minivae bench``: the kernels, a training step against the peer frameworks, an epoch, an evaluation, memory.

    minivae bench --quick                   # prints the tables
    minivae bench --out results/bench       # the full run; bench.json, bench.md, bench.png

On the project's 2-core machine the timed parts took 69 s quick (with other
work on 1.2 of its cores) and 403 s in full (at commit c658529): the "Run"
line of the report gives each run's own.

The parts (``--only``), each timed with ``harness.compare`` (interleaved
rounds, medians and quartiles):

- ``micro``: every kernel of every backend at the model's shapes (``benchmarks.micro``);
- ``step``: one training step (forward, backward, Adam) of the 784-400-20
  Bernoulli VAE at batch 32, 128 and 512, for each minivae backend and each
  peer framework installed, beside the GEMM floor (``benchmarks.bench_step``);
- ``epoch``: one epoch of training on Fashion-MNIST at batch 128, per
  backend, beside the GEMM floor of as many examples;
- ``iw``: the importance-weighted log-likelihood with K = 5000 samples on
  1,000 test images (``minivae.likelihood.importance_sampled_log_px``), in
  GFLOP/s against the machine's peak;
- ``memory``: the peak resident memory of ``minivae train`` for one epoch, in
  a subprocess, against its budget: the float32 dataset plus 200 MB
  (200e6 bytes, 190.7 MiB), reported in MiB.

GPU backends, the cuBLAS floor, the captured CuPy step and PyTorch and JAX
on the GPU (``benchmarks.gpu_step``) appear as rows that say "no GPU" where
there is none; ``--batch-sizes 32,128,1024,8192`` gives the GPU's range.

The step's and the epoch's rows are judged at the end against the peak GEMM
rate of the cores the run may use (``benchmarks.verdicts``): each gets its
products' GFLOP/s and its floor multiple with a 95% interval, a row faster
than the peak allows is marked invalid, and minivae is called ahead of,
behind or level with each peer from the intervals. ``--threads N`` pins
every thread (``benchmarks.confinement``), and the report says whether they
all stayed. The report (JSON with every sample, Markdown by
``benchmarks.report``, and a bar chart of step times as multiples of the
floor) records the machine, the BLAS and thread pools, and the load average
before and after: on a machine shared with other work, pass ``--threads 1``.
"""
import dataclasses
import functools
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from minivae import likelihood
from minivae.app.loop import train_epoch
from minivae.app.checkpoint import check_writable
from minivae.app.runconfig import TrainConfig, build_model, prepare_data, start_run
from minivae.app.training import make_step as make_training_step
from minivae.backend import BACKEND_NAMES, BackendUnavailable, load_backend, set_backend
from minivae.commands.argtypes import int_list, name_list, non_negative_int, positive_int
from minivae.errors import MinivaeError

from . import bench_step, confinement, gemm_floor, gpu_step, harness, micro, peers, verdicts
from .bench_engine_step import make_step, on_backend
from .report import markdown, write_report

PARTS = ("micro", "step", "epoch", "iw", "memory")
GPU_BACKENDS = tuple(micro.GPU_RUNTIMES)
FLOOR = bench_step.FLOOR
EPOCH_BATCH = 128
IW_BATCH = 100  # examples encoded at once, as ``minivae evaluate`` does
MEMORY_ALLOWANCE_BYTES = 200_000_000  # the budget's "plus 200 MB": decimal megabytes, not MiB
DEFAULT_OUT = "results/bench"
DATA_CHOICES = ("fashion-mnist", "mnist")  # 28x28 images: the 784-400-20 model's


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of each part to run."""

    step: bench_step.Settings
    micro: bench_step.Settings  # its peak_repeat is not used
    epoch_rounds: int
    epoch_examples: int | None  # the first N training images; None: all of them
    iw_rounds: int
    iw_examples: int
    parts: tuple  # run when --only does not say


QUICK = Plan(step=bench_step.QUICK, micro=bench_step.Settings(rounds=5, warmup=2, min_time=0.005, peak_repeat=0),
             epoch_rounds=1, epoch_examples=10_000, iw_rounds=1, iw_examples=20, parts=PARTS[:-1])
FULL = Plan(step=bench_step.FULL, micro=bench_step.Settings(rounds=15, warmup=3, min_time=0.05, peak_repeat=0),
            epoch_rounds=3, epoch_examples=None, iw_rounds=3, iw_examples=1000, parts=PARTS)


# ----- Backends -----

def backend_statuses(names, has_gpu):
    """{name: None if it can be timed here, else why not in one line}; GPU backends without a GPU say "no GPU"."""
    statuses = {}
    for name in names:
        try:
            note = load_backend(name).note
            statuses[name] = f"{note}: not timed" if note else None  # numba-cuda under the CUDA simulator
        except BackendUnavailable as why:
            statuses[name] = f"no GPU ({why})" if name in GPU_BACKENDS and not has_gpu else str(why)
    return statuses


def _short(why):
    """A backend's reason as a part's row gives it: "no GPU" (the backends table has the rest), or all of it."""
    return "no GPU" if why.startswith("no GPU") else why


def _skipped_rows(statuses):
    """{"minivae name": {"skipped": why}} for the backends that cannot run here."""
    return {f"minivae {name}": {"skipped": _short(why)} for name, why in statuses.items() if why}


def _minivae_step(backend, why, batch_size, seed):
    """``bench_engine_step.make_step`` on ``backend``, or ``Unavailable(why)``."""
    if why:
        raise harness.Unavailable(why)
    return make_step(batch_size, seed, backend=backend)


def step_factories(statuses, with_peers):
    """The step part's implementations: minivae on each backend, then the peers and PyTorch on a GPU."""
    factories = {f"minivae {name}": bench_step.Factory(functools.partial(_minivae_step, name, why),
                                                        gpu=name in GPU_BACKENDS,
                                                        numpy_buffers=name not in GPU_BACKENDS)
                 for name, why in statuses.items()}
    factories |= {name: bench_step.Factory(gpu_step.FACTORIES[name], gpu=True)
                  for name in (bench_step.GPU_FLOOR, "minivae cupy captured")}
    if with_peers:
        factories |= bench_step.STEP_FACTORIES
        factories["torch eager GPU"] = bench_step.Factory(
            functools.partial(peers.make_step, "torch eager", device="cuda"), gpu=True)
        factories["jax jit GPU"] = bench_step.Factory(gpu_step.FACTORIES["jax jit GPU"], gpu=True)
    return factories


# ----- Epoch, importance-weighted evaluation, memory -----

def model_config(args):
    """The 784-400-20 Bernoulli VAE with Adam (lr 1e-3, batch 128) on ``--data``, as ``minivae train`` builds it."""
    return TrainConfig(data=args.data, data_dir=args.data_dir, hidden=(gemm_floor.HIDDEN,),
                             latent_dim=gemm_floor.LATENT, batch_size=EPOCH_BATCH, lr=peers.LEARNING_RATE,
                             epochs=1, seed=args.seed)


def make_epoch(backend, config, data):
    """One epoch of ``loop.train_epoch`` per call on ``backend``, continuing the same run, with the step
    ``minivae train`` takes there (``training.make_step``: recorded and replayed on numba)."""
    set_backend(backend)
    run = start_run(config, data)
    step = make_training_step(run, None, log=lambda line: None)
    step(data.train_x[:config.batch_size])  # load the kernels
    return on_backend(backend, lambda: train_epoch(run, step))


def epoch_floor(examples, batch_size, seed):
    """The GEMM floor of an epoch: the step's products for every full batch and the last, partial one."""
    full, last = divmod(examples, batch_size)
    floors = [gemm_floor.make_floor(batch_size, seed)] * full + ([gemm_floor.make_floor(last, seed)] if last else [])

    def floor():
        for products in floors:
            products()
    return floor


def bench_epoch(statuses, config, data, rounds):
    """{name: stats dict or {"skipped": why}}: one epoch per minivae backend and its GEMM floor."""
    candidates = {FLOOR: epoch_floor(len(data.train_x), config.batch_size, config.seed)}
    candidates |= {f"minivae {name}": make_epoch(name, config, data) for name, why in statuses.items() if not why}
    stats = harness.compare(candidates, rounds=rounds, warmup=0, seed=config.seed)
    return {name: s.to_dict() for name, s in stats.items()} | _skipped_rows(statuses)


def judge_epoch(epoch, statuses, peak):
    """``verdicts.judge_rows`` for the epoch's rows: the CPU rows against ``peak``."""
    cpu_rows = {FLOOR} | {f"minivae {name}" for name in statuses if name not in GPU_BACKENDS}
    verdicts.judge_rows(epoch["rows"], FLOOR, epoch["examples"] * gemm_floor.flops_per_example(), peak, cpu_rows)


def bench_iw(statuses, config, x, k, rounds):
    """{name: stats dict (with "gflops") or {"skipped": why}}: log p(x) by K importance samples per backend."""
    candidates = {}
    for name, why in statuses.items():
        if not why:
            set_backend(name)
            model = build_model(config, x.shape[1])
            candidates[f"minivae {name}"] = on_backend(name, functools.partial(
                likelihood.importance_sampled_log_px, model, x, k, config.seed, IW_BATCH))
    stats = harness.compare(candidates, rounds=rounds, warmup=0, seed=config.seed)
    rows = {name: s.to_dict() | {"gflops": gemm_floor.iw_flops(len(x), k) / s.median / 1e9} for name, s in stats.items()}
    return rows | _skipped_rows(statuses)


def training_peak_memory(backend, config):
    """The max RSS (MiB) of ``minivae train`` for one epoch of ``config`` on ``backend``, run in a subprocess.

    A failed run raises ``MinivaeError`` with the last line it printed on stderr.
    """
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "minivae.cli", "train", "--backend", backend, "--data", config.data,
                "--hidden", str(config.hidden[0]), "--latent-dim", str(config.latent_dim),
                "--batch-size", str(config.batch_size), "--lr", str(config.lr), "--epochs", "1", "--quiet",
                "--seed", str(config.seed), "--out", out]
        argv += ["--data-dir", config.data_dir] if config.data_dir else []
        with open(os.path.join(out, "stderr.txt"), "w+", encoding="utf-8") as stderr:
            status, peak = harness.child_peak_rss_mib(argv, stdout=subprocess.DEVNULL, stderr=stderr)
            stderr.seek(0)
            if status:
                last = (stderr.read().strip().splitlines() or ["no message"])[-1]
                raise MinivaeError(f"minivae train failed (status {status}): {last}")
    return peak


def bench_memory(statuses, config, data):
    """The dataset's float32 size, the budget (dataset + 200 MB) and each CPU backend's peak RSS, all in MiB.

    The budget counts the images as float32 (their size as the model reads
    them), whatever ``data`` holds them as: ``minivae train`` keeps them uint8.
    """
    dataset_bytes = (data.train_x.size + data.test_x.size) * np.dtype(np.float32).itemsize
    rows = {}
    for name, why in statuses.items():
        if why or name in GPU_BACKENDS:
            rows[name] = {"skipped": _short(why) if why else "device memory is not resident-set memory"}
            continue
        try:
            rows[name] = {"peak_rss_mib": training_peak_memory(name, config)}
        except MinivaeError as failed:
            rows[name] = {"skipped": str(failed)}
    return {"dataset_mib": dataset_bytes / harness.MIB, "allowance_mib": MEMORY_ALLOWANCE_BYTES / harness.MIB,
            "budget_mib": (dataset_bytes + MEMORY_ALLOWANCE_BYTES) / harness.MIB, "rows": rows}


# ----- The run -----

def _data_parts(args, plan, parts, statuses):
    """The epoch, iw and memory parts asked for, each a dict, or {"skipped": why} without the data."""
    config = model_config(args)
    try:
        data = prepare_data(config)
    except MinivaeError as why:
        return {part: {"skipped": str(why)} for part in parts}
    results = {}
    if "epoch" in parts:
        subset = dataclasses.replace(data, train_x=data.train_x.subset(slice(plan.epoch_examples)),
                                     train_y=data.train_y[:plan.epoch_examples])  # uint8 as in training
        results["epoch"] = {"examples": len(subset.train_x), "batch_size": config.batch_size,
                            "rows": bench_epoch(statuses, config, subset, plan.epoch_rounds)}
    if "iw" in parts:
        x = data.test_x[:args.iw_examples or plan.iw_examples]
        results["iw"] = {"k": args.iw_samples, "examples": len(x),
                         "rows": bench_iw(statuses, config, x, args.iw_samples, plan.iw_rounds)}
    if "memory" in parts:
        results["memory"] = bench_memory(statuses, config, data)
    return results


def _warn_if_busy(threads, seconds=0.5):
    """One line on stderr when other work keeps cores busy (measured for ``seconds``) and threads are not capped."""
    if threads:
        return
    use = harness.MachineUse()
    time.sleep(seconds)
    other = use.other_cores()
    if other is not None and other > harness.BUSY_OTHER_CORES:
        print(f"minivae bench: the machine is busy (other work keeps {other:.1f} of {os.cpu_count()} cores busy);"
              " with every core's worth of threads, BLAS and Numba threads will spin: consider --threads 1",
              file=sys.stderr)


def run(args, plan, cores=None):
    """The report: settings, backends, peak GEMM rate, each part asked for, then the environment.

    The peak is the better of two measurements, at the start and at the end:
    a burst of other work during one of them would lower it; the rows are
    judged against it at the end. ``cores``: what ``confinement.confine``
    pinned every thread to (None: not confined), checked again at the end.
    """
    load_before, commit = os.getloadavg(), harness.git_commit()  # the code this process runs, read at the start
    use = harness.MachineUse()
    _warn_if_busy(args.threads)
    parts = args.only or plan.parts
    statuses = backend_statuses(args.backends, harness.gpu_name() is not None)
    peak = gemm_floor.peak_gflops(repeat=plan.step.peak_repeat)
    report = {"settings": {"quick": args.quick, "threads": args.threads, "parts": list(parts),
                           "peers": not args.skip_peers, "batch_sizes": args.batch_sizes, "data": args.data,
                           "epoch_batch": EPOCH_BATCH, "plan": dataclasses.asdict(plan)},
              "backends": statuses}
    started = time.perf_counter()
    if "micro" in parts:
        timed = {name: load_backend(name) for name, why in statuses.items() if not why}
        report["micro"] = micro.measure(micro.cases(args.batch_sizes), timed, plan.micro, args.seed)
    if "step" in parts:
        report["step"] = bench_step.run(args.batch_sizes, plan.step, args.seed, args.threads,
                                        step_factories(statuses, not args.skip_peers), peak, cores)
    data_parts = [part for part in ("epoch", "iw", "memory") if part in parts]
    if data_parts:
        report |= _data_parts(args, plan, data_parts, statuses)
    report["seconds"] = time.perf_counter() - started
    _judge(report, max(peak, gemm_floor.peak_gflops(repeat=plan.step.peak_repeat)), statuses, cores)
    report["environment"] = harness.environment() | {"load_average_before": load_before, "commit": commit,
                                                      "other_cores": use.other_cores()}
    return report


def _judge(report, peak, statuses, cores):
    """The final peak, the step's and the epoch's rows judged against it, every thread's CPUs checked again."""
    report["peak_gflops"] = peak
    checks = [report["step"]["confinement"]] if "step" in report else []
    report["confinement"] = confinement.merge([*checks, confinement.check(cores)])
    if "step" in report:
        report["step"]["peak_gflops"] = peak
        bench_step.judge(report["step"])
    if "rows" in report.get("epoch", {}):
        judge_epoch(report["epoch"], statuses, peak)


# ----- minivae bench -----

def add_bench_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, 20 test images for the evaluation, no memory run; prints only")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help=f"write bench.json, bench.md, bench.png here (default {DEFAULT_OUT}; with --quick: none)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="run on N cores: cap BLAS, OpenMP and Numba threads and pin every thread (JAX"
                             " follows the pinning), checked and reported; default: the libraries' own, every core")
    parser.add_argument("--backends", type=name_list(BACKEND_NAMES), default=None,
                        help=f"comma-separated minivae backends (default: --backend's, else {','.join(BACKEND_NAMES)})")
    parser.add_argument("--skip-peers", action="store_true", help="time no peer framework (PyTorch, JAX, autograd)")
    parser.add_argument("--only", type=name_list(PARTS), default=None, metavar="PARTS",
                        help=f"comma-separated parts among {','.join(PARTS)} (default: all; --quick: all but memory)")
    parser.add_argument("--batch-sizes", type=int_list, default=list(bench_step.BATCH_SIZES),
                        help="batch sizes of the kernels and the step, comma-separated (default 32,128,512)")
    parser.add_argument("--data", choices=DATA_CHOICES, default="fashion-mnist",
                        help="the 28x28 images of the epoch, evaluation and memory parts (default fashion-mnist)")
    parser.add_argument("--data-dir", default=None, help="directory of the IDX files (default: where Debian puts them)")
    parser.add_argument("--iw-samples", type=positive_int, default=5000, metavar="K",
                        help="importance samples per test image (default 5000)")
    parser.add_argument("--iw-examples", type=positive_int, default=None, metavar="N",
                        help="test images to evaluate (default 1000; with --quick 20)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seeds every timed model's weights, data order and noise")


def run_bench(args):
    """Run the parts asked for, print the Markdown report, and write the files (always in a full run)."""
    out = args.out or (None if args.quick else DEFAULT_OUT)
    out = check_writable(out) if out else None
    args.backends = args.backends or ([args.backend] if args.backend else list(BACKEND_NAMES))
    cores = confinement.confine(args.threads) if args.threads else None
    report = run(args, QUICK if args.quick else FULL, cores)
    text = markdown(report)
    print(text, end="")
    if out:
        print("report written to " + ", ".join(map(str, write_report(report, text, out))))
    return 0
