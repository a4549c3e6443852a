"""Where minivae's training step spends its time: products, elementwise kernels, the optimizer, the tape, allocation.

    python -m minivae.benchmarks.breakdown --threads 1 [--clock cpu]   # one core
    python -m minivae.benchmarks.breakdown                             # the libraries' default threads

For each batch size, one eager step (``bench_engine_step.make_eager_step``) runs with
every kernel of the backend's kernel set recorded (its function, arguments
and result) and every gradient copied into the optimizer's flat buffer
(``Tensor._accumulate``) noted. Then these are timed interleaved
(``harness.compare``), each a part of the step replayed on the step's own
arrays, without the tape:

- the whole eager step, and the GEMM floor (the same 11 products, ``gemm_floor``);
- the step as ``minivae train`` runs it on a backend that records it (numba):
  recorded once and replayed (``bench_engine_step.make_step``);
- every recorded kernel call in order (each allocating its outputs, as in the step);
- the step's products alone, and again into preallocated outputs: the
  difference is what allocating the products' outputs costs;
- each family of elementwise kernels (a forward and its backward), and the optimizer;
- the tape alone: the step with every kernel answered from the recording (the
  graph, the backward walk, NumPy's small operations between kernels, the
  gradient copies into the flat buffer), and those copies alone.

Holding the recorded arrays alive moves the step's own allocations into
fresh pages, which glibc's malloc then hands back to the system after every
step (2,500 page faults per step at batch 512, against none for the step
alone, in the benchmark too); so the breakdown first asks malloc to keep
freed memory (``keep_freed_memory``), and counts the step's page faults
before recording.

What the step takes beyond the replayed kernels and the tape alone, round by
round, is "the rest": freeing the step's arrays (the tape alone returns the
recording's, which stay), and noise. (Timed inside the step, the kernels take
what their replays take.) Every part is a multiple of the floor of the same round, with a 95% bootstrap
interval (``verdicts.floor_ratio``): ratios survive a busy machine better than
times. ``--clock cpu`` times by the calling thread's CPU time, which a
descheduled spell does not count (only with ``--threads 1``, where every
kernel runs on that thread). Also counted: kernel calls, the arrays they
return, and minor page faults per step.
"""
import argparse
import contextlib
import ctypes
import functools
import os
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np

from minivae.commands.argtypes import int_list, positive_int

from . import confinement, gemm_floor, harness, verdicts
from .bench_engine_step import RECORDED, make_eager_step, make_step

FAMILIES = {  # a forward and its backward, as the step calls them
    "bias_act": ("bias_act", "bias_act_backward"),
    "reparameterize": ("standard_normal", "reparameterize", "reparameterize_backward"),
    "kl_normal": ("kl_normal", "kl_normal_backward"),
    "bernoulli_log_prob": ("bernoulli_log_prob", "bernoulli_log_prob_backward"),
}
OPTIMIZER = ("adam_step",)
IN_PLACE = ("adam_step", "sgd_step")  # kernels updating their arguments
WARMUP = 3  # steps before recording, and calls of each part before timing
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@dataclass
class Call:
    name: str
    fn: object
    args: tuple
    kwargs: dict
    result: object


@contextlib.contextmanager
def recording(kernels):
    """Inside the block every kernel of the kernel-set module ``kernels`` is recorded: yields (calls, copies).

    ``calls`` lists each kernel ``Call``; ``copies`` each (gradient view, gradient) that ``Tensor._accumulate`` wrote.
    """
    from minivae.kernels.reference import KERNEL_NAMES
    from minivae.tensor import Tensor
    calls, copies = [], []
    originals = {name: getattr(kernels, name) for name in KERNEL_NAMES}
    accumulate = Tensor._accumulate

    def recorder(name, fn):
        @functools.wraps(fn)  # the engine finds a kernel by its name (``kernel_ops._kernel``)
        def record(*args, **kwargs):
            result = fn(*args, **kwargs)
            calls.append(Call(name, fn, args, kwargs, result))
            return result
        return record

    def noted_accumulate(tensor, grad):
        accumulate(tensor, grad)
        copies.append((tensor._grad, grad))

    for name, fn in originals.items():
        setattr(kernels, name, recorder(name, fn))
    Tensor._accumulate = noted_accumulate
    try:
        yield calls, copies
    finally:
        Tensor._accumulate = accumulate
        for name, fn in originals.items():
            setattr(kernels, name, fn)


