"""Ctrl-C and SIGTERM during training: recorded when they arrive, acted on where stopping is safe.

A signal handler that raises lands wherever the interpreter happens to be.
Inside the import of a C extension (matplotlib's ``ft2font``, whose pybind11
initialization runs Python code) the exception becomes ``ImportError:
initialization failed`` and leaves the extension half built, and the
interpreter then aborts at exit (``Fatal Python error: PyThreadState_Get``,
signal 6); inside a weakref callback Python prints "Exception ignored" and the
interrupt is lost. So while ``stop_requests()`` is active the first SIGINT or
SIGTERM only records the request, and the training loop calls ``check_stop()``
where stopping is safe: before each step and after each epoch's outputs. A
second signal raises at once, for a run stuck elsewhere.
"""
import contextlib
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requests = []  # the signals received while stop_requests() is active


@contextlib.contextmanager
def stop_requests():
    """Within the block, SIGINT and SIGTERM ask the run to stop at its next ``check_stop()``."""
    previous = {signum: signal.signal(signum, _record) for signum in SIGNALS}
    _requests.clear()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requests.clear()


def _record(signum, frame):
    """The handler: note the first signal; raise at the second."""
    _requests.append(signum)
    if len(_requests) > 1:
        raise KeyboardInterrupt


def check_stop():
    """Raise KeyboardInterrupt if a stop was asked for (a no-op outside ``stop_requests()``)."""
    if _requests:
        raise KeyboardInterrupt
