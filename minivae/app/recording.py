"""A function's array work recorded once, then replayed on the same buffers: the CPU twin of a CUDA graph.

A CUDA graph (``static_step.py``) holds the kernels a stream launched, with
their arguments (array addresses); replaying it launches them all again,
with no Python in between, and each writes where it wrote before. Here the
same for NumPy arrays: ``record(fn, backend)`` runs ``fn`` once, for real,
with the backend's array module and kernels standing in for themselves, and
keeps every call that computed an array:

- a kernel (``matmul``, ``bias_act``, ... ``adam_step``), kept with its
  arguments and the arrays it returned, which it is replayed into (``out=``,
  which numba_cpu's kernels take);
- NumPy's work between the kernels (``-g``, ``a + b``, ``g.sum(axis=0)``, a
  gradient written into the optimizer's flat buffer), done on ``Traced``
  arrays: each operation on one runs at once and is kept, its result a new
  buffer (NumPy writes it there itself, ``out=``, where it can);
- a view (a slice, a reshape, a transpose) is no call: it shares its base's
  memory, so it sees whatever a replayed call writes there.

Every array the recording makes is kept alive with it, so its memory stays
put, as a captured graph keeps its private memory pool. ``Recording.launch()``
makes the same calls again, in order, on the same buffers: the arrays that
``fn`` read from outside (the batch, the parameters, Adam's moments and step
count) are read anew, and everything computed from them is computed anew.
What ``fn`` returns is not kept: a replay's effect is what it writes into
arrays from outside.

Before the first replay the list is made shorter (``_simplified``), without
changing a result: a kernel whose result is only copied into an array from
outside (a weight's gradient into the flat buffer) writes there itself;
constants (``ones_like``, a number as an array) are made once; results that
no call reads (the loss's value: backward needs only its shape) are dropped.

Reading an array's value on the host (``float()``, ``.item()``, ``if``,
``np.asarray``), whose answer a replay would not recompute, is refused while
recording: ``NotReplayable``.
"""
import operator
import types
from dataclasses import dataclass

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from minivae.backend import Backend, using_backend
from minivae.errors import MinivaeError
from minivae.kernels.reference import KERNEL_NAMES

KERNEL, COMPUTE, IN_PLACE = "kernel", "compute", "in place"
TAKES_OUT = (np.ndarray.sum, np.ndarray.max, np.ndarray.min, np.stack, np.concatenate)
CONSTANT_MAKERS = (np.zeros_like, np.ones_like, np.full_like, np.empty_like)  # their values do not depend on inputs
NUMBERS_AS_ARRAYS = (np.asarray, np.array)  # a constant when given no array


class NotReplayable(MinivaeError):
    """The recorded function did something a replay would not redo (it read an array's value on the host)."""


@dataclass(slots=True)
class Call:
    """One recorded call: ``function(*args, **kwargs)`` on host arrays, and the arrays it writes.

    kind: a ``KERNEL`` (replayed into its ``out=``), a ``COMPUTE`` (a new
    array each time, written into the buffer of its first call), or ``IN_PLACE``
    (``out=`` of the caller, a setitem, ``copyto``, ``adam_step``).
    """
    function: object
    args: tuple
    kwargs: dict
    writes: list
    kind: str

    def reads(self, array):
        """Whether an argument of this call (``out=`` too) may share memory with ``array``."""
        return any(np.may_share_memory(a, array) for a in _arrays(self.args) + _arrays(self.kwargs))

    def makes(self, array):
        """Whether this call writes ``array`` (or a part of it)."""
        return any(np.may_share_memory(w, array) for w in self.writes)