def _own_buffers(call):
    """``call`` with its array arguments copied if its kernel updates them in place (the optimizer's)."""
    if call.name not in IN_PLACE:
        return call
    args = tuple(arg.copy() if isinstance(arg, np.ndarray) else arg for arg in call.args)
    return Call(call.name, call.fn, args, call.kwargs, call.result)


def replay(calls):
    """The recorded kernel calls again, in order, on the same arrays (an optimizer on copies: the model stays)."""
    calls = [_own_buffers(call) for call in calls]

    def run():
        for call in calls:
            call.fn(*call.args, **call.kwargs)
    return run


def preallocated_products(calls):
    """The recorded products again, each into an output allocated once (``np.matmul(out=)``)."""
    products = []
    for call in calls:
        a, b = call.args[:2]
        a = a.T if call.kwargs.get("trans_a") else a
        b = b.T if call.kwargs.get("trans_b") else b
        products.append((a, b, np.empty_like(call.result)))

    def run():
        for a, b, out in products:
            np.matmul(a, b, out=out)
    return run


def copy_gradients(copies):
    """The gradient copies into the flat buffer again."""
    def run():
        for view, grad in copies:
            view[...] = grad
    return run


def tape_alone(step, kernels, calls):
    """The step with each kernel of ``kernels`` answered from the recording, in order: the engine's own work."""
    results = {}
    for call in calls:
        results.setdefault(call.name, []).append(call.result)
    originals = {name: getattr(kernels, name) for name in results}
    pending = {}

    def answering(name):
        @functools.wraps(originals[name])
        def answer(*args, **kwargs):
            return next(pending[name])
        return answer
    stand_ins = {name: answering(name) for name in results}

    def run():
        pending.update((name, iter(answers)) for name, answers in results.items())
        for name, stand_in in stand_ins.items():
            setattr(kernels, name, stand_in)
        try:
            step()
        finally:
            for name, original in originals.items():
                setattr(kernels, name, original)
    return run


def parts(calls, copies, step, kernels, floor, replayed):
    """{part name: callable}: the step, the floor, the replayed step (if any), the tape alone, each part replayed."""
    products = [call for call in calls if call.name == "matmul"]
    candidates = {"step": step, "GEMM floor": floor, **({"replayed step": replayed} if replayed else {}),
                  "kernels": replay(calls), "products": replay(products),
                  "products, preallocated": preallocated_products(products),
                  "tape": tape_alone(step, kernels, calls), "gradient copies": copy_gradients(copies)}
    for family, names in {**FAMILIES, "optimizer": OPTIMIZER}.items():
        candidates[family] = replay([call for call in calls if call.name in names])
    return candidates


def _outputs(result):
    return [array for array in (result if isinstance(result, tuple) else (result,)) if isinstance(array, np.ndarray)]


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse (no trimming, no mmap per array); False elsewhere."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))


def page_faults(step, steps=20):
    """Minor page faults per call of ``step``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def counts(calls, faults):
    """Kernel calls, the arrays they return (count, MiB), and ``faults``, per step."""
    arrays = [array for call in calls for array in _outputs(call.result)]
    return {"kernel_calls": len(calls), "arrays": len(arrays), "mib": sum(a.nbytes for a in arrays) / harness.MIB,
            "page_faults": faults}


def derived(samples):
    """Round by round: what the kernels cost in the step beyond their replay, and the products' allocation."""
    rounds = range(len(samples["step"]))
    return {"in the step": [samples["step"][i] - samples["kernels"][i] - samples["tape"][i] for i in rounds],
            "products' allocation": [samples["products"][i] - samples["products, preallocated"][i] for i in rounds]}


