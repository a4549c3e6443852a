"""The cupy backend on the CPU, through ``fake_cupy``: what a real GPU's capture would refuse fails here first.

Three layers: the guard's own rules (each refused call raises, naming
itself, only while a stream captures); the cupy kernel set's host code
against the NumPy reference; and the captured training step, which must
replay to the parameters, Adam moments and sums of eager steps, for the ELBO
and for IWAE with a KL warm-up and a learning-rate drop (numbers that change
between replays).
"""
import numpy as np
import pytest

import fake_cupy
import fake_nvmath
from end_to_end import SMALL, check_exact_resume, check_user_path
from kernel_cases import CASES, LAYOUTS, assert_matches_reference, assert_rng_state_round_trips
from minivae import backend
from minivae.app.run_checkpoint import CHECKPOINT_NAME
from runs import assert_one_line_error, run_cli, skip_figures
from step_cases import SCHEDULES, assert_same_steps, eager_steps, static_steps


TABLE = [name for name in CASES if name not in ("make_rng", "standard_normal")]  # other streams than NumPy's


@pytest.fixture
def cupy(monkeypatch):
    """The fake CuPy as ``cupy`` and the fake cuBLAS bindings as ``nvmath``, the cupy backend active; numpy again
    afterwards."""
    fake = fake_cupy.install(monkeypatch)
    fake_nvmath.install(monkeypatch)
    backend.set_backend("cupy")
    yield fake
    backend.set_backend("numpy")


# ----- What a test on the fake leaves behind -----

def test_a_test_on_the_fake_leaves_no_kernel_or_cublas_handle_behind():
    """What a test compiles and binds on the fake device is dropped at its teardown: a test after it on a real
    GPU (tests/test_gpu.py) builds its own kernels and cuBLAS handles."""
    from minivae.kernels import cupy_gemm, cupy_kernels
    kernels, handles = cupy_kernels._kernels, cupy_gemm._handles
    before = kernels.cache_info().currsize, set(handles)
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake = fake_cupy.install(monkeypatch)
        fake_nvmath.install(monkeypatch)
        a = fake.ones((2, 2), np.float32)
        cupy_kernels.matmul(cupy_kernels.bias_act(a, a[0], "relu"), a)
        cupy_kernels.standard_normal(cupy_kernels.make_rng(0), (2, 2))
        assert cupy_kernels._kernels.cache_info().currsize == len(cupy_gemm._handles) == 1
    assert cupy_kernels._kernels is kernels and cupy_gemm._handles is handles
    assert (kernels.cache_info().currsize, set(handles)) == before


# ----- The guard's rules -----

def capturing(cupy, work, stream=None):
    """Run ``work`` while ``stream`` (a new one by default) captures, allocating from a private pool; the graph."""
    stream, pool = stream or cupy.cuda.Stream(), cupy.cuda.MemoryPool()
    with stream, cupy.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        try:
            work()
        finally:
            graph = stream.end_capture()
    return graph


