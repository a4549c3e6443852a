"""A published-scale run: a VAE on dynamically binarized Fashion-MNIST, scored by importance sampling.

The default architecture is one stochastic layer, 784-300-300-40 (two
deterministic tanh layers of 300 units each side, a 40-dimensional latent
space), trained with Adam on the ELBO (Kingma & Welling 2014). The test
negative log-likelihood is then estimated with K = 5000 importance samples
from q(z|x) on one fixed binarization of the test set, as Burda et al. (2016)
report it, with the number of active latent units (their section 5.2).

The options reach the IWAE paper's setup: ``--objective iwae --samples 50``
(the bound L_50), ``--lr-schedule burda`` (lr 1e-3 * 10^(-i/7) for 3^i epochs,
3280 epochs for i = 0..7), batch 20, and ``--kl-warmup``.

    python experiments/paper_scale.py                        # the full ELBO run
    python experiments/paper_scale.py --epochs 1 --test-limit 100 --iw-samples 100   # a smoke test

The target, importance-weighted test NLL <= 229 nats on all 10,000 test images
(K = 5000), is meant for a GPU, e.g. (experiments/RESULTS.md):

    python experiments/paper_scale.py --backend cupy --objective iwae --samples 50 --kl-warmup 10 \\
        --lr-schedule burda --batch-size 20 --epochs 3280 --out results/paper_iwae50
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from minivae.app.loading import load_model_and_data
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from minivae.app.runconfig import LR_SCHEDULES, TrainConfig
from minivae.app.training import train
from minivae.backend import BACKEND_NAMES, set_backend
from minivae.commands.argtypes import int_list, non_negative_int, positive_float, positive_int
from minivae.errors import MinivaeError
from minivae.likelihood import evaluate_elbo, importance_sampled_log_px
from minivae.tensor import Tensor, no_grad
from minivae.vae import OBJECTIVES

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016, section 5.2


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="numpy")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default: Debian's location)")
    parser.add_argument("--hidden", type=int_list, default=[300, 300], help="hidden layer sizes (default 300,300)")
    parser.add_argument("--latent-dim", type=positive_int, default=40)
    parser.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    parser.add_argument("--objective", choices=OBJECTIVES, default="elbo")
    parser.add_argument("--samples", type=positive_int, default=1, help="K of the training objective (default 1)")
    parser.add_argument("--beta", type=positive_float, default=1.0, help="weight of the KL term (default 1)")
    parser.add_argument("--kl-warmup", type=non_negative_int, default=0, metavar="E",
                        help="beta rises linearly from 0 over E epochs (default 0: off)")
    parser.add_argument("--epochs", type=positive_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iw-samples", type=positive_int, default=5000, help="K for the test NLL (default 5000)")
    parser.add_argument("--test-limit", type=positive_int, default=None, help="score only the first N test images")
    parser.add_argument("--out", default="results/paper_scale", help="output directory")
    return parser


def active_units(model, x, batch=1000):
    """How many latent dimensions u have Cov_x(E_q(z|x)[z_u]) > 0.01 over the images x (Burda et al. 2016)."""
    with no_grad():
        mu = np.concatenate([model.encode(Tensor(x[i:i + batch], dtype=model.dtype))[0].numpy()
                             for i in range(0, len(x), batch)])
    return int((mu.var(axis=0) > ACTIVE_THRESHOLD).sum())


def score(checkpoint, iw_samples, test_limit, seed):
    """A trained model on one fixed binarization of the test set: test ELBO (K = 1, beta = 1, every image),
    importance-weighted NLL (first ``test_limit`` images) with its standard error, active units, seconds."""
    model, _, x = load_model_and_data(checkpoint)
    elbo = evaluate_elbo(model, x, 100, samples=1, seed=seed)[0]
    scored = x.subset(slice(test_limit))  # still uint8: converted batch by batch as it is scored
    started = time.perf_counter()
    log_px = importance_sampled_log_px(model, scored, iw_samples, seed=seed)
    return {"test_elbo": float(elbo), "iw_nll": float(-log_px.mean()),
            "iw_nll_se": float(log_px.std(ddof=1) / math.sqrt(len(log_px))) if len(log_px) > 1 else math.nan,
            "scored_images": len(scored), "active_units": active_units(model, x),
            "scoring_seconds": time.perf_counter() - started}


def config_from(args, **changes):
    values = dict(data="fashion-mnist", data_dir=args.data_dir, hidden=tuple(args.hidden),
                  latent_dim=args.latent_dim, activation=args.activation, likelihood="bernoulli",
                  objective=args.objective, samples=args.samples, beta=args.beta, kl_warmup=args.kl_warmup,
                  binarize="dynamic", batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
                  lr_schedule=args.lr_schedule, optimizer="adam", seed=args.seed, plot_interval=0, out=args.out)
    return TrainConfig(**{**values, **changes})


def describe(config):
    sizes = "-".join(str(n) for n in (784, *config.hidden, config.latent_dim))
    warmup = f", KL warm-up {config.kl_warmup} epochs" if config.kl_warmup else ""
    return (f"{sizes}, {config.activation}, Bernoulli decoder, dynamic binarization, {config.objective} "
            f"K={config.samples}, beta {config.beta:g}{warmup}, Adam lr {config.lr:g} ({config.lr_schedule}), "
            f"batch {config.batch_size}, seed {config.seed}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = config_from(args)
    print(f"configuration: {describe(config)}, {config.epochs} epochs, backend {args.backend}")
    try:
        set_backend(args.backend)
        started = time.perf_counter()
        history = train(config, progress=False).history
        training_seconds = time.perf_counter() - started
        scores = score(Path(config.out) / CHECKPOINT_NAME, args.iw_samples, args.test_limit, config.seed)
    except MinivaeError as err:
        print(f"paper_scale: {err}", file=sys.stderr)
        return 2
    print(f"epochs: {len(history)}; training wall time {training_seconds:.1f} s "
          f"({training_seconds / len(history):.1f} s per epoch)")
    print(f"test ELBO (K=1, all test images): {scores['test_elbo']:.2f} nats; "
          f"active units {scores['active_units']} of {config.latent_dim}")
    print(f"test NLL, importance sampling K={args.iw_samples} on {scores['scored_images']} test images: "
          f"{scores['iw_nll']:.2f} +- {scores['iw_nll_se']:.2f} nats [{scores['scoring_seconds']:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
