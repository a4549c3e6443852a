"""The GPU acceptance check: the user's commands on each GPU backend, beside numpy, in one Markdown report.

    python -m minivae.benchmarks.gpu_check [--out DIR] [--data-dir DIR]

On a machine with a CUDA GPU (its time on an H200 not yet measured) it

1. lists each backend as available or the one line why not;
2. trains 2 epochs of the 784-400-20 Bernoulli VAE on Fashion-MNIST on numpy,
   cupy (eager, and captured with ``--cuda-graph``) and numba-cuda (``minivae
   train``, each in its own process) and puts the test ELBOs side by side:
   they must agree within ``ELBO_TOLERANCE``;
3. on each GPU run, trains 1 epoch and resumes it to 2: the checkpoint must be
   bit-identical to the 2-epoch run's;
4. on each GPU backend, runs ``minivae evaluate --iw-samples 5000`` on the
   first 1,000 test images;
5. times one training step (batch 128) per backend, and the captured one;
6. runs the tests marked ``gpu`` (``pytest -m gpu tests``, from a checkout);

and writes ``gpu_check.md`` whatever fails: a stage or a row that fails is a
FAIL row with its cause in one line, and the rest still run; the report so
far is written after each stage, so a run stopped part-way leaves it. Exit
status 0 when every check passes, 1 when one fails; without a GPU it says so
in one line, writes nothing, and exits 2.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minivae.app.checkpoint import check_writable, load_checkpoint
from minivae.backend import available_backends
from minivae.errors import MinivaeError, one_line
from minivae.versions import GPU_INSTALL

from . import gpu_step, harness
from .bench_engine_step import make_step
from .micro import GPU_RUNTIMES

GPU_BACKENDS = tuple(GPU_RUNTIMES)
RUNS = {"numpy": ("numpy",), "cupy": ("cupy",), "cupy --cuda-graph": ("cupy", "--cuda-graph"),
        "numba-cuda": ("numba-cuda",)}  # each run's label: its backend, then any option of ``minivae train``
GPU_RUNS = tuple(label for label in RUNS if label != "numpy")
ELBO_TOLERANCE = 0.5  # nats: float32 on different kernels and generators, after 2 epochs
MODEL = ["--data", "fashion-mnist", "--hidden", "400", "--latent-dim", "20", "--batch-size", "128",
         "--lr", "1e-3", "--plot-interval", "0", "--quiet"]
IW_SAMPLES, IW_EXAMPLES = 5000, 1000
TESTS = Path(__file__).resolve().parent.parent / "tests"


def require_gpu():
    """Raise a one-line MinivaeError unless nvidia-smi finds a CUDA GPU."""
    if harness.gpu_name() is None:
        raise MinivaeError("gpu_check: no CUDA GPU here (nvidia-smi finds none); run it on a machine with an "
                           f"NVIDIA GPU after {GPU_INSTALL}")


def attempt(work, *args):
    """(work(*args), None), or (None, the failure in one line) whatever ``work`` raises."""
    try:
        return work(*args), None
    except Exception as failure:  # a failing stage is a FAIL row, and the check goes on
        return None, one_line(failure)


def minivae(*argv):
    """Run ``minivae ARGV`` in a fresh process on the real device; (exit status, stdout, stderr)."""
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-m", "minivae.cli", *map(str, argv)], capture_output=True,
                          text=True, env=env)
    return done.returncode, done.stdout, done.stderr


def train(label, out, epochs, data_dir, *extra):
    """``minivae train`` of the check's model for run ``label``; its checkpoint, or RuntimeError with stderr's end."""
    backend, *options = RUNS[label]
    data = ["--data-dir", data_dir] if data_dir else []
    status, _, err = minivae("train", "--backend", backend, *options, *MODEL, *data, "--epochs", epochs,
                             "--out", out, *extra)
    if status != 0:
        raise RuntimeError(f"minivae train --backend {backend} {' '.join(options)}".rstrip()
                           + f" failed: {(err.strip().splitlines() or ['no message'])[-1]}")
    return Path(out) / "checkpoint.npz"


def last_test_elbo(checkpoint):
    rows = (Path(checkpoint).parent / "metrics.jsonl").read_text().splitlines()
    return json.loads(rows[-1])["test_elbo"]


def same_run(a, b):
    """True when two checkpoints hold bit-identical arrays, and the same generators, optimizer and history."""
    (arrays_a, meta_a), (arrays_b, meta_b) = load_checkpoint(a), load_checkpoint(b)
    if arrays_a.keys() != arrays_b.keys():
        return False
    same_arrays = all(np.array_equal(arrays_a[name], arrays_b[name]) for name in arrays_a)

    def history(meta):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in meta["history"]]
    return same_arrays and history(meta_a) == history(meta_b) and all(
        meta_a[part] == meta_b[part] for part in ("rng", "optimizer", "model"))


def run_gpu_tests():
    """(passed, the last line of pytest's summary) for ``pytest -m gpu``, or (None, why) outside a checkout."""
    if not TESTS.is_dir():
        return None, f"no tests directory at {TESTS} (installed without the checkout)"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(TESTS)],
                          capture_output=True, text=True, cwd=TESTS.parent)
    lines = done.stdout.strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else done.stderr.strip()[-200:]


def evaluate_iw(backend, checkpoint):
    """(NLL, its standard error, seconds) of ``evaluate --iw-samples 5000`` on the first 1,000 test images."""
    status, out, err = minivae("evaluate", checkpoint, "--backend", backend, "--iw-samples", IW_SAMPLES,
                               "--limit", IW_EXAMPLES)
    found = re.search(r"importance sampling .*: (\S+) \+- (\S+) nats .*\[(\S+) s\]", out)
    if status != 0 or not found:
        raise RuntimeError(f"minivae evaluate --backend {backend} failed: "
                           f"{((err or out).strip().splitlines() or ['no output'])[-1]}")
    return tuple(float(value) for value in found.groups())


