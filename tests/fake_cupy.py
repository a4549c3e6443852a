"""A stand-in for CuPy that runs on NumPy and refuses, while a stream captures, every call a real capture refuses.

CI has no GPU, so the code that runs on one (``kernels/cupy_kernels.py``, the
captured training step, every command on ``--backend cupy``) would otherwise
first run on a real device. ``install()`` puts this module in
``sys.modules["cupy"]``; the program then runs its real host-side code on
"device arrays" (``ndarray``: a NumPy array the host may reach only through
``asnumpy`` / ``get``, as in CuPy), and its CuPy kernels run as their NumPy
twins (``fake_cupy_kernels``).

A capture (``Stream.begin_capture`` ... ``end_capture``) records work and
runs none of it, as CUDA does; ``Graph.launch`` replays the record. While a
stream captures, each of these raises ``CaptureViolation`` naming the call:

- a cuBLAS call through CuPy's wrappers (``matmul``, ``dot``, ``@``): CuPy 14
  refuses them (``cupy_backends/cuda/libs/cublas.pyx``, ``setStream``);
- a host-to-device copy (``asarray`` of host data) or a device-to-host one
  (``asnumpy``, ``get``, ``item``, ``float``, ``int``, ``bool``, printing):
  CuPy stages them through pinned memory and an event it queries at once,
  and a query of an event recorded in a capture invalidates the capture;
- synchronizing a stream, a device or an event;
- an allocation not served by a private ``MemoryPool`` (``using_allocator``):
  the graph keeps the addresses it recorded, so nothing else may reuse them;
- a kernel compiled, or a ufunc instantiated for new dtypes, for the first
  time (module loading is not a stream operation).

Outside a capture everything runs at once, as on a device with a synchronous
stream. Mixing host arrays into device operations raises ``TypeError``, as
CuPy does.
"""
import bisect
import contextlib
import functools
import sys
import types
import weakref

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

import fake_cupy_kernels


class CaptureViolation(RuntimeError):
    """A call that a real CUDA stream capture refuses (or that CuPy refuses during one)."""


class CUDARuntimeError(RuntimeError):
    """cupy.cuda.runtime.CUDARuntimeError."""


# ----- Device state: the current stream, the capture, the allocator, what was compiled -----

class _State:
    def __init__(self):
        self.stream = None       # the current Stream (None: the null stream)
        self.capture = None      # the list of recorded launches while a stream captures, else None
        self.allocator = None    # a private pool's malloc while using_allocator is active
        self.compiled = set()    # kernels and ufunc signatures instantiated so far
        self.violations = []     # every refusal, also those a caller caught
        self.buffers = {}        # start address -> (end address, weakref to the host buffer), for device_memory


_state = _State()


def reset():
    """Forget every compiled kernel and recorded violation (a fresh process)."""
    global _state
    _state = _State()


def _refuse(call, why):
    """Raise CaptureViolation naming ``call`` when a stream captures."""
    if _state.capture is not None:
        message = f"{call} while a stream captures: {why}"
        _state.violations.append(message)
        raise CaptureViolation(message)


def _copy_to_device(call):
    _refuse(call, "a host-to-device copy is staged through pinned memory and an event CuPy queries at once, "
                  "which invalidates the capture")


def _copy_to_host(call):
    _refuse(call, "a device-to-host copy waits for the stream, which a capture cannot")


def _cublas(call):
    _refuse(call, "CuPy 14's cuBLAS wrappers refuse a capturing stream (cublas.pyx, setStream: "
                  "'calling cuBLAS API during stream capture is currently unsupported')")


def _compile(key):
    """Note kernel ``key`` as compiled; refused when its first use falls in a capture."""
    if key not in _state.compiled:
        _refuse(f"compiling {key[0]} for {key[1:]}", "modules are loaded outside the stream, before capture")
        _state.compiled.add(key)


def _allocate(host):
    """``host`` as a new device buffer; refused in a capture unless a private pool serves it."""
    if _state.capture is not None and _state.allocator is None:
        _refuse(f"allocating {host.nbytes} bytes from the default pool",
                "the graph keeps the addresses it recorded, so a capture allocates from a private MemoryPool")
    if len(_state.buffers) > 4096:  # forget freed buffers now and then
        _state.buffers = {start: entry for start, entry in _state.buffers.items() if entry[1]() is not None}
    address = host.__array_interface__["data"][0]
    _state.buffers[address] = (address + host.nbytes, weakref.ref(host))
    return ndarray(host)


