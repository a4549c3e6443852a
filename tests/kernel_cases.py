"""Inputs for every kernel of ``KERNEL_NAMES`` and the check against the NumPy reference; Philox's answers.

Shared by ``test_kernels.py`` (CPU kernel sets), ``test_gpu.py`` and ``cudasim/test_numba_cuda.py``,
with ``needs_gpu``, the mark of every test that needs a CUDA device.
A case builds its inputs from an ``Arrays`` factory; building them twice with
the same seed gives the same values, once contiguous for the reference and once
in the layout under test for the kernel set.
"""
import functools
import json

import numpy as np
import pytest

from minivae.backend import available_backends
from minivae.kernels import reference
from minivae.kernels.reference import ACTIVATIONS

LAYOUTS = ("contiguous", "strided", "transposed")
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 2e-6}, np.float64: {"rtol": 1e-11, "atol": 1e-12}}
# The GPU generator's normals against kernels/philox.py: their log, cos and sin round unlike NumPy's.
PHILOX_TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 2e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
# Random123 1.14, tests/kat_vectors (D. E. Shaw Research): philox4x32 10, counter (4 words), key (2), output (4).
PHILOX_KNOWN_ANSWERS = (
    ([0x00000000, 0x00000000, 0x00000000, 0x00000000], [0x00000000, 0x00000000],
     [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff],
     [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
)
B, D, K = 7, 13, 3  # batch, features, samples: odd on purpose


@functools.cache
def gpu_missing():
    """None when CuPy runs on a CUDA device here, else why not (probed once)."""
    return available_backends()["cupy"]


def needs_gpu(test):
    """Mark ``gpu``; skip with the registry's reason where CuPy has no device."""
    reason = gpu_missing()
    return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=str(reason))(test))


class Arrays:
    """Seeded random arrays (never zero) laid out as asked, inside NaN-filled parents.

    contiguous: a C-contiguous slice with a NaN guard element on each side;
    strided: every other element of the parent; transposed: Fortran order.
    ``assert_guards_intact`` then checks no kernel wrote outside its arrays.
    """

    def __init__(self, dtype, layout, seed=0):
        self.dtype, self.layout = dtype, layout
        self.rng = np.random.default_rng(seed)
        self.parents = []

    def __call__(self, shape, low=-2.0, high=2.0):
        values = self.rng.uniform(low, high, shape).astype(self.dtype)
        parent = np.full(2 * values.size + 2, np.nan, self.dtype)
        inside = np.zeros(parent.shape, bool)
        view = self._place(parent, values.shape)
        view[...] = values
        self._place(inside, values.shape)[...] = True
        self.parents.append((parent, inside))
        return view

    def scalar(self, value):
        """``value`` as a 0-d array of the dtype (not placed in a parent: it is only read)."""
        return np.asarray(value, self.dtype)

    def _place(self, parent, shape):
        n = int(np.prod(shape))
        if self.layout == "strided":
            return parent[1:2 * n + 1:2].reshape(shape)
        if self.layout == "transposed":
            return parent[1:n + 1].reshape(shape[::-1]).T
        return parent[1:n + 1].reshape(shape)

    def assert_guards_intact(self):
        for parent, inside in self.parents:
            assert np.isnan(parent[~inside]).all(), "a kernel wrote outside its array"


# ----- One generator of calls per kernel: yields (args, kwargs) -----

def case_matmul(arr, kernels):
    for trans_a in (False, True):
        for trans_b in (False, True):
            a = arr((9, 5) if trans_a else (5, 9))
            b = arr((11, 9) if trans_b else (9, 11))
            yield (a, b, trans_a, trans_b), {}


def case_bias_act(arr, kernels):
    for act in ACTIVATIONS:
        yield (arr((K, B, D)), arr((D,)), act), {}


def case_bias_act_backward(arr, kernels):
    for act in ACTIVATIONS:
        yield (arr((B, D)), arr((B, D), -1.0, 1.0), act), {}


def case_make_rng(arr, kernels):
    yield (1234,), {}


def case_standard_normal(arr, kernels):
    yield (kernels.make_rng(5), (B, D), arr.dtype), {}


def case_reparameterize(arr, kernels):
    yield (arr((B, D)), arr((B, D)), arr((K, B, D))), {}


def case_reparameterize_backward(arr, kernels):
    yield (arr((K, B, D)), arr((B, D)), arr((K, B, D))), {}


def case_kl_normal(arr, kernels):
    yield (arr((B, D)), arr((B, D))), {}


def case_kl_normal_backward(arr, kernels):
    yield (arr((B,)), arr((B, D)), arr((B, D))), {}


def case_bernoulli_log_prob(arr, kernels):
    yield (arr((B, D), 0.0, 1.0), arr((B, D), -6.0, 6.0)), {}
    yield (arr((B, D), 0.0, 1.0), arr((K, B, D), -6.0, 6.0)), {}


def case_bernoulli_log_prob_backward(arr, kernels):
    yield (arr((K, B)), arr((B, D), 0.0, 1.0), arr((K, B, D), -6.0, 6.0)), {}


def case_gaussian_log_prob(arr, kernels):
    yield (arr((B, D)), arr((K, B, D)), 0.7), {}