class Recording:
    """The calls that computed a function's arrays, in order; ``launch()`` makes them again on the same buffers."""

    def __init__(self):
        self.calls = []

    def launch(self):
        """Replay every call in order."""
        for call in self.calls:
            call.function(*call.args, **call.kwargs)

    # ----- While recording -----

    def call(self, function, args, kwargs):
        """``function(*args, **kwargs)`` on the arrays behind ``Traced`` ones, run now and kept; its result traced.

        A result written into given arrays (``out=``, a setitem, ``copyto``) is
        kept as the same call; a new array, as the call computing it again
        into the same buffer; a view of an argument, as nothing.
        """
        host_args, host_kwargs = _host(args), _host(kwargs)
        result = function(*host_args, **host_kwargs)
        if kwargs.get("out") is not None or result is None:  # written into given arrays
            out = host_kwargs.get("out")
            written = _arrays(out) if out is not None else _arrays(host_args[:1])
            self.calls.append(Call(function, host_args, host_kwargs, written, IN_PLACE))
            out = kwargs.get("out")
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        result = _as_arrays(result)
        inputs = _arrays(host_args) + _arrays(host_kwargs)
        new = [r for r in _flat(result)
               if isinstance(r, np.ndarray) and not any(np.may_share_memory(r, a) for a in inputs)]
        if new and _takes_out(function) and len(new) == len(_flat(result)):
            self.calls.append(Call(function, host_args, {**host_kwargs, "out": result}, new, COMPUTE))
        elif new:
            outputs = [r if any(r is n for n in new) else None for r in _flat(result)]  # not into a view
            self.calls.append(Call(_compute_into, (outputs, function, host_args, host_kwargs), {}, new, COMPUTE))
        return self.trace(result)

    def call_kernel(self, kernel, args, kwargs):
        """A kernel, run now and kept: replayed with ``out=`` its results, or as it is when it works in place."""
        host_args, host_kwargs = _host(args), _host(kwargs)
        result = kernel(*host_args, **host_kwargs)
        if result is None:
            self.calls.append(Call(kernel, host_args, host_kwargs, _arrays(host_args), IN_PLACE))
        else:
            new = [r for r in _arrays(result) if not any(r is a for a in _arrays(host_args))]  # not g itself
            self.calls.append(Call(kernel, host_args, {**host_kwargs, "out": result}, new, KERNEL))
        return self.trace(result)

    def trace(self, value):
        """Arrays (also inside tuples and lists) wrapped as ``Traced`` arrays of this recording."""
        if isinstance(value, np.ndarray):
            return Traced(value, self)
        if isinstance(value, (tuple, list)):
            return type(value)(self.trace(v) for v in value)
        return value

    def backend(self, backend):
        """``backend`` with its array module and kernels recording into this recording."""
        kernels = {name: _RecordedKernel(self, getattr(backend.kernels, name)) for name in KERNEL_NAMES}
        return Backend(backend.name, _TracedModule(self, backend.xp), _Namespace(kernels), backend.note)


def record(fn, backend):
    """Run ``fn()`` once on ``backend`` (a NumPy-array one), recording it; returns the ``Recording``."""
    recording = Recording()
    with using_backend(recording.backend(backend)):
        fn()
    recording.calls = _simplified(recording.calls)
    return recording


def _compute_into(outputs, function, args, kwargs):
    """``function(*args, **kwargs)`` again (a function without ``out=``), its arrays copied into ``outputs``."""
    for output, result in zip(outputs, _flat(_as_arrays(function(*args, **kwargs)))):
        if output is not None:
            np.copyto(output, result)


# ----- Fewer calls, the same results -----

def _simplified(calls):
    """``calls`` with copies folded into kernels, constants made once and unread results dropped."""
    return _unread_dropped(_constants_dropped(_copies_folded(calls)))


def _copies_folded(calls):
    """Each ``copyto(dst, src)`` of a kernel's result ``src`` dropped, the kernel writing into ``dst`` instead:
    where no other call reads src, none between the two touches dst, and dst has src's shape and dtype and is
    C-contiguous (what a kernel's ``out=`` takes)."""
    calls = list(calls)
    for i in reversed(range(len(calls))):
        copy = calls[i]
        if copy.function is not np.copyto or len(copy.args) != 2:
            continue
        dst, src = copy.args
        j = next((j for j in range(i) if calls[j].kind == KERNEL and any(w is src for w in calls[j].writes)), None)
        if j is None or dst.shape != src.shape or dst.dtype != src.dtype or not dst.flags.c_contiguous:
            continue
        if any(call.reads(src) for k, call in enumerate(calls) if k not in (i, j)) or \
                any(call.reads(dst) for call in calls[j + 1:i]):
            continue
        kernel = calls[j]
        out = kernel.kwargs["out"]
        out = tuple(dst if o is src else o for o in out) if isinstance(out, tuple) else dst
        calls[j] = Call(kernel.function, kernel.args, {**kernel.kwargs, "out": out},
                        [dst if w is src else w for w in kernel.writes], KERNEL)
        del calls[i]
    return calls


def _constants_dropped(calls):
    """Calls computing a constant (``ones_like`` and the like, a number as an array) that no later call writes
    into kept as their first result only: not called again."""
    def constant(call):
        function, args, kwargs = (call.args[1], call.args[2], call.args[3]) if call.function is _compute_into \
            else (call.function, call.args, call.kwargs)
        return function in CONSTANT_MAKERS or function in NUMBERS_AS_ARRAYS and not _arrays(args) + _arrays(kwargs)
    return [call for i, call in enumerate(calls)
            if not (call.kind == COMPUTE and constant(call)
                    and not any(later.makes(w) for later in calls[i + 1:] for w in call.writes))]


