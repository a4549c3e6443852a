"""Package versions that do not work together (found without a device), and the GPU backends' install hint.

numba-cuda 0.30 and older call ``np.row_stack``, which numpy 2.5 removed:
``numpy_too_new_for_numba_cuda`` reads the installed versions, and
``row_stack_failure`` recognizes the same clash in a kernel that failed to
compile. ``backend`` raises these lines as ``BackendUnavailable``;
``GPU_INSTALL`` is the install hint every message gives (the README's).
"""
import importlib.metadata

import numpy as np

GPU_INSTALL = 'pip install -e ".[gpu-cuda12]" (or ".[gpu-cuda13]" for a CUDA 13 driver)'


def installed_version(package):
    """The installed version of ``package`` (a distribution name such as "numba-cuda"), or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def numpy_too_new_for_numba_cuda():
    """The one-line reason numba-cuda cannot compile with this numpy (and what to install), or None.

    numba-cuda up to 0.30.x calls ``np.row_stack``; numpy 2.5 removed it.
    """
    version = installed_version("numba-cuda")
    if version is None or hasattr(np, "row_stack") or _release(version) >= (0, 31):
        return None
    return _too_new_line(version)


def _too_new_line(version):
    installed = f"numba-cuda {version}" if version else "this numba-cuda"
    return (f"numba-cuda: {installed} needs numpy < 2.5 (it calls np.row_stack, which numpy "
            f"{np.__version__} removed); pip install 'numpy<2.5', or reinstall with {GPU_INSTALL}")


def _release(version):
    """(major, minor) of a version string such as "0.30.4"; (0, 0) when it does not parse."""
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return (0, 0)


def row_stack_failure(failure):
    """The one-line reason numba-cuda fails on this numpy when ``failure`` (raised compiling a kernel) is the
    missing ``np.row_stack``, else None."""
    if isinstance(failure, AttributeError) and "row_stack" in str(failure):
        return _too_new_line(installed_version("numba-cuda"))
    return None
