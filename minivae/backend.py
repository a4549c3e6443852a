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
import, and that their versions work together (``versions``). Then a GPU
backend computes a 2x3 product on the device (``product_failure``): a library
that cannot be loaded (cuBLAS, nvmath-python's bindings) or a compiler that
cannot work (NVVM, libdevice) is found when the backend loads, in one line,
not mid-run.
"""
import contextlib
import importlib
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from minivae.errors import MinivaeError, one_line
from minivae.versions import GPU_INSTALL, numpy_too_new_for_numba_cuda, row_stack_failure

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
    _require("cupy", "nvmath", GPU_INSTALL, "nvmath-python (cuBLAS's bindings)")
    from minivae.kernels import cupy_kernels
    return _checked(Backend("cupy", cupy, cupy_kernels))


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
    from minivae.kernels import numba_cuda
    return _checked(Backend("numba-cuda", cupy, numba_cuda))


_NO_GPU = "no CUDA GPU found (nvidia driver/device absent); use --backend numpy or numba"


def _require(backend, package, install, name=None):
    """Raise BackendUnavailable unless ``package`` imports; ``name``: what to call it (default: the package)."""
    try:
        importlib.import_module(package)
    except ImportError as exc:
        what = "package" if package == backend else f"needs {name or package}:"
        reason = "not installed" if exc.name == package else f"import failed ({exc})"
        raise BackendUnavailable(f"{backend}: {what} {reason} ({install})") from None


def _import_cupy(backend):
    """The cupy module, or BackendUnavailable naming ``backend`` and the install command."""
    _require(backend, "cupy", f"{GPU_INSTALL} where there is an NVIDIA GPU; else use --backend numpy or numba")
    return importlib.import_module("cupy")


def _checked(loaded):
    """``loaded``, a GPU backend, once a product on its device came out right; else BackendUnavailable saying why."""
    failure = product_failure(loaded)
    if failure:
        raise BackendUnavailable(failure)
    return loaded


def product_failure(loaded):
    """None when ``loaded``'s matmul computes a 2x3 @ 3x2 product right on the device, else the one-line reason.

    Whatever the first product raises means the backend cannot run here: a
    library not found (cuda.pathfinder's ``DynamicLibNotFoundError`` for
    cuBLAS), NVVM or libdevice missing (numba-cuda's ``NvvmSupportError``, or
    its RuntimeError "Missing libdevice file"), numpy too new for numba-cuda.
    """
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    try:
        product = loaded.asnumpy(loaded.kernels.matmul(loaded.xp.asarray(a), loaded.xp.asarray(a), trans_b=True))
    except Exception as failure:  # any failure of the first product is the answer
        return row_stack_failure(failure) or (
            f"{loaded.name}: a 2x3 product on the device failed ({one_line(failure)}); "
            f"{GPU_INSTALL} installs what the GPU backends load (cuBLAS, nvmath-python, NVVM and libdevice)")
    if not np.allclose(product, a @ a.T):
        return f"{loaded.name}: a 2x3 product on the device came out {product.tolist()}, not {(a @ a.T).tolist()}"
    return None


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
