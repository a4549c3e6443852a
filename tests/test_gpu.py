"""GPU backends: CuPy on the device, its kernels and the Numba CUDA ones against the reference.

Tests marked ``gpu`` need a CUDA device with CuPy; where there is none they
are skipped with the registry's own one-line reason, and they run for real
wherever there is one. The registry tests at the end run everywhere.
"""
import re

import numpy as np
import pytest

from end_to_end import check_exact_resume, check_user_path
from kernel_cases import (CASES, LAYOUTS, PHILOX_TOLERANCE, assert_adam_reads_step_and_lr_from_arrays,
                          assert_matches_reference, assert_rng_state_round_trips, needs_gpu)
from minivae import backend
from minivae.app import static_step
from minivae.backend import BackendUnavailable, available_backends, load_backend
from minivae.kernels import philox
from runs import skip_figures

RNG_KERNELS = ("make_rng", "standard_normal")  # other streams than NumPy's: checked statistically
TABLE = [name for name in CASES if name not in RNG_KERNELS]


def numba_cuda_on_device():
    """The numba-cuda kernel set, skipping the test if it would not run on the real device."""
    loaded = load_backend("numba-cuda")
    if loaded.note:
        pytest.skip(loaded.note)
    return loaded.kernels


def to_device(layout):
    """Copy host arrays to CuPy arrays laid out as ``layout`` (strided: every other element)."""
    import cupy

    def copy(a):
        if layout != "strided":
            return cupy.asarray(a)
        view = cupy.full(2 * a.size, cupy.nan, a.dtype)[::2].reshape(a.shape)
        view[...] = cupy.asarray(np.ascontiguousarray(a))
        return view
    return copy


def count_replays(monkeypatch):
    """A list given one entry each time a captured training step is replayed. A real ``cupy.cuda.Graph``'s
    ``launch`` cannot be patched (an extension type), so each captured graph is handed back wrapped."""
    launches, capture = [], static_step.StaticStep._capture

    class CountedGraph:
        def __init__(self, graph):
            self.graph = graph

        def launch(self):
            launches.append(self.graph.launch())

    monkeypatch.setattr(static_step.StaticStep, "_capture", lambda step: CountedGraph(capture(step)))
    return launches


def assert_moments_normal(eps):
    """Mean 0 and variance 1 within 4 standard errors."""
    n = eps.size
    assert abs(float(eps.mean())) < 4 / np.sqrt(n)
    assert abs(float(eps.var()) - 1) < 4 * np.sqrt(2 / (n - 1))


# ----- CuPy -----

@needs_gpu
def test_cupy_backend_allocates_on_the_device():
    import cupy
    gpu = load_backend("cupy")
    a = gpu.xp.arange(6, dtype=np.float32).reshape(2, 3)
    assert isinstance(a, cupy.ndarray) and a.device.id >= 0
    np.testing.assert_array_equal(gpu.asnumpy(a * 2), np.arange(6, dtype=np.float32).reshape(2, 3) * 2)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS[:2])
@pytest.mark.parametrize("name", TABLE)
def test_cupy_kernel_matches_reference(name, layout, dtype):
    import cupy
    kernels = load_backend("cupy").kernels
    assert_matches_reference(kernels, name, dtype, layout, to_device(layout), cupy.asnumpy)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_standard_normal_is_seeded_and_normal(dtype):
    kernels = load_backend("cupy").kernels
    eps = kernels.standard_normal(kernels.make_rng(3), (256, 100), dtype)
    again = kernels.standard_normal(kernels.make_rng(3), (256, 100), dtype)
    assert eps.dtype == dtype and eps.shape == (256, 100)
    assert bool((eps == again).all())
    assert_moments_normal(eps)


@needs_gpu
def test_cupy_rng_state_round_trips_through_the_host():
    import cupy
    assert_rng_state_round_trips(load_backend("cupy").kernels, cupy.asnumpy)


@needs_gpu
def test_cupy_adam_reads_step_and_lr_from_device_arrays():
    import cupy
    assert_adam_reads_step_and_lr_from_arrays(load_backend("cupy").kernels, cupy.asarray, cupy.asnumpy)


@needs_gpu
def test_cupy_standard_normal_refuses_a_numpy_generator():
    with pytest.raises(TypeError, match="DeviceRNG, got Generator"):
        load_backend("cupy").kernels.standard_normal(np.random.default_rng(0), (2, 2))