def breakdown(batch_size, backend, rounds, min_time, seed, clock):
    """{"rows": {part: {"median", "floor_ratio"}}, "counts": ...} for one batch size."""
    import minivae
    step = make_eager_step(batch_size, seed, backend)
    for _ in range(WARMUP):
        step()
    faults = page_faults(step)
    with recording(minivae.get_backend().kernels) as (calls, copies):
        step()
    replayed = make_step(batch_size, seed, backend) if backend in RECORDED else None
    candidates = parts(calls, copies, step, minivae.get_backend().kernels, gemm_floor.make_floor(batch_size, seed),
                       replayed)
    stats = harness.compare(candidates, rounds=rounds, warmup=WARMUP, min_time=min_time, seed=seed, clock=clock)
    samples = {name: s.samples for name, s in stats.items()} | derived({name: s.samples for name, s in stats.items()})
    floor = samples["GEMM floor"]
    rows = {name: {"median": float(np.median(values)), "floor_ratio": verdicts.floor_ratio(values, floor)}
            for name, values in samples.items()}
    return {"rows": rows, "counts": counts(calls, faults)}


LABELS = {
    "step": "whole step, eager",
    "replayed step": "whole step, recorded and replayed (as minivae train runs it)",
    "GEMM floor": "GEMM floor (the 11 products into preallocated outputs)",
    "kernels": "every kernel call replayed, no tape (the rows below up to Adam)",
    "products": "products, as the step runs them",
    "products, preallocated": "  the same, into preallocated outputs",
    "products' allocation": "  the difference: allocating their outputs",
    "bias_act": "bias + activation, forward and backward (4 + 4 calls)",
    "reparameterize": "sampling eps, reparameterize and its backward",
    "kl_normal": "KL and its backward",
    "bernoulli_log_prob": "Bernoulli log-likelihood and its backward",
    "optimizer": "Adam (one fused pass over every parameter)",
    "tape": "the tape alone, kernels answered from the recording: graph, backward walk, NumPy glue",
    "gradient copies": "  of which weight gradients copied into the flat buffer",
    "in the step": "the rest: step - replayed kernels - tape alone (freeing the step's arrays; noise)",
}


def markdown(results, header):
    """One table per batch size: each part's time, its multiple of the floor with interval, its share of the step."""
    lines = list(header)
    for batch, result in results.items():
        rows, step = result["rows"], result["rows"]["step"]["median"]
        lines += ["", f"Batch {batch}:", "", "| part | time | x floor [95%] | share of step |", "|---|---|---|---|"]
        for name, label in LABELS.items():
            if name not in rows:
                continue
            row, ratio = rows[name], rows[name]["floor_ratio"]
            lines.append(f"| {label} | {harness.format_duration(row['median'])} | {ratio['ratio']:.3f}"
                         f" [{ratio['low']:.3f}, {ratio['high']:.3f}] | {100 * row['median'] / step:.0f}% |")
        c = result["counts"]
        lines += ["", f"{c['kernel_calls']} kernel calls returning {c['arrays']} arrays ({c['mib']:.2f} MiB)"
                      f" and {c['page_faults']:.1f} minor page faults per step."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivae.benchmarks.breakdown", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=positive_int, default=None, help="run on N cores, every thread pinned")
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--batch-sizes", type=int_list, default=[32, 128, 512])
    parser.add_argument("--rounds", type=positive_int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per sample (default 0.05)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (other threads' work would not be counted)")
    cores = confinement.confine(args.threads) if args.threads else None
    kept = keep_freed_memory()
    load_before, started = os.getloadavg(), time.perf_counter()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    results = {str(b): breakdown(b, args.backend, args.rounds, args.min_time, args.seed, clock)
               for b in args.batch_sizes}
    header = [f"minivae {args.backend} step, {args.rounds} interleaved rounds, {args.clock} clock,"
              f" threads {args.threads or 'as the libraries choose'}; commit {harness.git_commit()};"
              f" load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
              f" ({time.perf_counter() - started:.0f} s); malloc keeps freed memory: {'yes' if kept else 'no'};"
              f" confinement: {confinement.describe(confinement.check(cores))}."]
    sys.stdout.write(markdown(results, header))


if __name__ == "__main__":
    main()
