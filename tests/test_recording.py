"""A recorded function replayed on the same buffers computes what running it again computes, bit for bit."""
import numpy as np
import pytest

from minivae import ops, set_backend
from minivae.app.recording import NotReplayable, record
from minivae.backend import get_backend
from minivae.tensor import Tensor


@pytest.fixture
def numba_backend():
    backend = set_backend("numba")
    yield backend
    set_backend("numpy")


def layer_and_gradient(x, weight, bias, sums, grad):
    """A small function of arrays from outside: a layer, a loss, its backward, the results written back."""
    w = Tensor(weight, requires_grad=True)
    w.grad = grad
    w.zero_grad()
    y = ops.bias_act(Tensor(x) @ w, Tensor(bias), "tanh")
    loss = -(y * y).sum(axis=1).mean()
    loss.backward()
    xp = get_backend().xp
    sums += xp.stack([loss.data, y.data.sum(dtype=np.float64)])


def buffers(seed):
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal((6, 5), dtype=np.float32), weight=rng.standard_normal((5, 4), dtype=np.float32),
                bias=rng.standard_normal(4, dtype=np.float32), sums=np.zeros(2), grad=np.zeros((5, 4), np.float32))


def test_a_replay_computes_what_a_rerun_computes_from_the_new_inputs(numba_backend):
    recorded, rerun = buffers(0), buffers(0)
    recording = record(lambda: layer_and_gradient(**recorded), numba_backend)
    layer_and_gradient(**rerun)
    for seed in (1, 2):  # new values in the same arrays
        for arrays in (recorded, rerun):
            for name in ("x", "weight", "bias"):
                arrays[name][...] = buffers(seed)[name]
        recording.launch()
        layer_and_gradient(**rerun)
        for name, array in rerun.items():
            np.testing.assert_array_equal(recorded[name], array, err_msg=name)


def test_a_kernel_result_copied_out_is_written_there_by_the_kernel_itself(numba_backend):
    """The weight's gradient: the product writes into the array from outside; no copy is replayed."""
    arrays = buffers(0)
    recording = record(lambda: layer_and_gradient(**arrays), numba_backend)
    products = [call for call in recording.calls if call.function is numba_backend.kernels.matmul]
    assert any(call.kwargs["out"] is arrays["grad"] for call in products)
    assert not any(call.function is np.copyto for call in recording.calls)


def test_constants_and_results_nothing_reads_are_not_replayed(numba_backend):
    """Backward seeds the loss with ones_like(loss), a constant; the loss's own value is read by nothing."""
    def loss_of(x, out):
        loss = (Tensor(x, requires_grad=True) * 3.0).sum()
        loss.backward()
        out += loss.data  # read: kept
        _ = loss.data * 2  # read by nothing: dropped
    x, out = np.ones(3, np.float32), np.zeros((), np.float32)
    recording = record(lambda: loss_of(x, out), numba_backend)
    names = [getattr(call.function, "__name__", "") for call in recording.calls]
    assert "ones_like" not in names and names.count("multiply") == 1  # x * 3; not loss * 2
    x[...] = 2
    recording.launch()
    assert out == 9 + 18


@pytest.mark.parametrize("read", [float, bool, np.asarray, lambda a: a.item()],
                         ids=["float", "bool", "asarray", "item"])
def test_reading_a_value_on_the_host_while_recording_is_refused(numba_backend, read):
    def reads(x):
        read(Tensor(x).sum().data)
    with pytest.raises(NotReplayable, match="a recorded step"):
        record(lambda: reads(np.ones(3, np.float32)), numba_backend)


def test_writing_into_an_untraced_array_without_copyto_is_refused(numba_backend):
    def writes(x, out):
        out[...] = (Tensor(x) * 2).data
    with pytest.raises(NotReplayable, match="use xp.copyto"):
        record(lambda: writes(np.ones(3, np.float32), np.zeros(3, np.float32)), numba_backend)


def test_a_draw_through_the_array_module_is_drawn_again_at_each_replay(numba_backend):
    """No array goes in, yet it is no constant: only functions known to make constants are made once."""
    out = np.zeros(3)
    recording = record(lambda: get_backend().xp.copyto(out, get_backend().xp.random.standard_normal(3)),
                       numba_backend)
    first = out.copy()
    recording.launch()
    assert not np.array_equal(out, first)
