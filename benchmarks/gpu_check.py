"""The GPU acceptance check: the user's commands on each GPU backend, beside numpy, in one Markdown report.

    python -m minivae.benchmarks.gpu_check [--out DIR] [--data-dir DIR]

On a machine with a CUDA GPU (about 5 minutes on one H200) it

1. runs the tests marked ``gpu`` (``pytest -m gpu tests``, from a checkout);
2. trains 2 epochs of the 784-400-20 Bernoulli VAE on Fashion-MNIST on numpy,
   cupy and numba-cuda (``minivae train``, each in its own process) and puts
   the test ELBOs side by side: they must agree within ``ELBO_TOLERANCE``;
3. on each GPU backend, trains 1 epoch and resumes it to 2: the checkpoint
   must be bit-identical to the 2-epoch run's;
4. on each GPU backend, runs ``minivae evaluate --iw-samples 5000`` on the
   first 1,000 test images;
5. times one training step (batch 128) per backend;

and writes ``gpu_check.md``. Exit status 0 when every check passes, 1 when
one fails; without a GPU (or without the GPU packages) it says so in one
line and exits 2.
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
from minivae.errors import MinivaeError
from minivae.versions import GPU_INSTALL

from . import harness
from .bench_engine_step import make_step
from .micro import GPU_RUNTIMES

GPU_BACKENDS = tuple(GPU_RUNTIMES)
BACKENDS = ("numpy", *GPU_BACKENDS)
ELBO_TOLERANCE = 0.5  # nats: float32 on different kernels and generators, after 2 epochs
MODEL = ["--data", "fashion-mnist", "--hidden", "400", "--latent-dim", "20", "--batch-size", "128",
         "--lr", "1e-3", "--plot-interval", "0", "--quiet"]
IW_SAMPLES, IW_EXAMPLES = 5000, 1000
TESTS = Path(__file__).resolve().parent.parent / "tests"


def require_gpu():
    """Raise a one-line MinivaeError unless a CUDA GPU and both GPU backends can run here."""
    if harness.gpu_name() is None:
        raise MinivaeError("gpu_check: no CUDA GPU here (nvidia-smi finds none); run it on a machine with an "
                           f"NVIDIA GPU after {GPU_INSTALL}")
    reasons = {name: why for name, why in available_backends().items() if name in GPU_BACKENDS and why}
    if reasons:
        raise MinivaeError("gpu_check: " + "; ".join(reasons.values()))


def minivae(*argv):
    """Run ``minivae ARGV`` in a fresh process on the real device; (exit status, stdout, stderr)."""
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-m", "minivae.cli", *map(str, argv)], capture_output=True,
                          text=True, env=env)
    return done.returncode, done.stdout, done.stderr


def train(backend, out, epochs, data_dir, *extra):
    """``minivae train`` of the check's model; its checkpoint path, or a RuntimeError with stderr's last line."""
    data = ["--data-dir", data_dir] if data_dir else []
    status, _, err = minivae("train", "--backend", backend, *MODEL, *data, "--epochs", epochs, "--out", out, *extra)
    if status != 0:
        raise RuntimeError(f"minivae train --backend {backend} failed: {err.strip().splitlines()[-1:]}")
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
        raise RuntimeError(f"minivae evaluate --backend {backend} failed: {(err or out).strip()[-300:]}")
    return tuple(float(value) for value in found.groups())


def step_seconds(backend):
    """The median time of one training step (batch 128) on ``backend``, synchronized on a GPU."""
    step = make_step(128, 0, backend=backend)
    if backend in GPU_RUNTIMES:
        step = harness.synchronized(step, GPU_RUNTIMES[backend])
    return harness.compare({backend: step}, rounds=20, warmup=3)[backend].median


def check(out, data_dir):
    """Every check, as Markdown lines and whether all passed."""
    tests_passed, tests_line = run_gpu_tests()
    lines = [f"# minivae GPU check: {harness.gpu_name()}", "", "## Tests marked gpu", "", f"`{tests_line}`"]
    passed = tests_passed is not False
    runs = {name: train(name, out / name, 2, data_dir) for name in BACKENDS}
    elbos = {name: last_test_elbo(path) for name, path in runs.items()}
    spread = max(elbos.values()) - min(elbos.values())
    passed &= spread <= ELBO_TOLERANCE
    lines += ["", "## Test ELBO after 2 epochs, 784-400-20 on Fashion-MNIST", "",
              "| " + " | ".join(BACKENDS) + " | spread |", "|---" * (len(BACKENDS) + 1) + "|",
              "| " + " | ".join(f"{elbos[name]:.3f}" for name in BACKENDS) + f" | {spread:.3f} nats"
              f" ({'ok' if spread <= ELBO_TOLERANCE else 'FAIL'}: at most {ELBO_TOLERANCE}) |"]
    lines += ["", "## Exact resume: 1 epoch, --resume to 2, against 2 straight", "", "| backend | result |", "|---|---|"]
    for name in GPU_BACKENDS:
        stopped = train(name, out / f"{name}-resumed", 1, data_dir)
        identical = same_run(runs[name], train(name, out / f"{name}-resumed", 2, data_dir, "--resume", stopped))
        passed &= identical
        lines.append(f"| {name} | {'bit-identical' if identical else 'FAIL: differs'} |")
    lines += ["", f"## evaluate --iw-samples {IW_SAMPLES} on the first {IW_EXAMPLES:,} test images", "",
              "| backend | test NLL (nats) | time |", "|---|---|---|"]
    for name in GPU_BACKENDS:
        nll, se, seconds = evaluate_iw(name, runs[name])
        passed &= bool(np.isfinite(nll))
        lines.append(f"| {name} | {nll:.3f} +- {se:.3f} | {seconds:.1f} s |")
    lines += ["", "## One training step, batch 128", "", "| backend | median |", "|---|---|"]
    lines += [f"| {name} | {harness.format_duration(step_seconds(name))} |" for name in BACKENDS]
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
        started = time.perf_counter()
        lines, passed = check(out, args.data_dir)
    except (MinivaeError, RuntimeError) as err:
        print(f"minivae: {err}", file=sys.stderr)
        return 2
    lines += ["", f"{'All checks passed' if passed else 'A check FAILED'} in {time.perf_counter() - started:.0f} s."]
    report = out / "gpu_check.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"report written to {report}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
