"""``minivae evaluate``: a checkpoint's test ELBO, and with ``--iw-samples`` the importance-weighted test NLL."""
import math
import time

import numpy as np

from minivae.app.loading import load_model_and_data
from minivae.app.threads import choose_threads, product_size, use_threads
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
    parser.add_argument("--batch-size", type=positive_int, default=100, help="examples per pass (default 100)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the noise")


def run(args):
    """The test ELBO (K = 1) and, with --iw-samples, the importance-weighted NLL, in nats per example."""
    model, config, x = load_model_and_data(args.checkpoint, None, args.data_dir)
    x = x.subset(slice(args.limit))  # still uint8: converted batch by batch as it is evaluated
    count, reason = choose_threads(args.threads, product_size(args.batch_size, model.config["encoder_sizes"]))
    use_threads(count)
    started = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        elbo, reconstruction, kl = evaluate_elbo(model, x, args.batch_size, samples=1, seed=args.seed)
    check_finite("the test ELBO", [elbo, reconstruction, kl], WEIGHTS_ADVICE)
    print(f"{config.data} test set, {len(x)} examples; {reason}")
    print(f"test ELBO (K=1): {elbo:.3f} nats per example (reconstruction {reconstruction:.3f}, KL {kl:.3f}) "
          f"[{time.perf_counter() - started:.1f} s]")
    if args.iw_samples:
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            log_px = importance_sampled_log_px(model, x, args.iw_samples, args.seed, batch_size=args.batch_size)
        check_finite("the importance-sampled log p(x)", log_px, WEIGHTS_ADVICE)
        print(f"test NLL, importance sampling with K={args.iw_samples} (Burda et al. 2016): "
              f"{-log_px.mean():.3f} +- {_standard_error(log_px):.3f} nats per example "
              f"(standard error over examples) [{time.perf_counter() - started:.1f} s]")
    return 0


def _standard_error(values):
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
