"""``minivae train``: train a VAE (``app.training.train``) from the command line; Ctrl-C or SIGTERM say how to resume."""
import argparse
import dataclasses
import sys

from minivae.app.data import BINARIZE_MODES, DATASET_NAMES
from minivae.app.outputs import describe_outputs
from minivae.app.runconfig import LR_SCHEDULES, OPTIMIZERS, SIGMA_RANGE, TrainConfig
from minivae.app.stop_requests import stop_requests
from minivae.app.training import TrainingInterrupted, train
from minivae.commands.argtypes import bounded_float, int_list, non_negative_int, positive_float, positive_int
from minivae.vae import LIKELIHOODS, OBJECTIVES


def add_arguments(parser):
    defaults = TrainConfig()
    parser.add_argument("--data", choices=DATASET_NAMES, default=defaults.data,
                        help="dataset (default: digits, bundled with scikit-learn)")
    parser.add_argument("--data-dir", default=None, help="directory holding the IDX files (mnist, fashion-mnist)")
    parser.add_argument("--train-examples", type=positive_int, default=defaults.train_examples, metavar="N",
                        help="train on the first N training images only, e.g. for a quick smoke run (default: all)")
    parser.add_argument("--test-examples", type=positive_int, default=defaults.test_examples, metavar="N",
                        help="measure the test ELBO and draw the figures on the first N test images (default: all)")
    parser.add_argument("--hidden", type=int_list, default=list(defaults.hidden),
                        help="hidden layer sizes, comma-separated (default 256)")
    parser.add_argument("--latent-dim", type=positive_int, default=defaults.latent_dim, help="size of z")
    parser.add_argument("--activation", choices=("relu", "tanh"), default=defaults.activation,
                        help="the hidden layers' activation")
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default=defaults.likelihood,
                        help="the decoder's distribution p(x|z)")
    parser.add_argument("--sigma", type=bounded_float(*SIGMA_RANGE, "pixels are in [0, 1]; e.g. 0.1"),
                        default=defaults.sigma,
                        help="the Gaussian decoder's fixed standard deviation (default 0.1)")
    parser.add_argument("--logvar-clamp", type=positive_float, default=defaults.logvar_clamp, metavar="C",
                        help="clip the encoder's logvar to [-C, C] so exp(logvar) stays finite (default: off)")
    parser.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective,
                        help="elbo, or iwae: the importance-weighted bound L_K with K = --samples (default elbo)")
    parser.add_argument("--samples", type=positive_int, default=defaults.samples,
                        help="K, samples of z per example (default 1)")
    parser.add_argument("--beta", type=positive_float, default=defaults.beta, metavar="B",
                        help="weight of the KL term in the training objective (1: the bound itself)")
    parser.add_argument("--kl-warmup", type=non_negative_int, default=defaults.kl_warmup, metavar="E",
                        help="raise beta linearly, step by step, from 0 to B over the first E epochs (0: off)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size, help="examples per step")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs,
                        help="epochs in all (with --resume: the new total)")
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="learning rate")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                        help="constant, or burda: lr 10^(-i/7) for 3^i epochs, i = 0, 1, ...")
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=defaults.optimizer, help="the update rule")
    parser.add_argument("--binarize", choices=BINARIZE_MODES, default=defaults.binarize,
                        help="binarize the images: not at all, once (static) or every batch (dynamic)")
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed,
                        help="seeds the weights, the shuffling and the noise")
    parser.add_argument("--log-interval", type=non_negative_int, default=defaults.log_interval,
                        help="print the mean ELBO of every N steps (default 0: once per epoch)")
    parser.add_argument("--plot-interval", type=non_negative_int, default=defaults.plot_interval,
                        help="write figures every N epochs, and always after the last (default 25)")
    parser.add_argument("--out", default=defaults.out, help="output directory (default: results)")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="continue a run from its checkpoint.npz (same options; --epochs is the new total)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run whose checkpoint.npz is already in --out (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="record the training step once and replay it for every full batch, with Adam: its "
                             "kernel calls on numba (default there: on, bit for bit the eager step), a CUDA graph "
                             "on cupy (default there: off; not yet run on a GPU); other backends train eagerly")
    parser.add_argument("--progress", action="store_true",
                        help="show the progress bar even when stderr is not a terminal (default: only on one)")


def config_from_args(args):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    values["hidden"] = tuple(values["hidden"])
    return TrainConfig(**values)


def run(args):
    """Train; on Ctrl-C or SIGTERM (acted on between steps), one line on stderr saying how to resume, and exit
    status 130."""
    config = config_from_args(args)
    progress = args.progress or (not args.quiet and sys.stderr.isatty())
    try:
        with stop_requests():
            train(config, resume=args.resume, progress=progress, overwrite=args.overwrite,
                  cuda_graph=args.cuda_graph)
    except TrainingInterrupted as interrupted:
        print(f"minivae: {interrupted}", file=sys.stderr)
        return 130
    print(f"outputs in {config.out}/: {describe_outputs(config)}")
    return 0
