"""``minivae backends``: which backends can run here, or in one line why not."""
from minivae.backend import available_backends, load_backend


def add_arguments(parser):
    """No options of its own."""


def run(args):
    """Print each backend as available, or the one-line reason it cannot run here."""
    for name, reason in available_backends().items():
        note = None if reason else load_backend(name).note
        status = reason or "available" + (f" ({note})" if note else "")
        print(f"{name:<11} {status}")
    return 0
