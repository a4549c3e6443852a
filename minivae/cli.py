"""The ``minivae`` command: one subcommand per job, each loaded only when asked for.

Every subcommand but ``backends`` (which reports on every backend, computing
nothing) takes ``--backend``, and all of those but ``bench`` (which has its
own) ``--threads``. A ``MinivaeError`` (bad input, a backend that cannot run here)
prints one line and exits with status 2; a result that is not finite, with
status 3; Ctrl-C, with status 130. ``prepare_output`` (called by the entry point,
``minivae/__main__.py``) makes the process's output survive a closed pipe and
print any path.
"""
import argparse
import importlib
import os
import sys
from typing import NamedTuple

from minivae import __version__
from minivae.backend import BACKEND_NAMES, ENV_VAR, set_backend
from minivae.commands.argtypes import thread_count
from minivae.errors import MinivaeError, NonFiniteResult


class Command(NamedTuple):
    """A subcommand: its module in minivae.commands, its summary, and the names of its two functions there."""
    module: str
    summary: str
    run: str = "run"
    add_arguments: str = "add_arguments"


COMMANDS = {
    "train": Command("train", "train a VAE (default: the bundled digits)"),
    "evaluate": Command("evaluate", "test ELBO of a checkpoint, and the importance-weighted NLL with --iw-samples"),
    "estimators": Command("estimators", "score-function vs reparameterization gradient: means, variances, SNR"),
    "bound-gap": Command("bound_gap", "ELBO <= IW bound <= exact log p(x) on a 2-D latent model; the gap is "
                                      "KL(q || posterior)"),
    "figures": Command("figures", "a figure, with the numbers it shows, for each argument of docs/walkthrough.md"),
    "graph": Command("graph", "draw the tape backward() walks: the ELBO, the score-function surrogate, the IWAE bound"),
    "sample": Command("images", "decode prior samples from a checkpoint", "run_sample", "add_sample_arguments"),
    "reconstruct": Command("images", "reconstruct test images with a checkpoint", "run_reconstruct",
                           "add_reconstruct_arguments"),
    "backends": Command("backends", "list the backends and whether each can run here"),
    "gradcheck": Command("gradcheck", "check every primitive's gradient against finite differences"),
    "bench": Command("bench", "time the kernels, a training step against PyTorch, JAX and autograd, an epoch, "
                              "an evaluation"),
}
OWN_THREADS = ("bench",)  # commands that set threads their own way
NO_BACKEND = ("backends",)  # commands that report on every backend, computing nothing: no --backend, no --threads


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


def command_module(name):
    """The module of the subcommand ``name`` (imported now: each command loads only what it runs)."""
    return importlib.import_module(f"minivae.commands.{COMMANDS[name].module}")


def build_parser(command=None):
    """The parser of every subcommand's name and summary, and of ``command``'s options (None: no command's)."""
    parser = OneLineParser(prog="minivae", description="A VAE from scratch: train, verify, benchmark.")
    parser.add_argument("--version", action="version", version=f"minivae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        sub = commands.add_parser(name, help=spec.summary, description=spec.summary,
                                  formatter_class=DefaultsHelpFormatter)
        if name == command:
            add_common_arguments(sub, name)
            getattr(command_module(name), spec.add_arguments)(sub)
    return parser


def add_common_arguments(parser, name):
    if name in NO_BACKEND:
        return
    parser.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                        help="array backend (default: $MINIVAE_BACKEND or numpy)")
    if name not in OWN_THREADS:
        parser.add_argument("--threads", type=thread_count, default=None,
                            help="BLAS and numba threads (default: one for small models, else one per core; "
                                 "train --resume and evaluate: the run's own)")


def requested_command(argv):
    """The subcommand named in ``argv``: its first word that is not an option, if that is a command."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def parse_args(argv):
    """The options of the command ``argv`` names, parsed by a parser that loaded that command alone."""
    return build_parser(requested_command(argv)).parse_args(argv)


class OutlivesItsReader:
    """A text stream that goes on after its reader left: once a pipe is closed (``minivae train | head -1``),
    what follows is written to /dev/null, so a run is not killed by its log."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())  # the stream's buffered text goes there too at its next flush
        os.close(devnull)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def prepare_output():
    """stdout and stderr for the process: any path printable (what the encoding cannot show is backslash-escaped,
    e.g. a file name's byte 0xff under ``PYTHONIOENCODING=ascii``), and outliving their readers."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            continue
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
        setattr(sys, name, OutlivesItsReader(stream))


def check_backend_variable():
    """Refuse an unknown ``MINIVAE_BACKEND`` before the command does anything (it is read when first used)."""
    name = os.environ.get(ENV_VAR)
    if name is not None and name not in BACKEND_NAMES:
        raise MinivaeError(f"{ENV_VAR}={name!r} names no backend; set it to one of {', '.join(BACKEND_NAMES)}, "
                           "or unset it")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        if getattr(args, "backend", None):
            set_backend(args.backend)
        elif args.command not in NO_BACKEND:
            check_backend_variable()
        if args.command not in OWN_THREADS + NO_BACKEND:
            from minivae.app.threads import choose_threads, use_threads
            use_threads(choose_threads(args.threads)[0])  # train and evaluate narrow it to their model
        return getattr(command_module(args.command), COMMANDS[args.command].run)(args)
    except NonFiniteResult as err:
        print(f"minivae: {err}", file=sys.stderr)
        return 3
    except MinivaeError as err:
        print(f"minivae: {err}", file=sys.stderr)
        return 2
    except MemoryError:  # a size no check foresaw: still one line
        print("minivae: out of memory; choose smaller sizes (--batch-size, --samples, --iw-samples, ...)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minivae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m minivae.cli: through the entry point, so the output is prepared as it is there
    from minivae.__main__ import main as entry_point
    sys.exit(entry_point())
