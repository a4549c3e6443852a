"""Backends: which array module holds tensors and which kernels run the hot paths.

A backend is a name, an array module ``xp`` and a kernel set implementing
``minivae.kernels.reference.KERNEL_NAMES``. ``numpy`` is the reference and is
always available; the others load lazily so ``import minivae`` never imports
numba or cupy. Choose one with ``set_backend(name)``, the ``MINIVAE_BACKEND``
environment variable, or ``--backend`` on the command line.

- ``numba``: NumPy arrays, Numba CPU kernels.
- ``cupy``: CuPy arrays, cuBLAS plus CuPy and CUDA C kernels; needs a GPU.
- ``numba-cuda``: hand-written Numba CUDA kernels; CuPy arrays on a GPU, or
  NumPy arrays under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

A backend that cannot run here raises ``BackendUnavailable`` with one line
saying why; ``available_backends()`` collects those lines without raising.
What can be checked without a device is checked first: that the packages
import, and that their versions work together (``versions``).
"""
import contextlib
import importlib
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from minivae.errors import MinivaeError
from minivae.versions import numba_cuda_compile_failure, numpy_too_new_for_numba_cuda

BACKEND_NAMES = ("numpy", "numba", "cupy", "numba-cuda")
ENV_VAR = "MINIVAE_BACKEND"


class BackendUnavailable(MinivaeError):
    """A backend cannot run here; the message says which, why, and what to use."""


@dataclass(frozen=True)
class Backend:
    name: str
    xp: ModuleType
    kernels: ModuleType
    note: str | None = None  # a caveat worth telling the user, e.g. "running under the simulator"

    def asnumpy(self, array):
        """A NumPy copy (or view) of an array of this backend."""
        if self.xp is np:
            return np.asarray(array)
        return self.xp.asnumpy(array)


def _load_numpy():
    from minivae.kernels import reference
    return Backend("numpy", np, reference)


def _load_numba():
    _require("numba", "numba", "pip install numba")
    from minivae.kernels import numba_cpu
    return Backend("numba", np, numba_cpu)


def _load_cupy():
    cupy = _import_cupy("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        raise BackendUnavailable("cupy: " + _NO_GPU) from None
    from minivae.kernels import cupy_kernels
    return Backend("cupy", cupy, cupy_kernels)


def _load_numba_cuda():
    _require("numba-cuda", "numba", "pip install numba")
    too_new = numpy_too_new_for_numba_cuda()
    if too_new:
        raise BackendUnavailable(too_new)
    from numba import config, cuda  # numba.cuda is imported here, only when asked for
    if config.ENABLE_CUDASIM:
        from minivae.kernels import numba_cuda
        return Backend("numba-cuda", np, numba_cuda,
                       note="numba-cuda: running under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    if not cuda.is_available():
        raise BackendUnavailable("numba-cuda: " + _NO_GPU)
    cupy = _import_cupy("numba-cuda")  # the array module on a GPU
    failure = numba_cuda_compile_failure(cuda.jit)
    if failure:
        raise BackendUnavailable(failure)
    from minivae.kernels import numba_cuda
    return Backend("numba-cuda", cupy, numba_cuda)


_NO_GPU = "no CUDA GPU found (nvidia driver/device absent); use --backend numpy or numba"


def _require(backend, package, install):
    """Raise BackendUnavailable unless ``package`` imports."""
    try:
        importlib.import_module(package)
    except ImportError as exc:
        what = "package" if package == backend else f"needs {package}:"
        reason = "not installed" if exc.name == package else f"import failed ({exc})"
        raise BackendUnavailable(f"{backend}: {what} {reason} ({install})") from None


def _import_cupy(backend):
    """The cupy module, or BackendUnavailable naming ``backend`` and the install command."""
    _require(backend, "cupy", "pip install 'minivae[gpu-cuda12]' or 'minivae[gpu-cuda13]' (the CUDA of your driver) "
                              "where there is an NVIDIA GPU; else use --backend numpy or numba")
    return importlib.import_module("cupy")


_LOADERS = {"numpy": _load_numpy, "numba": _load_numba, "cupy": _load_cupy, "numba-cuda": _load_numba_cuda}
_active = None


def load_backend(name):
    """The backend called ``name``, or ``BackendUnavailable`` saying why not."""
    if name not in _LOADERS:
        raise BackendUnavailable(
            f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return _LOADERS[name]()


def available_backends():
    """{name: None if it loads here, else the one-line reason it cannot}."""
    reasons = {}
    for name in BACKEND_NAMES:
        try:
            load_backend(name)
            reasons[name] = None
        except BackendUnavailable as exc:
            reasons[name] = str(exc)
    return reasons


def set_backend(name):
    """Make ``name`` the backend new tensors use; returns it."""
    global _active
    _active = load_backend(name)
    return _active


def get_backend():
    """The active backend (from ``MINIVAE_BACKEND`` on first use, else numpy)."""
    if _active is None:
        set_backend(os.environ.get(ENV_VAR, "numpy"))
    return _active


@contextlib.contextmanager
def using_backend(backend):
    """Inside the block ``backend`` (a ``Backend`` object) is the active one; the one before it after."""
    global _active
    previous, _active = _active, backend
    try:
        yield backend
    finally:
        _active = previous
