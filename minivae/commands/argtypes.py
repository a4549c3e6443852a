"""Argument types for the command line: each rejects a bad value with a one-line reason."""
import argparse
import math

from minivae.app.threads import MAX_THREADS


def _parse(text, convert, kind):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None


def _require(condition, message):
    if not condition:
        raise argparse.ArgumentTypeError(message)


def positive_int(text):
    """An integer > 0."""
    value = _parse(text, int, "a whole number")
    _require(value > 0, f"{value} must be a positive whole number")
    return value


def thread_count(text):
    """A number of threads: 1 to ``threads.MAX_THREADS``."""
    value = positive_int(text)
    _require(value <= MAX_THREADS, f"{value} threads: at most {MAX_THREADS}")
    return value


def non_negative_int(text):
    """An integer >= 0."""
    value = _parse(text, int, "a whole number")
    _require(value >= 0, f"{value} must be zero or more")
    return value


def positive_float(text):
    """A finite number > 0."""
    value = _parse(text, float, "a number")
    _require(0 < value < math.inf, f"{text} must be a positive finite number")
    return value


def bounded_float(low, high, why):
    """An argument type: a number in [low, high], refused with ``why`` (the reason for the bounds)."""
    def parse(text):
        value = _parse(text, float, "a number")
        _require(low <= value <= high, f"{text} must be between {low:g} and {high:g} ({why})")
        return value
    return parse


# The quadrature grid's half-width in prior standard deviations: beyond about 38 the prior density
# exp(-z^2 / 2) underflows float64 at the grid's edge, and the integral loses all its points.
extent = bounded_float(1e-3, 30, "in prior standard deviations; e.g. 5")


def fraction(text):
    """A number in [0, 1)."""
    value = _parse(text, float, "a number")
    _require(0 <= value < 1, f"{text} must be at least 0 and below 1")
    return value


def int_list(text):
    """Comma-separated positive integers, e.g. '400' or '300,300'."""
    values = _parse(text, lambda t: [int(part) for part in t.split(",") if part.strip()],
                    "a comma-separated list of whole numbers")
    _require(values and all(v > 0 for v in values),
             f"{text!r} needs one or more positive whole numbers, e.g. 400 or 300,300")
    return values


def name_list(choices):
    """An argument type: comma-separated names, each one of ``choices``, e.g. 'numpy,numba'."""
    def parse(text):
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in choices]
        _require(names and not unknown,
                 f"{text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'no names'};"
                 f" choose among {', '.join(choices)}")
        return list(dict.fromkeys(names))
    return parse