def _unread_dropped(calls):
    """Computations whose results no other call reads dropped, until none is left (their results are the
    recording's own: ``fn`` returned them or let them go)."""
    while True:
        unread = [call for call in calls if call.kind == COMPUTE and
                  not any(other is not call and other.reads(w) for other in calls for w in call.writes)]
        if not unread:
            return calls
        calls = [call for call in calls if not any(call is u for u in unread)]


# ----- Traced arrays: NumPy operations on them are recorded -----

class Traced(NDArrayOperatorsMixin):
    """An array whose operations run at once and are recorded; reading its values on the host is refused."""

    __slots__ = ("array", "recording")

    def __init__(self, array, recording):
        self.array, self.recording = array, recording

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    ndim = property(lambda self: self.array.ndim)
    size = property(lambda self: self.array.size)
    T = property(lambda self: self.transpose())

    def __len__(self):
        return len(self.array)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return self.recording.call(ufunc if method == "__call__" else getattr(ufunc, method), inputs, kwargs)

    def __getitem__(self, index):
        return self.recording.call(operator.getitem, (self, index), {})

    def __setitem__(self, index, value):
        self.recording.call(operator.setitem, (self, index, value), {})

    def __array__(self, *args, **kwargs):
        raise NotReplayable("a recorded step turned a traced array into a NumPy array (np.asarray, or an "
                            "assignment into an untraced array; use xp.copyto, which the recording sees); "
                            "train eagerly with --no-cuda-graph")

    def _read_on_host(self, *args):
        raise NotReplayable("a recorded step read an array's value on the host (float, item, if), which a "
                            "replay would not read again; train eagerly with --no-cuda-graph")

    __float__ = __int__ = __bool__ = __index__ = item = tolist = _read_on_host


def _method(name):
    """``Traced.name``: ndarray's method of that name, recorded."""
    def method(self, *args, **kwargs):
        return self.recording.call(getattr(np.ndarray, name), (self, *args), kwargs)
    method.__name__ = name
    return method


for _name in ("sum", "max", "min", "reshape", "transpose", "squeeze", "ravel", "astype", "copy", "fill"):
    setattr(Traced, _name, _method(_name))


class _TracedModule:
    """The array module while recording: each of its functions (ufuncs too) a recorded call."""

    def __init__(self, recording, xp):
        self._recording, self._xp = recording, xp

    def __getattr__(self, name):
        value = getattr(self._xp, name)
        if isinstance(value, np.ufunc):
            return _TracedUfunc(self._recording, value)
        if isinstance(value, types.ModuleType):  # xp.linalg, xp.random
            return _TracedModule(self._recording, value)
        if callable(value) and not isinstance(value, type):
            return _Recorded(self._recording, value)
        return value  # dtypes, constants


class _Recorded:
    """A function whose every call is recorded."""

    def __init__(self, recording, function):
        self.recording, self.function = recording, function

    def __call__(self, *args, **kwargs):
        return self.recording.call(self.function, args, kwargs)


class _TracedUfunc(_Recorded):
    """A ufunc whose calls, and ``reduce``, ``at`` ... calls, are recorded."""

    def __getattr__(self, method):
        return _Recorded(self.recording, getattr(self.function, method))


class _RecordedKernel(_Recorded):
    def __call__(self, *args, **kwargs):
        return self.recording.call_kernel(self.function, args, kwargs)


class _Namespace:
    def __init__(self, members):
        self.__dict__.update(members)


# ----- Arguments and results -----

def _host(value):
    """``value`` with every Traced array (also inside tuples, lists and dicts) replaced by the array behind it."""
    if isinstance(value, Traced):
        return value.array
    if isinstance(value, (tuple, list)):
        return type(value)(_host(v) for v in value)
    if isinstance(value, dict):
        return {key: _host(v) for key, v in value.items()}
    return value


def _arrays(value):
    """The NumPy arrays in ``value`` (arguments: tuples, lists, dicts)."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays(v)]
    if isinstance(value, dict):
        return _arrays(list(value.values()))
    return []


def _as_arrays(result):
    """A NumPy scalar result as a 0-d array (a buffer the replay can write), tuples and lists element by element."""
    if isinstance(result, (tuple, list)):
        return type(result)(_as_arrays(r) for r in result)
    return np.asarray(result) if isinstance(result, np.generic) else result


def _flat(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _takes_out(function):
    """Whether ``function`` writes its result into ``out=`` (ufuncs, their reductions, sum, stack ...)."""
    return isinstance(function, np.ufunc) or isinstance(getattr(function, "__self__", None), np.ufunc) \
        or function in TAKES_OUT
