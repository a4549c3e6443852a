"""The cupy kernel set's matrix product: cuBLAS GEMM through nvmath-python's bindings, capturable as a CUDA graph.

CuPy's own cuBLAS wrappers (``cupy.matmul``) refuse a stream that captures,
so the products call cuBLAS directly through ``nvmath.bindings.cublas``, on a
handle of their own for each stream, set up as the cuBLAS documentation asks
for capture ("CUDA Graphs Support", ``cublasSetStream``, ``cublasSetWorkspace``):

1. ``create`` the handle when a stream runs its first product, which is never
   inside a capture (the static step's eager warm-up runs first):
   ``cublasCreate`` allocates resources on the device;
2. ``set_stream`` to that stream, then ``set_workspace`` to a buffer from the
   current allocator (the private pool, during the static step's warm-up), in
   that order: ``cublasSetStream`` resets the workspace to cuBLAS's own pool,
   which would allocate inside a capture;
3. pointer mode host: alpha = 1 and beta = 0 are read when the call is made,
   and a capture records those values.

The same path runs eagerly and captured, so a captured step runs the same
GEMM as an eager one. A stream's handle and workspace are kept for the life of
the process, and the stream with them, so that no later stream reuses its address.
"""
import numpy as np

WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommended workspace on Hopper and Blackwell (cublasSetWorkspace)
_handles = {}  # (device, stream address) -> (stream, handle, workspace)
_ONE = {np.dtype(np.float32): np.ones(1, np.float32), np.dtype(np.float64): np.ones(1, np.float64)}
_ZERO = {dtype: np.zeros(1, dtype) for dtype in _ONE}


def _cupy():
    import cupy
    return cupy


def _cublas():
    """nvmath-python's cuBLAS bindings, imported on first use."""
    from nvmath.bindings import cublas
    return cublas


def _handle(cp, cublas):
    """The cuBLAS handle of the current stream, made and bound (stream, then workspace) on its first product."""
    stream = cp.cuda.get_current_stream()
    key = (cp.cuda.Device().id, stream.ptr)
    if key not in _handles:
        handle = cublas.create()
        cublas.set_stream(handle, stream.ptr)
        workspace = cp.empty(WORKSPACE_BYTES, np.uint8)  # after set_stream, which would reset it
        cublas.set_workspace(handle, workspace.data.ptr, workspace.nbytes)
        cublas.set_pointer_mode(handle, cublas.PointerMode.HOST)
        _handles[key] = (stream, handle, workspace)
    return _handles[key][1]


def _row_major(cp, x, transposed):
    """(x C-contiguous, transposed): an F-contiguous x is its transpose's view, read transposed; others are copied."""
    if x.flags.c_contiguous:
        return x, transposed
    if x.flags.f_contiguous:
        return x.T, not transposed
    return cp.ascontiguousarray(x), transposed


def _gemm_types(dtype):
    """(cudaDataType, cublasComputeType) of a float32 or float64 product: FP32 or FP64 arithmetic throughout."""
    import nvmath
    cublas = _cublas()
    if dtype == np.float32:
        return nvmath.CudaDataType.CUDA_R_32F, cublas.ComputeType.COMPUTE_32F
    if dtype == np.float64:
        return nvmath.CudaDataType.CUDA_R_64F, cublas.ComputeType.COMPUTE_64F
    raise TypeError(f"gemm: cuBLAS products here are float32 or float64, not {dtype}")


def gemm(a, b, trans_a=False, trans_b=False):
    """out[i, j] = sum_k op(a)[i, k] op(b)[k, j] by cublasGemmEx, op = transpose when asked.

    cuBLAS reads matrices column-major: a C-contiguous (r, c) array is, read so,
    its transpose (c, r), with leading dimension c. So out (m, n) is computed as
    out^T = op(b)^T op(a)^T: b first, then a, each with its own transpose flag
    and its row length as leading dimension; out^T written column-major is out
    row-major.
    """
    cp, cublas = _cupy(), _cublas()
    dtype = np.result_type(a.dtype, b.dtype)
    data_type, compute_type = _gemm_types(dtype)
    a, trans_a = _row_major(cp, a.astype(dtype, copy=False), trans_a)
    b, trans_b = _row_major(cp, b.astype(dtype, copy=False), trans_b)
    m, k = a.shape[::-1] if trans_a else a.shape
    k_b, n = b.shape[::-1] if trans_b else b.shape
    if k != k_b:
        raise ValueError(f"gemm: op(a) {(m, k)} @ op(b) {(k_b, n)}: inner dimensions differ")
    out = cp.empty((m, n), dtype)
    if out.size == 0:
        return out
    if k == 0:
        out.fill(0)
        return out
    flag = {False: cublas.Operation.N, True: cublas.Operation.T}
    cublas.gemm_ex(_handle(cp, cublas), flag[trans_b], flag[trans_a], n, m, k, _ONE[dtype].ctypes.data,
                   b.data.ptr, data_type, b.shape[1], a.data.ptr, data_type, a.shape[1],
                   _ZERO[dtype].ctypes.data, out.data.ptr, data_type, n, compute_type, cublas.GemmAlgo.DEFAULT)
    return out
