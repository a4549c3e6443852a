"""``minivae evaluate``: a checkpoint's test ELBO, and with ``--iw-samples`` the importance-weighted test NLL."""
import math
import time
from typing import NamedTuple

import numpy as np

from minivae.app.loading import split_images
from minivae.app.run_checkpoint import load_trained
from minivae.app.threads import choose_threads, product_size, use_threads
from minivae.backend import get_backend
from minivae.commands.argtypes import non_negative_int, positive_int
from minivae.errors import check_finite
from minivae.likelihood import evaluate_elbo, importance_sampled_log_px

WEIGHTS_ADVICE = "the checkpoint's weights are too large to evaluate; use another checkpoint"


def add_arguments(parser):
    parser.add_argument("checkpoint", help="checkpoint.npz written by minivae train")
    parser.add_argument("--iw-samples", type=positive_int, default=None, metavar="K",
                        help="also report the importance-sampled NLL with K samples (papers use 5000)")
    parser.add_argument("--data-dir", default=None, help="directory of the IDX files (default: the checkpoint's)")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N test examples")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="examples per pass (default: the checkpoint's, so that the noise is training's)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of the noise (default: the checkpoint's, the seed of training's test ELBO)")


def run(args):
    """The test ELBO and, with --iw-samples, the importance-weighted NLL, in nats per example.

    With the defaults the test ELBO is drawn as training draws it after each
    epoch (its seed, batch size, samples of z and thread count), so on the
    run's backend it is the number the run's last epoch line printed; the
    output says which noise it depends on.
    """
    model, config, meta = load_trained(args.checkpoint)
    x, read_from = split_images(args.checkpoint, config, meta, args.data_dir)
    test_images = len(x)
    x = x.subset(slice(args.limit))  # still uint8: converted batch by batch as it is evaluated
    seed = config.seed if args.seed is None else args.seed
    batch_size = config.batch_size if args.batch_size is None else args.batch_size
    count, reason = choose_threads(args.threads, product_size(batch_size, model.config["encoder_sizes"]),
                                   trained=config.threads if args.threads is None else None)  # the run's own
    use_threads(count)
    print(f"{read_from}: {len(x)} examples; {reason}")
    started = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        elbo, reconstruction, kl = evaluate_elbo(model, x, batch_size, config.samples, seed=seed)
    check_finite("the test ELBO", [elbo, reconstruction, kl], WEIGHTS_ADVICE)
    print(f"test ELBO (K={config.samples}): {elbo:.3f} nats per example (reconstruction {reconstruction:.3f}, "
          f"KL {kl:.3f}) [{time.perf_counter() - started:.1f} s]")
    drawn = Draws(seed, batch_size, len(x), count, get_backend().name)
    print(f"  {_noise_note(config, drawn, _training_draws(config, meta, test_images))}")
    if args.iw_samples:
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            log_px = importance_sampled_log_px(model, x, args.iw_samples, seed, batch_size=batch_size)
        check_finite("the importance-sampled log p(x)", log_px, WEIGHTS_ADVICE)
        print(f"test NLL, importance sampling with K={args.iw_samples} (Burda et al. 2016), noise seed {seed}: "
              f"{-log_px.mean():.3f} +- {_standard_error(log_px):.3f} nats per example "
              f"(standard error over examples) [{time.perf_counter() - started:.1f} s]")
    return 0


class Draws(NamedTuple):
    """What a test ELBO's value depends on besides the model: the noise (seed, batches, examples) and the sums
    (BLAS adds in an order set by the thread count; each backend has its own generator and kernels)."""
    seed: int
    batch_size: int
    examples: int
    threads: int | None
    backend: str


def _training_draws(config, meta, test_images):
    """The ``Draws`` of the test ELBO training printed after each epoch."""
    return Draws(config.seed, config.batch_size, config.test_examples or test_images, config.threads,
                 meta.get("backend", "numpy"))


def _noise_note(config, drawn, trained):
    """What the test ELBO's noise is, and whether it is training's own (the number its last epoch line printed)."""
    noise = (f"one Monte Carlo estimate with K samples of z per image: noise seed {drawn.seed}, "
             f"batches of {drawn.batch_size}")
    if config.binarize != "none":
        return f"{noise}, on the test images binarized once (training's epoch lines measured the grey ones)"
    if drawn == trained:
        return f"{noise}: training's own draws, so its last epoch line printed this number"
    threads = "" if trained.threads is None else f", {trained.threads} thread{'s' * (trained.threads > 1)}"
    return (f"{noise}; training's epoch lines drew another estimate (seed {trained.seed}, batches of "
            f"{trained.batch_size}, {trained.examples} test images{threads}, the {trained.backend} backend)")


def _standard_error(values):
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