def device_memory(address, nbytes):
    """The live device buffer holding ``nbytes`` from ``address`` (raw bytes, uint8), as a pointer-taking
    library (cuBLAS through nvmath) reads it; a ValueError where that memory is not a device buffer's."""
    starts = sorted(_state.buffers)
    for start in reversed(starts[:bisect.bisect_right(starts, address)]):
        end, buffer = _state.buffers[start]
        host = buffer()
        if host is None:
            continue  # a freed buffer, whose memory a live one (starting lower) may now hold
        if address + nbytes <= end:
            flat = host.reshape(-1) if host.flags.c_contiguous else host.ravel(order="A")
            return flat.view(np.uint8)[address - start:address - start + nbytes]
        break  # live buffers do not overlap: none starting lower holds it either
    raise ValueError(f"{nbytes} bytes at {address:#x} are not inside a live device buffer")


def _launch(run):
    """Run ``run`` (which writes into existing device buffers) now, or record it if a stream captures."""
    if _state.capture is None:
        run()
    else:
        _state.capture.append(run)


# ----- Arrays -----

def _host(a, call):
    """The NumPy array behind a device array; scalars pass; host arrays are refused as CuPy refuses them."""
    if isinstance(a, ndarray):
        return a._host
    if isinstance(a, np.ndarray):
        raise TypeError(f"Unsupported type {type(a)} in {call}: a host array mixed into a device operation")
    if isinstance(a, (list, tuple)):
        return type(a)(_host(item, call) for item in a)
    return a


def _result(value, inputs, recompute, kernel):
    """Wrap ``value``, computed from device ``inputs``: a view of one of them, or a new buffer written by
    ``kernel`` (a key for ``_compile``), whose computation a capture records (``recompute`` gives it again)."""
    if isinstance(value, (tuple, list)):
        return type(value)(_result(v, inputs, lambda i=i: recompute()[i], kernel) for i, v in enumerate(value))
    if not isinstance(value, np.ndarray):
        value = np.asarray(value)
    if any(np.may_share_memory(value, a) for a in inputs):
        return ndarray(value)
    _compile(kernel)
    out = _allocate(value)
    if _state.capture is not None:
        _state.capture.append(lambda: np.copyto(out._host, recompute(), casting="unsafe"))
    return out


def _device_inputs(args):
    found = []
    for a in args:
        if isinstance(a, ndarray):
            found.append(a._host)
        elif isinstance(a, (list, tuple)):
            found.extend(_device_inputs(a))
    return found


def _apply(function, call, *args, **kwargs):
    """``function`` on the host twins of device ``args``, as a device operation (views stay views)."""
    if "out" in kwargs:
        raise NotImplementedError(f"fake_cupy does not model out= of {call}")
    host_args = [_host(a, call) for a in args]
    host_kwargs = {k: _host(v, call) for k, v in kwargs.items()}
    inputs = _device_inputs(args) + _device_inputs(list(kwargs.values()))
    value = function(*host_args, **host_kwargs)
    return _result(value, inputs, lambda: function(*host_args, **host_kwargs),
                   (call, tuple(a.dtype.str for a in inputs)))


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


class ndarray(NDArrayOperatorsMixin):
    """A device array: NumPy memory the host reaches only through ``get`` / ``asnumpy``."""

    __array_priority__ = 100

    def __init__(self, host):
        self._host = host

    # facts that CuPy keeps on the host
    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    ndim = property(lambda self: self._host.ndim)
    size = property(lambda self: self._host.size)
    itemsize = property(lambda self: self._host.itemsize)
    nbytes = property(lambda self: self._host.nbytes)
    strides = property(lambda self: self._host.strides)
    flags = property(lambda self: self._host.flags)
    data = property(lambda self: _Pointer(self._host.__array_interface__["data"][0]))

    def __len__(self):
        return len(self._host)

    # the host's ways in: each one a device-to-host copy
    def get(self):
        _copy_to_host("ndarray.get()")
        return self._host.copy()

    def item(self):
        _copy_to_host("ndarray.item()")
        return self._host.item()

    def tolist(self):
        _copy_to_host("ndarray.tolist()")
        return self._host.tolist()

    def __float__(self):
        _copy_to_host("float(device array)")
        return float(self._host)

    def __int__(self):
        _copy_to_host("int(device array)")
        return int(self._host)

    def __index__(self):
        _copy_to_host("using a device array as an index")
        return self._host.__index__()

    def __bool__(self):
        _copy_to_host("bool(device array)")
        return bool(self._host)

    def __repr__(self):
        _copy_to_host("printing a device array")
        return f"fake_cupy.{self._host!r}"

    __str__ = __repr__

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    # device operations
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        call = f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__
        if ufunc is np.matmul:
            _cublas("matmul (@)")
        if out is not None:
            return self._in_place(ufunc, method, call, inputs, out, kwargs)
        if method == "at":
            target, rest = inputs[0], inputs[1:]
            host_rest = [_host(a, call) for a in rest]
            _compile((call, (target.dtype.str,)))
            _launch(lambda: ufunc.at(target._host, *host_rest))
            return None
        return _apply(getattr(ufunc, method) if method != "__call__" else ufunc, call, *inputs, **kwargs)

    def _in_place(self, ufunc, method, call, inputs, out, kwargs):
        targets = out if isinstance(out, tuple) else (out,)
        host_inputs = [_host(a, call) for a in inputs]
        host_out = tuple(_host(t, call) for t in targets)
        _compile((call, tuple(a.dtype.str for a in _device_inputs(inputs))))
        function = getattr(ufunc, method) if method != "__call__" else ufunc
        _launch(lambda: function(*host_inputs, out=host_out, **kwargs))
        return targets[0] if len(targets) == 1 else targets

    def __getitem__(self, index):
        index = _host(index, "indexing")
        return _apply(lambda a: a[index], "getitem", self)

    def __setitem__(self, index, value):
        if isinstance(value, np.ndarray):
            _copy_to_device("setting a device array from a host array")
            value = ndarray(value.copy())
        index, value = _host(index, "setitem"), _host(value, "setitem")
        target = self._host
        _launch(lambda: target.__setitem__(index, value))

    def fill(self, value):
        target = self._host
        _launch(lambda: target.fill(value))

    def dot(self, other):
        _cublas("ndarray.dot")
        return _apply(np.dot, "dot", self, other)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    T = property(lambda self: _apply(np.transpose, "transpose", self))


