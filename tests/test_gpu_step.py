"""The GPU rows of the step benchmark: on a machine without a GPU they say so, at every batch size, and never crash."""
import pytest

from benchmarks import bench_step, gpu_step, harness, suite

no_gpu_here = pytest.mark.skipif(harness.gpu_name() is not None, reason="a GPU is present: its rows are timed")
GPU_ROWS = ("cuBLAS floor", "minivae cupy captured", "minivae cupy", "minivae numba-cuda", "torch eager GPU",
            "jax jit GPU")


def gpu_factories():
    statuses = suite.backend_statuses(["cupy", "numba-cuda"], has_gpu=harness.gpu_name() is not None)
    return {name: factory for name, factory in suite.step_factories(statuses, with_peers=True).items()
            if factory.gpu}


@no_gpu_here
@pytest.mark.parametrize("batch_size", [128, 1024, 8192])
def test_every_gpu_row_says_no_gpu(batch_size):
    factories = gpu_factories()
    assert set(factories) == set(GPU_ROWS)
    steps, skipped = bench_step._build_steps(batch_size, 0, has_gpu=False, factories=factories)
    assert skipped == dict.fromkeys(GPU_ROWS, "no GPU") and set(steps) == {bench_step.FLOOR}


@no_gpu_here
@pytest.mark.parametrize("name", list(gpu_step.FACTORIES))
def test_a_gpu_factory_without_a_gpu_is_unavailable_in_one_line(name):
    with pytest.raises(harness.Unavailable) as why:
        gpu_step.FACTORIES[name](128, 0)
    assert str(why.value) and "\n" not in str(why.value)


def test_a_gpu_row_that_fails_says_why_in_its_cell_and_the_rest_are_timed():
    """A factory that raises, and a step that fails on its first call: each row's cell is its failure."""
    def failing_factory(batch_size, seed):
        raise RuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error\nmore")

    def failing_on_the_device(batch_size, seed):
        def step():
            raise MemoryError("out of device memory")
        return step
    factories = {"built badly": bench_step.Factory(failing_factory, gpu=True),
                 "fails when run": bench_step.Factory(failing_on_the_device, gpu=True)}
    rows = bench_step.bench_batch(8, bench_step.QUICK, 0, has_gpu=True, factories=factories)
    assert rows["built badly"] == {"skipped": "failed: RuntimeError: cudaErrorStreamCaptureInvalidated: "
                                              "operation failed due to a previous error"}
    assert rows["fails when run"] == {"skipped": "failed: MemoryError: out of device memory"}
    assert "median" in rows[bench_step.FLOOR]
