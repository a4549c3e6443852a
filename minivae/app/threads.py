"""How many threads NumPy's BLAS and numba use: ``--threads N``, or a count chosen for the work and the machine.

A matrix product of a few million multiply-adds takes well under a
millisecond on one core; splitting it across threads costs more in waking and
joining them than it saves, and on a machine whose cores are busy with other
work a thread that is descheduled stalls its siblings at every product. So
the default is one thread for products too small to split, and otherwise
never more threads than the cores the load average leaves free. The counts
are set with threadpoolctl (BLAS already loaded) and ``numba.set_num_threads``,
not with environment variables, which a library reads only when it loads.
"""
import contextlib
import os
import sys

# Multiply-adds in one product (batch x widest layer x next widest) below which one thread is faster.
SPLIT_WORTHWHILE = 1 << 24


def usable_cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average():
    """The 1-minute load average: how many cores other work keeps busy (0 where the system does not say)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def free_cores():
    """Usable cores minus the 1-minute load average (other work), at least 1."""
    cores = usable_cores()
    return max(1, min(cores, round(cores - load_average())))


def product_size(batch_size, layer_sizes):
    """Multiply-adds of the largest product of a batch through an MLP with these layer widths."""
    widest = sorted(layer_sizes, reverse=True)
    return batch_size * widest[0] * (widest[1] if len(widest) > 1 else 1)


def choose_threads(requested, multiply_adds=None):
    """(count, the reason in words): ``requested`` if given, else one for small products, else the free cores."""
    if requested is not None:
        return requested, f"{requested} thread{'s' * (requested > 1)} (--threads)"
    if multiply_adds is not None and multiply_adds < SPLIT_WORTHWHILE:
        return 1, f"1 thread (products of {multiply_adds:,} multiply-adds are too small to split; --threads N to change)"
    count = free_cores()
    return count, (f"{count} thread{'s' * (count > 1)} ({usable_cores()} cores, load {load_average():.1f};"
                   " --threads N to change)")


def use_threads(count):
    """Cap NumPy's BLAS (threadpoolctl) and numba, if loaded, at ``count`` threads for the rest of the process."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(count)
    _cap_numba(count)


@contextlib.contextmanager
def threads_limited(count):
    """BLAS and numba (if loaded) capped at ``count`` threads inside the block, as they were after it."""
    from threadpoolctl import threadpool_limits
    numba = sys.modules.get("numba")
    before = numba.get_num_threads() if numba else None
    with threadpool_limits(count):
        _cap_numba(count)
        try:
            yield
        finally:
            if numba:
                numba.set_num_threads(before)


def _cap_numba(count):
    """numba's threads capped at ``count`` (no more than it started), if numba is loaded; nothing otherwise."""
    numba = sys.modules.get("numba")
    if numba:
        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
