"""How many threads NumPy's BLAS and numba use: ``--threads N``, or a count chosen for the work and the machine.

A matrix product of a few million multiply-adds takes well under a
millisecond on one core; splitting it across threads costs more in waking and
joining them than it saves. So the default is one thread for products too
small to split, and otherwise the machine's cores: a function of the model and
the machine alone, never of its load, because the numbers depend on it. BLAS
splits a product's sums differently at each thread count, so two runs of the
same options at 1 and 2 threads end with weights that differ in their last
digits (about 1e-5 after two epochs of the 784-400-20 model). A training run
stores its count in its checkpoint, and resuming takes it again
(``choose_threads(..., trained=N)``). The counts are set with threadpoolctl
(BLAS already loaded) and ``numba.set_num_threads``, not with environment
variables, which a library reads only when it loads.
"""
import contextlib
import os
import sys

from minivae.errors import MinivaeError

# Multiply-adds in one product (batch x widest layer x next widest) below which one thread is faster.
SPLIT_WORTHWHILE = 1 << 24
MAX_THREADS = 1024  # far above any machine's cores; OpenBLAS itself stops at the count it was built for


def usable_cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def product_size(batch_size, layer_sizes):
    """Multiply-adds of the largest product of a batch through an MLP with these layer widths."""
    widest = sorted(layer_sizes, reverse=True)
    return batch_size * widest[0] * (widest[1] if len(widest) > 1 else 1)


def choose_threads(requested, multiply_adds=None, trained=None):
    """(count, the reason in words): the count a resumed run was ``trained`` at, else ``requested`` if given,
    else one for small products, else the machine's cores.

    A ``requested`` count other than ``trained`` is refused: the run would not continue bit-identically.
    """
    if trained is not None:
        if requested not in (None, trained):
            raise MinivaeError(f"--threads {requested}: the run being resumed was trained with {_threads(trained)}, "
                               "and its numbers depend on the thread count (BLAS sums each product in another "
                               f"order), so it would not continue as it began; resume without --threads (it takes "
                               f"the run's {trained})")
        return trained, f"{_threads(trained)} (the run's own, stored in its checkpoint)"
    if requested is not None:
        return requested, f"{_threads(requested)} (--threads)"
    if multiply_adds is not None and multiply_adds < SPLIT_WORTHWHILE:
        return 1, f"1 thread (products of {multiply_adds:,} multiply-adds are too small to split; --threads N to change)"
    count = usable_cores()
    return count, f"{_threads(count)} (one per core; --threads N to change)"


def _threads(count):
    return f"{count} thread{'s' * (count > 1)}"


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
