"""A published-scale run: a VAE on dynamically binarized Fashion-MNIST, scored by importance sampling.

The default architecture is one stochastic layer, 784-300-300-40 (two
deterministic tanh layers of 300 units each side, a 40-dimensional latent
space), trained with Adam on the ELBO (Kingma & Welling 2014). The test
negative log-likelihood is then estimated with K = 5000 importance samples
from q(z|x) on one fixed binarization of the test set, as Burda et al. (2016)
report it.

    python experiments/paper_scale.py                        # the full run
    python experiments/paper_scale.py --epochs 1 --test-limit 100 --iw-samples 100   # a smoke test
"""
import argparse
import sys
import time
from pathlib import Path

from minivae.argtypes import int_list, positive_float, positive_int
from minivae.errors import MinivaeError
from minivae.likelihood import importance_sampled_log_px, load_model_and_data
from minivae.train import CHECKPOINT_NAME, TrainConfig, train


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX files (default: Debian's location)")
    parser.add_argument("--hidden", type=int_list, default=[300, 300], help="hidden layer sizes (default 300,300)")
    parser.add_argument("--latent-dim", type=positive_int, default=40)
    parser.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    parser.add_argument("--epochs", type=positive_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=100)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iw-samples", type=positive_int, default=5000, help="K for the test NLL (default 5000)")
    parser.add_argument("--test-limit", type=positive_int, default=None, help="score only the first N test images")
    parser.add_argument("--out", default="results/paper_scale", help="output directory")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = TrainConfig(data="fashion-mnist", data_dir=args.data_dir, hidden=tuple(args.hidden),
                         latent_dim=args.latent_dim, activation=args.activation, likelihood="bernoulli",
                         binarize="dynamic", batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
                         optimizer="adam", seed=args.seed, plot_interval=0, out=args.out)
    sizes = "-".join(str(n) for n in (784, *config.hidden, config.latent_dim))
    print(f"configuration: {sizes}, {config.activation}, Bernoulli decoder, dynamic binarization, "
          f"Adam lr {config.lr:g}, batch {config.batch_size}, {config.epochs} epochs, seed {config.seed}")
    try:
        started = time.perf_counter()
        _, history = train(config, progress=False)
        training_seconds = time.perf_counter() - started
        model, _, x = load_model_and_data(Path(config.out) / CHECKPOINT_NAME)
        x = x.subset(slice(args.test_limit))  # still uint8: converted batch by batch as it is scored
        started = time.perf_counter()
        log_px = importance_sampled_log_px(model, x, args.iw_samples, seed=config.seed)
        scoring_seconds = time.perf_counter() - started
    except MinivaeError as err:
        print(f"paper_scale: {err}", file=sys.stderr)
        return 2
    print(f"epochs: {len(history)}; training wall time {training_seconds:.1f} s "
          f"({training_seconds / len(history):.1f} s per epoch)")
    print(f"test ELBO (last epoch, K=1): {history[-1]['test_elbo']:.2f} nats")
    print(f"test NLL, importance sampling K={args.iw_samples} on {len(x)} test images: {-log_px.mean():.2f} nats "
          f"[{scoring_seconds:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
