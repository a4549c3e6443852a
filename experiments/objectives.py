"""ELBO vs IWAE (k = 5) vs KL warm-up, at equal training time: Fashion-MNIST, 784-400-20, dynamic binarization.

Each arm trains the same model (ReLU, Bernoulli decoder, Adam 1e-3, batch 128,
the same seed) for the same time budget: whole epochs (each with its test ELBO
and checkpoint, as ``minivae train`` runs them), another one only while the
last one's time still fits. The clock is the process's CPU time by default
(``--clock cpu``, every thread counted): on a machine shared with other jobs
the wall-clock time of one epoch varies several-fold, and so does the CPU
time of several threads (they spin waiting for a descheduled sibling), but
not the CPU time of one thread; so the measured run is single-threaded.
Wall-clock seconds are reported too. A full-size step of every arm runs
first, untimed, so no arm's clock pays for compiling kernels. Then every arm
is scored alike
(``paper_scale.score``): the test ELBO (K = 1, beta = 1, every test image), the
importance-weighted NLL with K = 5000 on the first 1,000 test images, and the
active latent units. The table goes to ``{out}/results.md``; experiments/RESULTS.md
holds a measured one.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \\
        python experiments/objectives.py --backend numba --budget 240 --out results/objectives   # RESULTS.md
    python experiments/objectives.py --data digits --hidden 16 --latent-dim 2 --budget 2 \\
        --test-limit 20 --iw-samples 20 --out /tmp/objectives      # a smoke test, seconds
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from paper_scale import score

from minivae.app.run_checkpoint import CHECKPOINT_NAME
from minivae.app.loop import EagerStep
from minivae.app.runconfig import TrainConfig, prepare_data, start_run
from minivae.app.training import train
from minivae.backend import BACKEND_NAMES, set_backend
from minivae.commands.argtypes import int_list, positive_float, positive_int
from minivae.errors import MinivaeError
from minivae.likelihood import evaluate_elbo

ARMS = (  # (name in the table, its directory under --out, its training options)
    ("ELBO", "elbo", dict(objective="elbo", samples=1)),
    ("IWAE, k = 5", "iwae5", dict(objective="iwae", samples=5)),
    ("ELBO, KL warm-up over 10 epochs", "elbo_warmup10", dict(objective="elbo", samples=1, kl_warmup=10)),
)
MAX_EPOCHS = 100_000  # the budget ends the run first
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="numpy")
    parser.add_argument("--data", choices=("fashion-mnist", "mnist", "digits"), default="fashion-mnist")
    parser.add_argument("--data-dir", default=None, help="directory of the IDX files (default: Debian's location)")
    parser.add_argument("--hidden", type=int_list, default=[400], help="hidden layer sizes (default 400)")
    parser.add_argument("--latent-dim", type=positive_int, default=20)
    parser.add_argument("--budget", type=positive_float, default=240.0, help="training seconds per arm (default 240)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="what the budget counts: the process's CPU seconds or wall-clock seconds (default cpu)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iw-samples", type=positive_int, default=5000, help="K for the test NLL (default 5000)")
    parser.add_argument("--test-limit", type=positive_int, default=1000, help="images scored for the NLL (default 1000)")
    parser.add_argument("--out", default="results/objectives", help="a directory per arm, and results.md")
    return parser


class BudgetSpent(Exception):
    """Another epoch would not fit the budget; the epoch just finished is in the checkpoint."""


def train_for(config, budget, clock):
    """Train ``config`` for whole epochs while the last one's time on ``clock`` still fits in ``budget`` seconds.

    ``train`` calls ``log`` after each epoch's checkpoint, metrics and line
    are written; that is where the clock is read. Returns (epochs, seconds on
    the clock, wall-clock seconds).
    """
    wall_started = time.perf_counter()
    started = last = clock()

    def after_epoch(line):
        nonlocal last
        print(line, flush=True)
        now = clock()
        epoch_seconds, last = now - last, now
        if now - started + epoch_seconds > budget:
            raise BudgetSpent
    try:
        train(dataclasses.replace(config, epochs=MAX_EPOCHS), progress=False, log=after_epoch)
    except BudgetSpent:
        pass
    history = (Path(config.out) / "metrics.jsonl").read_text().splitlines()
    return len(history), last - started, time.perf_counter() - wall_started


def compile_kernels(configs):
    """A training step and a test batch of each arm at full size, untimed (numba compiles its kernels on first use)."""
    data = prepare_data(configs[0])
    for config in configs:
        run = start_run(config, data)
        EagerStep(run)(data.train_x[:config.batch_size], beta=0.5)
        evaluate_elbo(run.model, data.test_x[:config.batch_size], config.batch_size, config.samples, seed=0)


def table(results):
    first = results[0]
    lines = [f"| objective | epochs | training {first['clock']} seconds | wall seconds | test ELBO (K = 1) "
             f"| IW-NLL (K = {first['iw_samples']}, {first['scored_images']} images) | active units |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arm']} | {r['epochs']} | {r['seconds']:.0f} | {r['wall_seconds']:.0f} | {r['test_elbo']:.2f} "
                     f"| {r['iw_nll']:.2f} +- {r['iw_nll_se']:.2f} | {r['active_units']} of {r['latent_dim']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    results = []
    try:
        set_backend(args.backend)
        configs = [TrainConfig(data=args.data, data_dir=args.data_dir, hidden=tuple(args.hidden),
                               latent_dim=args.latent_dim, binarize="dynamic", batch_size=128, lr=1e-3,
                               seed=args.seed, plot_interval=0, out=str(out / directory), **changes)
                   for _, directory, changes in ARMS]
        compile_kernels(configs)
        for (arm, _, _), config in zip(ARMS, configs):
            print(f"{arm}: training for {args.budget:g} {args.clock} seconds into {config.out}", flush=True)
            epochs, seconds, wall = train_for(config, args.budget, CLOCKS[args.clock])
            scores = score(Path(config.out) / CHECKPOINT_NAME, args.iw_samples, args.test_limit, args.seed)
            results.append({"arm": arm, "epochs": epochs, "clock": args.clock, "seconds": seconds, "wall_seconds": wall,
                            "iw_samples": args.iw_samples, "latent_dim": args.latent_dim, **scores})
            print(json.dumps(results[-1]), flush=True)
    except MinivaeError as err:
        print(f"objectives: {err}", file=sys.stderr)
        return 2
    (out / "results.md").write_text(table(results))
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
