"""A stand-in for ``nvmath.bindings.cublas`` (NVIDIA's cuBLAS bindings) over ``fake_cupy``'s device memory.

It computes what cuBLAS computes, from raw pointers and column-major
leading dimensions, so the arithmetic of a caller's row-major-to-column-major
translation is checked on the CPU; and it refuses what breaks a CUDA graph:

- a GEMM while a stream captures on a handle bound to another stream (it would
  run at once, outside the graph) or to no stream yet;
- a GEMM while a stream captures on a handle without a workspace of its own
  (cuBLAS would allocate one inside the capture; cuBLAS's documentation on
  CUDA Graphs support: set a workspace with cublasSetWorkspace first). As in
  cuBLAS, ``set_stream`` resets the workspace, so it is set after the stream;
- pointers that are not inside live device buffers.

``alpha`` and ``beta`` are read through their host pointers when the call is
made (CUBLAS_POINTER_MODE_HOST), which is also when a capture reads them.
"""
import ctypes
import enum
import sys
import types

import numpy as np

import fake_cupy


class Operation(enum.IntEnum):
    N = 0
    T = 1
    C = 2


class ComputeType(enum.IntEnum):
    COMPUTE_32F = 68
    COMPUTE_32F_PEDANTIC = 69
    COMPUTE_64F = 70
    COMPUTE_64F_PEDANTIC = 71


class GemmAlgo(enum.IntEnum):
    DEFAULT = -1


class PointerMode(enum.IntEnum):
    HOST = 0
    DEVICE = 1


class CudaDataType(enum.IntEnum):
    CUDA_R_32F = 0
    CUDA_R_64F = 1


DTYPES = {CudaDataType.CUDA_R_32F: np.dtype(np.float32), CudaDataType.CUDA_R_64F: np.dtype(np.float64)}
COMPUTE = {CudaDataType.CUDA_R_32F: (ComputeType.COMPUTE_32F, ComputeType.COMPUTE_32F_PEDANTIC),
           CudaDataType.CUDA_R_64F: (ComputeType.COMPUTE_64F, ComputeType.COMPUTE_64F_PEDANTIC)}


class cuBLASError(Exception):
    pass


_handles = {}


class _Handle:
    def __init__(self):
        self.stream, self.workspace, self.pointer_mode = None, None, PointerMode.HOST


def create():
    """A new handle; refused while a stream captures (cublasCreate "allocates hardware resources on the host and
    device", cuBLAS documentation 2.4.1: conservatively, this stand-in lets no capture record that)."""
    fake_cupy._refuse("cublasCreate", "a handle allocates on the device; create it before the capture")
    handle = len(_handles) + 1
    _handles[handle] = _Handle()
    return handle


def destroy(handle):
    _handles.pop(handle)


def set_stream(handle, stream):
    """Bind the handle to ``stream``; as cublasSetStream does, this puts its workspace back to cuBLAS's own pool."""
    _handles[handle].stream = stream
    _handles[handle].workspace = None


def set_workspace(handle, workspace, workspace_size_in_bytes):
    fake_cupy.device_memory(workspace, workspace_size_in_bytes)
    _handles[handle].workspace = (workspace, workspace_size_in_bytes)


def set_pointer_mode(handle, mode):
    _handles[handle].pointer_mode = PointerMode(mode)


def _column_major(address, dtype, rows, cols, ld):
    """The rows x cols column-major matrix at ``address`` with leading dimension ``ld``, as a NumPy view."""
    if ld < max(1, rows):
        raise cuBLASError(f"CUBLAS_STATUS_INVALID_VALUE: leading dimension {ld} < {rows} rows")
    nbytes = ((cols - 1) * ld + rows) * dtype.itemsize if rows and cols else 0
    memory = fake_cupy.device_memory(address, nbytes).view(dtype)
    return np.lib.stride_tricks.as_strided(memory, (rows, cols), (dtype.itemsize, ld * dtype.itemsize))


def _host_scalar(address, dtype):
    return np.frombuffer(ctypes.string_at(address, dtype.itemsize), dtype)[0]


def _check_capture(handle):
    state = fake_cupy._state
    if state.capture is None:
        return
    stream = fake_cupy.get_current_stream()
    if handle.stream != stream.ptr:
        fake_cupy._refuse(f"cuBLAS GEMM on a handle bound to stream {handle.stream}",
                          f"the capturing stream is {stream.ptr}, so the GEMM would run now, outside the graph; "
                          "bind the handle (set_stream) before the capture")
    if handle.workspace is None:
        fake_cupy._refuse("cuBLAS GEMM on a handle without a workspace",
                          "cuBLAS would allocate its workspace inside the capture; set one (set_workspace) first")


def gemm_ex(handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc,
            compute_type, algo):
    """C = alpha op(A) op(B) + beta C, column-major: op(A) m x k, op(B) k x n, C m x n."""
    state = _handles[handle]
    if state.pointer_mode != PointerMode.HOST:
        raise cuBLASError("this stand-in reads alpha and beta from host memory only")
    if not atype == btype == ctype or compute_type not in COMPUTE[CudaDataType(atype)]:
        raise cuBLASError(f"CUBLAS_STATUS_NOT_SUPPORTED: types {atype}, {btype}, {ctype} with compute {compute_type}")
    _check_capture(state)
    dtype = DTYPES[CudaDataType(atype)]
    A = _column_major(a, dtype, *((m, k) if transa == Operation.N else (k, m)), lda)
    B = _column_major(b, dtype, *((k, n) if transb == Operation.N else (n, k)), ldb)
    C = _column_major(c, dtype, m, n, ldc)
    alpha_value, beta_value = _host_scalar(alpha, dtype), _host_scalar(beta, dtype)
    op_a = A if transa == Operation.N else A.T
    op_b = B if transb == Operation.N else B.T

    def run():
        product = op_a.astype(np.float64) @ op_b.astype(np.float64)
        C[...] = (alpha_value * product + (beta_value * C if beta_value else 0)).astype(dtype)
    fake_cupy._launch(run)


def install(monkeypatch):
    """Make ``from nvmath.bindings import cublas`` give this module for one test, with no handle made yet
    (``fake_cupy.install`` gives ``cupy_gemm`` an empty table of handles, dropped at teardown)."""
    _handles.clear()
    module = sys.modules[__name__]
    nvmath = types.ModuleType("nvmath")
    nvmath.CudaDataType = CudaDataType
    nvmath.bindings = types.ModuleType("nvmath.bindings")
    nvmath.bindings.cublas = module
    for name, value in (("nvmath", nvmath), ("nvmath.bindings", nvmath.bindings), ("nvmath.bindings.cublas", module)):
        monkeypatch.setitem(sys.modules, name, value)
    return module
