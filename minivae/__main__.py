"""The ``minivae`` command's entry point (also ``python -m minivae``).

It imports the commands inside a ``try``, so Ctrl-C while NumPy and the rest
are still loading ends with one line and exit status 130, as it does later.
"""
import sys


def main():
    try:
        from minivae.cli import main as run_command, prepare_output
    except KeyboardInterrupt:
        print("minivae: interrupted", file=sys.stderr)
        return 130
    prepare_output()
    return run_command()


if __name__ == "__main__":
    sys.exit(main())
