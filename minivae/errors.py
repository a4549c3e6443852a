"""The project's own error: what went wrong and what to do, in one line.

The command line prints ``minivae: <message>`` and exits with status 2 for any
``MinivaeError``; library callers can catch it by type.
"""


class MinivaeError(Exception):
    """Bad input or an unusable environment, described in one actionable line."""
