"""Backends: which array module holds tensors and which kernels run the hot paths.

A backend is a name, an array module ``xp`` and a kernel set implementing
``minivae.kernels.reference.KERNEL_NAMES``. ``numpy`` is the reference and is
always available; the others load lazily so ``import minivae`` never imports
numba or cupy. Choose one with ``set_backend(name)``, the ``MINIVAE_BACKEND``
environment variable, or ``--backend`` on the command line.
"""
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from minivae.errors import MinivaeError

BACKEND_NAMES = ("numpy",)
ENV_VAR = "MINIVAE_BACKEND"


class BackendUnavailable(MinivaeError):
    """A backend cannot run here; the message says which, why, and what to use."""


@dataclass(frozen=True)
class Backend:
    name: str
    xp: ModuleType
    kernels: ModuleType

    def asnumpy(self, array):
        """A NumPy copy (or view) of an array of this backend."""
        return np.asarray(array)


def _load_numpy():
    from minivae.kernels import reference
    return Backend("numpy", np, reference)


_LOADERS = {"numpy": _load_numpy}
_active = None


def load_backend(name):
    """The backend called ``name``, or ``BackendUnavailable`` saying why not."""
    if name not in _LOADERS:
        raise BackendUnavailable(
            f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return _LOADERS[name]()


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
