"""The project's own error: what went wrong and what to do, in one line.

The command line prints ``minivae: <message>`` and exits with status 2 for any
``MinivaeError`` (3 for ``NonFiniteResult``: the input was accepted, the
result is NaN or infinite); library callers can catch them by type.
"""


class MinivaeError(Exception):
    """Bad input or an unusable environment, described in one actionable line."""


class NonFiniteResult(MinivaeError):
    """A result came out NaN or infinite (absurd weights or options); the command line exits with status 3."""


def one_line(failure):
    """An exception in one line: its type and the first line of its message ("CUDARuntimeError: ...")."""
    return f"{type(failure).__name__}: {(str(failure).strip().splitlines() or [''])[0]}"


def check_finite(quantity, values, advice):
    """Raise ``NonFiniteResult`` naming ``quantity`` unless every one of ``values`` is finite."""
    import numpy as np
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        bad = values[~np.isfinite(values)].ravel()[0]
        raise NonFiniteResult(f"{quantity} is {bad} (not finite); {advice}")