def _method(name):
    def method(self, *args, **kwargs):
        return _apply(lambda a, *rest, **kw: getattr(a, name)(*rest, **kw), name, self, *args, **kwargs)
    method.__name__ = name
    return method


for _name in ("sum", "mean", "max", "min", "prod", "any", "all", "argmax", "argmin", "cumsum", "reshape", "ravel",
              "flatten", "transpose", "swapaxes", "squeeze", "astype", "copy", "clip", "view", "conj", "round"):
    setattr(ndarray, _name, _method(_name))


# ----- The module's functions -----

def asarray(a, dtype=None, order=None):
    """A device array: ``a`` itself (cast if asked) when on the device, else a host-to-device copy."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    _copy_to_device(f"asarray of a host {type(a).__name__}")
    return _allocate(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, ndarray):
        return a.astype(dtype or a.dtype, copy=True)
    return asarray(a, dtype, order)


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def _creation(function):
    def create(*args, **kwargs):
        host_args = [_host(a, function.__name__) for a in args]
        out = _allocate(function(*host_args, **kwargs))
        if function.__name__ not in ("empty", "empty_like") and _state.capture is not None:
            _state.capture.append(lambda: np.copyto(out._host, function(*host_args, **kwargs)))
        return out
    create.__name__ = function.__name__
    return create


for _name in ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like", "arange",
              "linspace", "eye"):
    setattr(sys.modules[__name__], _name, _creation(getattr(np, _name)))


def _joining(function):
    """``function`` (concatenate, stack) as a device operation that refuses what is not a device array, as CuPy
    does (a NumPy scalar too, which other device operations take)."""
    def join(arrays, *args, **kwargs):
        if not all(isinstance(a, ndarray) for a in arrays):
            raise TypeError(f"Only cupy arrays can be concatenated ({function.__name__} of "
                            f"{[type(a).__name__ for a in arrays]})")
        return _apply(function, function.__name__, arrays, *args, **kwargs)
    join.__name__ = function.__name__
    return join


concatenate, stack = _joining(np.concatenate), _joining(np.stack)


def matmul(a, b, out=None):
    _cublas("cupy.matmul")
    if out is not None:
        return np.matmul(a, b, out=out)
    return _apply(np.matmul, "matmul", a, b)


def dot(a, b):
    _cublas("cupy.dot")
    return _apply(np.dot, "dot", a, b)


def __getattr__(name):
    """Every other NumPy function as a device operation (ufuncs keep their methods through ndarray)."""
    function = getattr(np, name)
    if isinstance(function, np.ufunc):
        return function
    if isinstance(function, type) or not callable(function):
        return function  # dtypes (cupy.float32), constants (cupy.newaxis, cupy.inf)

    def device_function(*args, **kwargs):
        return _apply(function, name, *args, **kwargs)
    device_function.__name__ = name
    return device_function


linalg = types.SimpleNamespace(norm=lambda x, *a, **k: _apply(np.linalg.norm, "linalg.norm", x, *a, **k))


# ----- Kernels: compiled on first use, run as their NumPy twins -----

class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name, preamble="", **options):
        self.name = name
        self.twin = fake_cupy_kernels.elementwise(name)
        self.raw = [p.split()[-1] for p in in_params.split(",") if p.split()[0] == "raw"]

    def __call__(self, *args):
        host_args = [_host(a, self.name) for a in args]
        return _result(self.twin(*host_args), _device_inputs(args), lambda: self.twin(*host_args), self._key(args))

    def _key(self, args):
        return (self.name, tuple(a.dtype.str for a in args if isinstance(a, ndarray)))


class ReductionKernel:
    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name, **options):
        self.name = name
        self.twin = fake_cupy_kernels.reduction(name)

    def __call__(self, *args, axis=None, keepdims=False):
        host_args = [_host(a, self.name) for a in args]

        def run():
            return self.twin(*host_args, axis=axis, keepdims=keepdims)
        return _result(run(), _device_inputs(args), run,
                       (self.name, tuple(a.dtype.str for a in args if isinstance(a, ndarray))))


class RawKernel:
    def __init__(self, name, twin):
        self.name, self.twin = name, twin

    def __call__(self, grid, block, args, shared_mem=0):
        _compile((self.name, ()))
        host_args = [_host(a, self.name) for a in args]
        _launch(lambda: self.twin(*host_args))


class RawModule:
    def __init__(self, code=None, path=None, options=(), **kwargs):
        self.code = code

    def get_function(self, name):
        return RawKernel(name, fake_cupy_kernels.raw(name))


# ----- cupy.cuda: streams, capture, graphs, memory pools -----

class Stream:
    _count = 0

    def __init__(self, null=False, non_blocking=False, ptr=None):
        Stream._count += 1
        self.ptr = 0 if null else Stream._count
        self._previous = []

    def __enter__(self):
        self._previous.append(_state.stream)
        _state.stream = self
        return self

    def __exit__(self, *exc):
        _state.stream = self._previous.pop()

    def synchronize(self):
        _refuse("Stream.synchronize()", "a capturing stream cannot be waited for")

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if _state.capture is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: a stream is already capturing")
        _state.capture = []
        self._capturing = True

    def end_capture(self):
        record, _state.capture = _state.capture, None
        self._capturing = False
        return Graph(record)

    def is_capturing(self):
        return bool(getattr(self, "_capturing", False))


Stream.null = Stream(null=True)


class Graph:
    """The recorded launches of one capture; ``launch`` replays them in order."""

    def __init__(self, record):
        self.record = record

    def launch(self, stream=None):
        if _state.capture is not None:
            raise CaptureViolation("Graph.launch while a stream captures")
        for run in self.record:
            run()

    def upload(self, stream=None):
        pass


class Event:
    def record(self, stream=None):
        pass

    def synchronize(self):
        _refuse("Event.synchronize()", "waiting for an event recorded in a capture invalidates it")

    def query(self):
        _refuse("Event.query()", "querying an event recorded in a capture invalidates it")
        return True


class MemoryPool:
    """A private pool: arrays allocated while ``using_allocator(pool.malloc)`` is active may be captured."""

    def malloc(self, size):
        return size

    def used_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


@contextlib.contextmanager
def using_allocator(allocator=None):
    previous, _state.allocator = _state.allocator, allocator
    try:
        yield
    finally:
        _state.allocator = previous


def get_current_stream():
    return _state.stream or Stream.null


class Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        _refuse("Device.synchronize()", "a device with a capturing stream cannot be waited for")


def _stream_is_capturing(ptr):
    stream = _state.stream
    return _state.capture is not None and stream is not None and stream.ptr == ptr


runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=CUDARuntimeError,
                                streamIsCapturing=_stream_is_capturing, streamCaptureModeRelaxed=2)
cuda = types.SimpleNamespace(Stream=Stream, Graph=Graph, Event=Event, MemoryPool=MemoryPool,
                             using_allocator=using_allocator, get_current_stream=get_current_stream, Device=Device,
                             runtime=runtime)


def install(monkeypatch):
    """Make ``import cupy`` give this module for one test, with nothing compiled yet and no kernels cached.

    The kernels and cuBLAS handles the test makes go into caches of its own, which ``monkeypatch`` drops at
    teardown (the module's own come back untouched): a later test on a real GPU never gets a fake kernel,
    nor a handle whose workspace lived on the fake device.
    """
    from minivae.kernels import cupy_gemm, cupy_kernels
    reset()
    monkeypatch.setitem(sys.modules, "cupy", sys.modules[__name__])
    monkeypatch.setattr(cupy_kernels, "_kernels", functools.cache(cupy_kernels._kernels.__wrapped__))
    monkeypatch.setattr(cupy_gemm, "_handles", {})
    return sys.modules[__name__]