@needs_gpu
@pytest.mark.parametrize("backend_name", ["cupy", "numba-cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_philox_draws_match_the_statement_and_advance_the_counter_on_the_device(backend_name, dtype):
    import cupy
    kernels = load_backend("cupy").kernels if backend_name == "cupy" else numba_cuda_on_device()
    rng = kernels.make_rng(2**33 + 9)
    rng.words[2] = 2**32 - 2  # the draw's counters carry into the next word
    for n in (1, 3, 5, 2561):
        before = cupy.asnumpy(rng.words)
        got = cupy.asnumpy(kernels.standard_normal(rng, (n,), dtype))
        want, after = philox.standard_normal(before, n, dtype)
        np.testing.assert_allclose(got, want, **PHILOX_TOLERANCE[dtype])
        np.testing.assert_array_equal(cupy.asnumpy(rng.words), after)


@needs_gpu
def test_a_cuda_graph_replaying_a_draw_draws_new_numbers():
    """The counter is read and advanced by the draw's kernels: each replay of the recorded launches moves it on."""
    import cupy
    kernels = load_backend("cupy").kernels
    rng, pool, stream = kernels.make_rng(11), cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
    with stream, cupy.cuda.using_allocator(pool.malloc):
        kernels.standard_normal(rng, (5,), np.float32)  # compiles the kernels, fills the pool; counter 2
        stream.begin_capture()
        out = kernels.standard_normal(rng, (5,), np.float32)  # recorded, not run
        graph = stream.end_capture()
        replays = []
        for _ in range(2):
            graph.launch(stream)
            replays.append(cupy.asnumpy(out))
    stream.synchronize()
    start = philox.counters_at([0, 0, 0, 0], [2])[0]
    want, _ = philox.standard_normal(np.array([11, 0, *start], np.uint32), 16, np.float32)
    np.testing.assert_allclose(np.concatenate(replays), np.concatenate([want[:5], want[8:13]]),
                               **PHILOX_TOLERANCE[np.float32])
    assert cupy.asnumpy(rng.words)[2] == 6


@needs_gpu
def test_a_cuda_graph_captures_a_cublas_product_and_replays_it_on_new_data():
    """cuBLAS through nvmath's bindings inside a capture: the stream's handle is made (and its workspace set) by an
    eager product first, as the static step's warm-up does; each replay reads the operands' current values."""
    import cupy
    kernels = load_backend("cupy").kernels
    a = cupy.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    pool, stream = cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
    with stream, cupy.cuda.using_allocator(pool.malloc):
        kernels.matmul(a, a, trans_b=True)
        stream.begin_capture()
        out = kernels.matmul(a, a, trans_b=True)  # recorded, not run
        graph = stream.end_capture()
        a += 1
        graph.launch(stream)
    stream.synchronize()
    want = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(cupy.asnumpy(out), want @ want.T)


@needs_gpu
@pytest.mark.parametrize("schedule", ["elbo", "iwae"])
def test_train_with_cuda_graph_resumes_bit_identically(schedule, tmp_path, capsys, monkeypatch):
    """Two full batches an epoch: the first step is captured, the rest replay the graph."""
    skip_figures(monkeypatch)
    launches = count_replays(monkeypatch)
    check_exact_resume("cupy", tmp_path, capsys, "--cuda-graph", "--train-examples", "16",
                       "--objective", schedule, "--samples", "2", "--kl-warmup", "2")
    assert len(launches) == 3 + 1 + 1  # replays after each capture: 2 epochs straight, 1 epoch, the resumed epoch


# ----- Numba CUDA on the device, fed CuPy arrays through __cuda_array_interface__ -----

@needs_gpu
def test_cupy_and_numba_share_device_memory():
    import cupy
    from numba import cuda
    c = cupy.arange(8, dtype=np.float32)
    d = cuda.as_cuda_array(c)  # zero-copy view through __cuda_array_interface__
    assert d.__cuda_array_interface__["data"][0] == c.data.ptr
    d[1:2].copy_to_device(np.array([42.0], np.float32))
    assert float(c[1]) == 42.0
    assert cupy.asarray(d).data.ptr == c.data.ptr  # and back, still zero-copy


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS[:2])
@pytest.mark.parametrize("name", TABLE)
def test_numba_cuda_kernel_on_cupy_arrays_matches_reference(name, layout, dtype):
    import cupy
    kernels = numba_cuda_on_device()
    assert_matches_reference(kernels, name, dtype, layout, to_device(layout), cupy.asnumpy)


@needs_gpu
def test_numba_cuda_results_are_cupy_arrays():
    import cupy
    kernels = numba_cuda_on_device()
    a = cupy.ones((33, 17), np.float32)
    out = kernels.matmul(a, a, trans_b=True)
    assert isinstance(out, cupy.ndarray) and out.shape == (33, 33)
    assert float(out[0, 0]) == 17.0


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_cuda_standard_normal_is_seeded_and_normal(dtype):
    kernels = numba_cuda_on_device()
    eps = kernels.standard_normal(kernels.make_rng(3), (256, 100), dtype)
    again = kernels.standard_normal(kernels.make_rng(3), (256, 100), dtype)
    assert eps.dtype == dtype and eps.shape == (256, 100)
    assert bool((eps == again).all())
    assert_moments_normal(eps)


@needs_gpu
def test_numba_cuda_rng_state_round_trips_through_the_host():
    import cupy
    assert_rng_state_round_trips(numba_cuda_on_device(), cupy.asnumpy)


@needs_gpu
def test_numba_cuda_adam_reads_step_and_lr_from_device_arrays():
    import cupy
    assert_adam_reads_step_and_lr_from_arrays(numba_cuda_on_device(), cupy.asarray, cupy.asnumpy)


# ----- The user's commands end to end (the simulator runs the numba-cuda one in CI) -----

@needs_gpu
@pytest.mark.parametrize("name", ["cupy", "numba-cuda"])
def test_train_resume_evaluate_sample_reconstruct(name, tmp_path, capsys, monkeypatch):
    check_user_path(name, tmp_path, capsys, monkeypatch)


# ----- The registry says why a backend cannot run (no GPU needed) -----

def test_cpu_backends_are_always_available():
    reasons = available_backends()
    assert set(reasons) == set(backend.BACKEND_NAMES)
    assert reasons["numpy"] is None and reasons["numba"] is None


def test_an_unavailable_backend_raises_its_one_line_reason():
    for name, reason in available_backends().items():
        if reason is not None:
            assert "\n" not in reason and reason.startswith(name + ":")
            with pytest.raises(BackendUnavailable, match=re.escape(reason)):
                load_backend(name)


def test_an_unknown_backend_lists_the_choices():
    with pytest.raises(BackendUnavailable, match="choose one of numpy, numba, cupy, numba-cuda"):
        load_backend("tpu")