def step_seconds(name):
    """The median time of one training step (batch 128) of ``name``: a backend, or "cupy --cuda-graph"."""
    step = gpu_step.make_captured_step(128, 0) if name == "cupy --cuda-graph" else make_step(128, 0, backend=name)
    return harness.compare({name: step}, rounds=20, warmup=3)[name].median


# ----- The report's sections: (Markdown lines under the section's heading, passed) each -----

def fail(cause):
    return f"FAIL: {cause}"


def backends_section():
    statuses = available_backends()
    rows = [f"| {name} | {why or 'available'} |" for name, why in statuses.items()]
    return ["| backend | status |", "|---|---|", *rows], not any(
        statuses[name] for name in GPU_BACKENDS)


def tests_section():
    passed, line = run_gpu_tests()
    return [f"`{line}`" if passed is not False else fail(line)], passed is not False


def elbo_section(runs):
    """The test ELBO of each 2-epoch run, side by side; ``runs``: {label: (checkpoint, failure)}."""
    elbos = {label: attempt(last_test_elbo, path) if path else (None, why) for label, (path, why) in runs.items()}
    found = [elbo for elbo, _ in elbos.values() if elbo is not None]
    spread = max(found) - min(found) if found else float("nan")
    passed = len(found) == len(RUNS) and spread <= ELBO_TOLERANCE
    rows = [f"| {label} | {f'{elbo:.3f}' if why is None else fail(why)} |" for label, (elbo, why) in elbos.items()]
    verdict = (f"spread {spread:.3f} nats over {len(found)} of {len(RUNS)} runs ({'ok' if passed else 'FAIL'}: "
               f"every run, within {ELBO_TOLERANCE} nats)")
    return ["| run | test ELBO |", "|---|---|", *rows, "", verdict], passed


def resume_section(out, data_dir, runs):
    """1 epoch, then --resume to 2, against each GPU run's 2 straight epochs."""
    rows, passed = [], True
    for label in GPU_RUNS:
        straight, why = runs[label]
        if straight is None:
            identical, why = None, f"no 2-epoch run to compare ({why})"
        else:
            resumed = out / f"{label.replace(' --', '-')}-resumed"
            stopped, why = attempt(train, label, resumed, 1, data_dir)
            identical, why = (None, why) if why else attempt(
                lambda: same_run(straight, train(label, resumed, 2, data_dir, "--resume", stopped)))
        passed &= bool(identical)
        rows.append(f"| {label} | {'bit-identical' if identical else fail(why or 'the checkpoints differ')} |")
    return ["| run | result |", "|---|---|", *rows], passed


def evaluate_section(runs):
    rows, passed = [], True
    for backend in GPU_BACKENDS:
        checkpoint, why = runs[backend]
        result, why = attempt(evaluate_iw, backend, checkpoint) if checkpoint else (None, why)
        passed &= result is not None and bool(np.isfinite(result[0]))
        rows.append(f"| {backend} | " + (fail(why) if why else f"{result[0]:.3f} +- {result[1]:.3f} nats | "
                                                               f"{result[2]:.1f} s") + " |")
    return ["| backend | test NLL | time |", "|---|---|---|", *rows], passed


def step_section():
    rows, passed = [], True
    for name in RUNS:
        seconds, why = attempt(step_seconds, name)
        passed &= why is None
        rows.append(f"| {name} | {fail(why) if why else harness.format_duration(seconds)} |")
    return ["| run | median |", "|---|---|", *rows], passed


def check(out, data_dir, save):
    """Every section under its heading, and whether all passed; a section that fails to run is a FAIL line.

    ``save(lines)`` is called after each section, so a run stopped part-way (a timeout) leaves its report so far.
    """
    lines, passed, runs = [f"# minivae GPU check: {harness.gpu_name()}"], True, {}

    def train_every_run():
        runs.update({label: attempt(train, label, out / label.replace(" --", "-"), 2, data_dir) for label in RUNS})
        return elbo_section(runs)
    sections = (("Backends", backends_section, ()),
                ("Test ELBO after 2 epochs, 784-400-20 on Fashion-MNIST", train_every_run, ()),
                ("Exact resume: 1 epoch, --resume to 2, against 2 straight", resume_section, (out, data_dir, runs)),
                (f"evaluate --iw-samples {IW_SAMPLES} on the first {IW_EXAMPLES:,} test images", evaluate_section,
                 (runs,)),
                ("One training step, batch 128", step_section, ()),
                ("Tests marked gpu", tests_section, ()))
    for title, section, args in sections:
        result, why = attempt(section, *args)
        section_lines, section_passed = result or ([fail(why)], False)
        lines += ["", f"## {title}", "", *section_lines]
        passed &= section_passed
        save(lines + ["", "(the check is still running)"])
    return lines, passed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivae.benchmarks.gpu_check",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/gpu_check", help="where the runs and gpu_check.md go")
    parser.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    try:
        require_gpu()
        out = check_writable(args.out)
    except MinivaeError as err:
        print(f"minivae: {err}", file=sys.stderr)
        return 2
    started, report = time.perf_counter(), out / "gpu_check.md"

    def save(lines):
        report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines, passed = check(out, args.data_dir, save)
    lines += ["", f"{'All checks passed' if passed else 'A check FAILED'} in {time.perf_counter() - started:.0f} s."]
    save(lines)
    print("\n".join(lines))
    print(f"report written to {report}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
