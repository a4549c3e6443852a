"""Threads for the default digits run: ``minivae train``'s own choice against 1 and 2 threads.

Target: the default no slower than the best of 1 and 2 threads by more than
10%, on a quiet or a busy machine. Each setting trains the default model
(digits, 256 hidden units, batch 128) for ``--epochs`` epochs, settings
interleaved over ``--rounds`` rounds by ``harness.compare`` (in an order
shuffled per round); the time is the sum of the epochs' own times (training
and the test ELBO, not the figures), median over rounds.

    python -m minivae.benchmarks.bench_threads [--epochs 10] [--rounds 3]
"""
import argparse
import tempfile

from minivae.app.runconfig import TrainConfig
from minivae.app.threads import choose_threads, product_size
from minivae.app.training import train

from . import harness

TARGET = 1.10
SETTINGS = {"default": None, "1 thread": 1, "2 threads": 2}


def training_seconds(threads, epochs, out):
    """Seconds of ``epochs`` epochs of the default run with ``threads`` (None: minivae's choice)."""
    config = TrainConfig(epochs=epochs, plot_interval=0, out=out, threads=threads)
    history = train(config, progress=False, log=lambda line: None, overwrite=True).history
    return sum(row["seconds"] for row in history)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    defaults = TrainConfig()
    _, reason = choose_threads(None, product_size(defaults.batch_size, (64, *defaults.hidden)))
    print(f"default choice: {reason}")
    reported = [0.0]  # the epochs' own seconds so far: compare's clock, so a sample is one run's epochs

    def run(threads, out):
        def train_once():
            reported[0] += training_seconds(threads, args.epochs, out)
        return train_once
    with tempfile.TemporaryDirectory() as out:
        stats = harness.compare({name: run(threads, out) for name, threads in SETTINGS.items()},
                                rounds=args.rounds, warmup=0, clock=lambda: reported[0])
    medians = {name: s.median for name, s in stats.items()}
    for name, seconds in medians.items():
        print(f"{name:<10} {seconds:7.2f} s for {args.epochs} epochs (median of {args.rounds})")
    ratio = medians["default"] / min(medians["1 thread"], medians["2 threads"])
    print(f"default / best of 1 and 2 threads: {ratio:.2f} (target <= {TARGET:.2f}: "
          f"{'met' if ratio <= TARGET else 'MISSED'})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