REFUSED = {
    "a cuBLAS product": (lambda cp, a: cp.matmul(a, a), "cupy.matmul"),
    "the @ operator": (lambda cp, a: a @ a, "matmul"),
    "a host-to-device copy": (lambda cp, a: cp.asarray(np.zeros(3)), "asarray of a host ndarray"),
    "setting from host memory": (lambda cp, a: a.__setitem__(0, np.ones(3)), "from a host array"),
    "a device-to-host copy": (lambda cp, a: cp.asnumpy(a), r"ndarray.get\(\)"),
    "item()": (lambda cp, a: a[0, 0].item(), r"item\(\)"),
    "float()": (lambda cp, a: float(a.sum()), r"float\(device array\)"),
    "bool()": (lambda cp, a: bool(a.all()), r"bool\(device array\)"),
    "a stream sync": (lambda cp, a: cp.cuda.get_current_stream().synchronize(), "synchronize"),
    "an event query": (lambda cp, a: cp.cuda.Event().query(), "query"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_the_guard_refuses_while_capturing_and_allows_before(cupy, name):
    call, message = REFUSED[name]
    a = cupy.ones((3, 3), np.float32)
    cupy.exp(a), a.sum(), a.all(), a[0, 0]  # compiled before the capture, as a warm-up step does
    call(cupy, a)  # outside a capture: allowed
    with pytest.raises(fake_cupy.CaptureViolation, match=message):
        capturing(cupy, lambda: call(cupy, a))


def test_the_guard_refuses_a_kernel_compiled_first_in_a_capture(cupy):
    a = cupy.ones(4, np.float32)
    cupy.exp(a)
    capturing(cupy, lambda: cupy.exp(a))  # compiled for float32 before: allowed
    with pytest.raises(fake_cupy.CaptureViolation, match=r"compiling exp for \(\('<f8',\),\)"):
        capturing(cupy, lambda: cupy.exp(cupy.ones(4, np.float64)))


def test_the_guard_refuses_allocations_outside_a_private_pool(cupy):
    a = cupy.ones(4, np.float32)
    a * 2
    stream = cupy.cuda.Stream()
    with stream:
        stream.begin_capture()
        with pytest.raises(fake_cupy.CaptureViolation, match="default pool"):
            a * 2
        stream.end_capture()


def test_a_capture_records_and_runs_nothing_until_replayed(cupy):
    a = cupy.zeros(3, np.float32)
    step = cupy.ones(3, np.float32)
    a += step * 2
    a -= step  # a warm-up: every kernel compiled
    graph = capturing(cupy, lambda: a.__iadd__(step * 2))
    np.testing.assert_array_equal(cupy.asnumpy(a), [1, 1, 1])
    graph.launch()
    graph.launch()
    np.testing.assert_array_equal(cupy.asnumpy(a), [5, 5, 5])


def test_host_arrays_never_mix_into_device_operations(cupy):
    with pytest.raises(TypeError, match="host array"):
        cupy.ones(3, np.float32) + np.ones(3, np.float32)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(cupy.ones(3, np.float32))


# ----- The cupy kernel set's host code, against the reference -----

def to_device(cupy, layout):
    """Copy host arrays to the device laid out as ``layout``: C order, every other element (strided), or Fortran
    order (transposed: each matrix the transpose of a C-contiguous one, which cuBLAS reads without a copy)."""
    def copy(a):
        if layout == "transposed":
            return cupy.asarray(np.asarray(a, order="F"))
        if layout == "contiguous":
            return cupy.asarray(np.asarray(a, order="C"))
        view = cupy.full(2 * a.size, np.nan, a.dtype)[::2].reshape(a.shape)
        view[...] = cupy.asarray(np.asarray(a, order="C"))
        return view
    return copy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", TABLE)
def test_cupy_kernel_set_matches_reference(cupy, name, layout, dtype):
    kernels = backend.get_backend().kernels
    assert_matches_reference(kernels, name, dtype, layout, to_device(cupy, layout), cupy.asnumpy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arrays", [("step",), ("lr",), ("step", "lr")])
def test_adam_step_sizes_from_device_arrays_and_numbers_mixed(cupy, arrays, dtype):
    """[a_t, eps_t] as the kernels read them, with step, lr or both 0-d arrays of the array module (a number for
    step makes eps_t a host number even when lr lives on the device), on the fake device and in NumPy."""
    from minivae.kernels import shared
    numbers = {"step": 3, "lr": 0.01}
    want = shared.adam_step_sizes_array(np, dtype, *numbers.values(), 0.9, 0.999, 1e-8)
    for xp, to_host in ((cupy, cupy.asnumpy), (np, np.asarray)):
        step, lr = (xp.asarray(np.float64(value)) if name in arrays else value for name, value in numbers.items())
        got = to_host(shared.adam_step_sizes_array(xp, dtype, step, lr, 0.9, 0.999, 1e-8))
        assert got.dtype == dtype and got.shape == (2,)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_cupy_generator_state_round_trips(cupy):
    assert_rng_state_round_trips(backend.get_backend().kernels, cupy.asnumpy)


# ----- The captured training step, replayed -----

@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_the_captured_step_replays_to_the_eager_step(cupy, schedule):
    """Captured at the first step, replayed for the rest: the eager steps' parameters, Adam moments and sums."""
    assert_same_steps(static_steps(*schedule, capture=True), eager_steps(*schedule), scale_tolerance=1e-5)


# ----- Every command a user runs, on --backend cupy; training captured with --cuda-graph -----

def test_every_command_runs_on_the_cupy_backend(cupy, tmp_path, capsys, monkeypatch):
    check_user_path("cupy", tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("objective", [["--objective", "elbo"], ["--objective", "iwae", "--samples", "2",
                                                                  "--kl-warmup", "2"]], ids=["elbo", "iwae"])
def test_train_with_cuda_graph_replays_and_resumes_bit_identically(cupy, objective, tmp_path, capsys, monkeypatch):
    """Two full batches an epoch: the first step is captured, the rest replay the graph, under the guard."""
    skip_figures(monkeypatch)
    launch, launches = cupy.Graph.launch, []
    monkeypatch.setattr(cupy.Graph, "launch", lambda graph, stream=None: launches.append(launch(graph, stream)))
    check_exact_resume("cupy", tmp_path, capsys, "--cuda-graph", "--train-examples", "16", *objective)
    assert len(launches) == 3 + 1 + 1  # replays after each capture: 2 epochs straight, 1 epoch, the resumed epoch
    assert not cupy._state.violations


def cupy_matmul(a, b, trans_a=False, trans_b=False):
    """The product through CuPy's own cuBLAS wrapper, which a capture refuses."""
    import cupy
    return cupy.matmul(a.T if trans_a else a, b.T if trans_b else b)


def test_a_capture_that_fails_is_one_line_and_leaves_the_checkpoint(cupy, tmp_path, capsys, monkeypatch):
    skip_figures(monkeypatch)
    argv = ["train", "--backend", "cupy", *SMALL, "--out", str(tmp_path)]
    assert run_cli([*argv, "--epochs", "1"], capsys)[0] == 0
    checkpoint = tmp_path / CHECKPOINT_NAME
    saved = checkpoint.read_bytes()
    monkeypatch.setattr(backend.get_backend().kernels, "matmul", cupy_matmul)
    status, _, err = run_cli([*argv, "--epochs", "2", "--resume", str(checkpoint), "--cuda-graph"], capsys)
    assert_one_line_error(status, err, "could not be captured as a CUDA graph",
                          "CaptureViolation: cupy.matmul while a stream captures", "leave out --cuda-graph",
                          f"the checkpoint {checkpoint} (epoch 1) is intact")
    assert checkpoint.read_bytes() == saved


# ----- cuBLAS through nvmath's bindings, on the same device memory -----

def row_major_product(cublas, handle, a, b, out):
    """out = a @ b for C-contiguous row-major float32 arrays: column-major out^T = b^T a^T."""
    (m, k), n = a.shape, b.shape[1]
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    f32 = 0  # CUDA_R_32F
    cublas.gemm_ex(handle, cublas.Operation.N, cublas.Operation.N, n, m, k, one.ctypes.data, b.data.ptr, f32, n,
                   a.data.ptr, f32, k, zero.ctypes.data, out.data.ptr, f32, n, cublas.ComputeType.COMPUTE_32F,
                   cublas.GemmAlgo.DEFAULT)


@pytest.fixture
def cublas(cupy):
    return fake_nvmath


def test_the_cublas_stand_in_computes_column_major_products(cupy, cublas):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(12, dtype=np.float32).reshape(3, 4)
    out = cupy.empty((2, 4), np.float32)
    row_major_product(cublas, cublas.create(), cupy.asarray(a), cupy.asarray(b), out)
    np.testing.assert_array_equal(cupy.asnumpy(out), a @ b)


def test_a_cublas_handle_captures_only_bound_to_the_stream_with_a_workspace(cupy, cublas):
    a, out = cupy.ones((2, 2), np.float32), cupy.zeros((2, 2), np.float32)
    handle = cublas.create()
    stream, pool = cupy.cuda.Stream(), cupy.cuda.MemoryPool()
    with pytest.raises(fake_cupy.CaptureViolation, match="bound to stream None"):
        capturing(cupy, lambda: row_major_product(cublas, handle, a, a, out))
    cublas.set_stream(handle, stream.ptr)
    with pytest.raises(fake_cupy.CaptureViolation, match="without a workspace"):
        capturing(cupy, lambda: row_major_product(cublas, handle, a, a, out), stream)
    with cupy.cuda.using_allocator(pool.malloc):
        workspace = cupy.empty(1 << 10, np.uint8)
    cublas.set_workspace(handle, workspace.data.ptr, workspace.nbytes)
    cublas.set_stream(handle, stream.ptr)  # which resets the workspace, as cublasSetStream does
    with pytest.raises(fake_cupy.CaptureViolation, match="without a workspace"):
        capturing(cupy, lambda: row_major_product(cublas, handle, a, a, out), stream)
    cublas.set_workspace(handle, workspace.data.ptr, workspace.nbytes)
    graph = capturing(cupy, lambda: row_major_product(cublas, handle, a, a, out), stream)
    assert not cupy.asnumpy(out).any()  # recorded, not run
    graph.launch()
    np.testing.assert_array_equal(cupy.asnumpy(out), np.full((2, 2), 2, np.float32))


def test_the_cublas_stand_in_refuses_host_pointers(cupy, cublas):
    host = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="not inside a live device buffer"):
        cublas.gemm_ex(cublas.create(), 0, 0, 2, 2, 2, host.ctypes.data, host.ctypes.data, 0, 2, host.ctypes.data,
                       0, 2, host.ctypes.data, host.ctypes.data, 0, 2, cublas.ComputeType.COMPUTE_32F, -1)


def test_a_captured_draw_draws_new_numbers_at_each_replay(cupy):
    """The Philox counter lives on the device and the draw's kernels advance it, so replays continue the stream."""
    kernels = backend.get_backend().kernels
    rng, twin = kernels.make_rng(3), kernels.make_rng(3)
    kernels.standard_normal(rng, (4, 5))  # a warm-up draw: the kernels compiled, the stream moved on
    drawn = []
    graph = capturing(cupy, lambda: drawn.append(kernels.standard_normal(rng, (4, 5))))
    replays = []
    for _ in range(2):
        graph.launch()
        replays.append(cupy.asnumpy(drawn[0]).copy())
    expected = [cupy.asnumpy(kernels.standard_normal(twin, (4, 5))) for _ in range(3)][1:]
    np.testing.assert_array_equal(replays, expected)


# ----- The benchmark's GPU rows -----

def test_the_gpu_bench_rows_build_and_time_on_the_cupy_backend(cupy):
    """The cuBLAS floor and the captured step, built and timed as ``minivae bench`` does on a GPU."""
    from benchmarks import bench_step, gpu_step
    factories = {name: bench_step.Factory(gpu_step.FACTORIES[name], gpu=True)
                 for name in ("cuBLAS floor", "minivae cupy captured")}
    rows = bench_step.bench_batch(8, bench_step.QUICK, 0, has_gpu=True, factories=factories)
    assert all("median" in rows[name] for name in factories), rows
    assert not cupy._state.violations
