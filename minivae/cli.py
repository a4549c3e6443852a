"""The ``minivae`` command: one subcommand per job, nothing done at import.

Every subcommand takes ``--backend`` and (but ``bench``, which has its own)
``--threads``. A ``MinivaeError`` (bad input, a backend that cannot run here)
prints one line and exits with status 2; a result that is not finite, with
status 3; Ctrl-C, with status 130.
"""
import argparse
import sys

from minivae import __version__, estimators, figures, likelihood, train
from minivae.argtypes import non_negative_int, positive_int
from minivae.backend import BACKEND_NAMES, set_backend
from minivae.benchmarks import suite
from minivae.errors import MinivaeError, NonFiniteResult
from minivae.threads import choose_threads, use_threads


# ----- minivae gradcheck -----

def add_gradcheck_arguments(parser):
    parser.add_argument("--trials", type=positive_int, default=3, help="random draws per primitive (default 3)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random inputs")
    parser.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    parser.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance (default 1e-8)")


def run_gradcheck(args):
    """Print every primitive's (and the ELBO's) worst gradient error against central differences; 1 if any fails."""
    from minivae.opcases import CASES, check_table, model_cases
    rows = check_table(CASES + model_cases(), trials=args.trials, seed=args.seed, rtol=args.rtol, atol=args.atol)
    print(f"{'primitive':<22} {'input shapes':<26} {'max abs err':>11} {'max rel err':>11}  result")
    for row in rows:
        shapes = " ".join("x".join(map(str, s)) or "()" for s in row.shapes)
        shapes = shapes if len(shapes) <= 26 else f"{len(row.shapes)} parameter arrays"
        print(f"{row.name:<22} {shapes:<26} {row.max_abs_error:11.2e} {row.max_rel_error:11.2e}  "
              f"{'ok' if row.passed else 'FAIL'}")
    failed = [row.name for row in rows if not row.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed"
          f" (float64 central differences, rtol {args.rtol:g}, atol {args.atol:g})")
    return 1 if failed else 0


# ----- minivae backends -----

def add_backends_arguments(parser):
    """No options of its own."""


def run_backends(args):
    """Print each backend as available, or the one-line reason it cannot run here."""
    from minivae.backend import available_backends, load_backend
    for name, reason in available_backends().items():
        note = None if reason else load_backend(name).note
        status = reason or "available" + (f" ({note})" if note else "")
        print(f"{name:<11} {status}")
    return 0


COMMANDS = {
    "train": (train.add_train_arguments, train.run_train, "train a VAE (default: the bundled digits)"),
    "evaluate": (likelihood.add_evaluate_arguments, likelihood.run_evaluate,
                 "test ELBO of a checkpoint, and the importance-weighted NLL with --iw-samples"),
    "estimators": (estimators.add_estimators_arguments, estimators.run_estimators,
                   "score-function vs reparameterization gradient: means, variances, SNR"),
    "bound-gap": (likelihood.add_bound_gap_arguments, likelihood.run_bound_gap,
                  "ELBO <= IW bound <= exact log p(x) on a 2-D latent model; the gap is KL(q || posterior)"),
    "figures": (figures.add_figures_arguments, figures.run_figures,
                "a figure, with the numbers it shows, for each argument of docs/walkthrough.md"),
    "sample": (train.add_figure_arguments, train.run_sample, "decode prior samples from a checkpoint"),
    "reconstruct": (train.add_figure_arguments, train.run_reconstruct,
                    "reconstruct test images with a checkpoint"),
    "backends": (add_backends_arguments, run_backends, "list the backends and whether each can run here"),
    "gradcheck": (add_gradcheck_arguments, run_gradcheck,
                  "check every primitive's gradient against finite differences"),
    "bench": (suite.add_bench_arguments, suite.run_bench,
              "time the kernels, a training step against PyTorch, JAX and autograd, an epoch, an evaluation"),
}


OWN_THREADS = ("bench",)  # commands that set threads their own way


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad option in one line (pointing to --help) instead of the whole usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already gives its default, or it has none."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in help_text or unset or not action.option_strings:
            return help_text
        shown = ",".join(map(str, action.default)) if isinstance(action.default, list) else action.default
        return f"{help_text} (default: {shown})".lstrip()


def build_parser():
    parser = OneLineParser(prog="minivae", description="A VAE from scratch: train, verify, benchmark.")
    parser.add_argument("--version", action="version", version=f"minivae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, _, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary, formatter_class=DefaultsHelpFormatter)
        sub.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                         help="array backend (default: $MINIVAE_BACKEND or numpy)")
        if name not in OWN_THREADS:
            sub.add_argument("--threads", type=positive_int, default=None,
                             help="BLAS and numba threads (default: one for small models, else the cores "
                                  "the load average leaves free)")
        add_arguments(sub)
    return parser


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        _, run, _ = COMMANDS[args.command]
        if args.backend:
            set_backend(args.backend)
        if args.command not in OWN_THREADS:
            use_threads(choose_threads(args.threads)[0])  # train and evaluate narrow it to their model
        return run(args)
    except NonFiniteResult as err:
        print(f"minivae: {err}", file=sys.stderr)
        return 3
    except MinivaeError as err:
        print(f"minivae: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minivae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