def case_gaussian_log_prob_backward(arr, kernels):
    yield (arr((K, B)), arr((B, D)), arr((K, B, D)), 0.7), {}


def case_logsumexp(arr, kernels):
    yield (arr((K, B, D), -30.0, 30.0),), {}
    yield (arr((B, K, D), -30.0, 30.0),), {"axis": 1}


def case_adam_step(arr, kernels):
    """Step count and learning rate as numbers, then as 0-d arrays (which a device kernel reads where they live),
    then one of each."""
    n = B * D
    for weight_decay, step, lr in ((0.0, 3, 0.01), (0.01, 3, 0.01), (0.01, arr.scalar(3), arr.scalar(0.01)),
                                   (0.01, 3, arr.scalar(0.01)), (0.01, arr.scalar(3), 0.01)):
        p, g, m, v = arr((n,)), arr((n,)), arr((n,), -0.1, 0.1), arr((n,), 0.01, 0.1)
        yield (p, g, m, v, step, lr), {"weight_decay": weight_decay}


def case_sgd_step(arr, kernels):
    n = B * D
    for momentum, weight_decay in ((0.0, 0.0), (0.9, 0.01)):
        yield (arr((n,)), arr((n,)), arr((n,)), 0.1), {"momentum": momentum, "weight_decay": weight_decay}


STATE_KERNELS = ("rng_state", "restore_rng")  # checked by a round trip (below), not against the reference
CASES = {name: globals()["case_" + name] for name in reference.KERNEL_NAMES if name not in STATE_KERNELS}


# ----- The check -----

def assert_matches_reference(kernels, name, dtype, layout, to_device=None, to_host=np.asarray):
    """Run kernel ``name`` of ``kernels`` and of the reference on the same inputs; compare everything.

    Compared: the outputs (values, dtype, shape) and every array argument after
    the call, which catches in-place updates that skip an element and kernels
    that write into their inputs; and, for host arrays, that nothing outside
    them was written. ``to_device(view)`` moves each input to a device first.
    """
    want_arr, got_arr = Arrays(dtype, "contiguous"), Arrays(dtype, layout)
    calls = zip(CASES[name](want_arr, reference), CASES[name](got_arr, kernels))
    for (want_args, kwargs), (got_args, _) in calls:
        if to_device is not None:
            got_args = [to_device(a) if isinstance(a, np.ndarray) else a for a in got_args]
        want = getattr(reference, name)(*want_args, **kwargs)
        got = getattr(kernels, name)(*got_args, **kwargs)
        if name == "make_rng":
            want = reference.standard_normal(want, (B, D), dtype)
            got = kernels.standard_normal(got, (B, D), dtype)
        _assert_close(got, want, dtype, name, to_host)
        for got_arg, want_arg in zip(got_args, want_args):
            if isinstance(want_arg, np.ndarray):
                _assert_close(got_arg, want_arg, dtype, name + " (argument after the call)", to_host)
    got_arr.assert_guards_intact()


def _assert_close(got, want, dtype, what, to_host):
    if want is None:
        assert got is None, f"{what}: returned {got!r}, reference returns None"
        return
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), what
        for g, w in zip(got, want):
            _assert_close(g, w, dtype, what, to_host)
        return
    got = to_host(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    assert got.dtype == want.dtype == dtype, f"{what}: dtype {got.dtype}, reference {want.dtype}"
    np.testing.assert_allclose(got, want, err_msg=what, **TOLERANCE[dtype])


# ----- Adam's step count and learning rate read from memory -----

def assert_adam_reads_step_and_lr_from_arrays(kernels, to_device=np.asarray, to_host=np.asarray):
    """adam_step with t and lr as float64 0-d arrays of the backend (a static training step keeps them on the
    device) moves p, m and v as it does with the same numbers."""
    results = []
    for step, lr in ((3, 0.01), (to_device(np.asarray(3.0)), to_device(np.asarray(0.01)))):
        arr, n = Arrays(np.float32, "contiguous"), B * D
        buffers = [to_device(a) for a in (arr((n,)), arr((n,)), arr((n,), -0.1, 0.1), arr((n,), 0.01, 0.1))]
        kernels.adam_step(*buffers, step, lr, weight_decay=0.01)
        results.append([to_host(buffer) for buffer in buffers])
    for name, got, want in zip("pgmv", *results):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=name)


# ----- The generator's state, through a checkpoint and back -----

def assert_rng_state_round_trips(kernels, to_host=np.asarray):
    """A generator restored from ``rng_state``, after the trip a checkpoint makes, draws what the original draws next.

    Also: the restored stream is not the fresh one (the state saved is the advanced one).
    """
    rng = kernels.make_rng(7)
    first = to_host(kernels.standard_normal(rng, (B, D), np.float32))
    state = _through_a_checkpoint(kernels.rng_state(rng))
    expected = to_host(kernels.standard_normal(rng, (B, D), np.float32))
    got = to_host(kernels.standard_normal(kernels.restore_rng(state), (B, D), np.float32))
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, first)


def _through_a_checkpoint(state):
    """``state`` after the trip a checkpoint makes: through JSON, in its metadata (an array would not go)."""
    return json.loads(json.dumps(state))
