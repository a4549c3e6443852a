"""The step's breakdown: every kernel call recorded and replayed, every part in the printed table.

numpy backend (the command: numba, where the step is also recorded and replayed), batch 4, two rounds: no time
is asserted.
"""
import subprocess
import sys

import numpy as np

import minivae
from minivae.benchmarks import breakdown
from minivae.benchmarks.bench_engine_step import make_eager_step
from minivae.kernels import reference


def test_recording_sees_every_kernel_call_of_a_step_and_puts_the_kernels_back():
    step = make_eager_step(4, 0, "numpy")
    kernels = minivae.get_backend().kernels
    originals = {name: getattr(kernels, name) for name in reference.KERNEL_NAMES}
    with breakdown.recording(kernels) as (calls, copies):
        step()
    assert {name: getattr(kernels, name) for name in reference.KERNEL_NAMES} == originals
    names = [call.name for call in calls]
    assert names.count("matmul") == 11 and names.count("bias_act") == names.count("bias_act_backward") == 4
    assert names[-1] == "adam_step" and len(copies) == 8  # 4 layers' weights and biases, each copied once
    assert all(view.shape == grad.shape for view, grad in copies)


def test_a_replayed_kernel_computes_what_it_computed_in_the_step():
    step = make_eager_step(4, 0, "numpy")
    step()
    with breakdown.recording(minivae.get_backend().kernels) as (calls, _):
        step()
    likelihood = next(call for call in calls if call.name == "bernoulli_log_prob")  # its inputs: data and logits
    np.testing.assert_array_equal(likelihood.fn(*likelihood.args, **likelihood.kwargs), likelihood.result)
    adam = next(call for call in calls if call.name == "adam_step")
    parameters = adam.args[0].copy()
    breakdown.replay(calls)()  # all of them, Adam on copies of its buffers:
    np.testing.assert_array_equal(adam.args[0], parameters)  # the model does not drift however often it replays
    products = [call for call in calls if call.name == "matmul"]
    breakdown.preallocated_products(products)()  # the same products with out=, every layout accepted


def test_the_command_prints_every_part_for_each_batch():
    argv = [sys.executable, "-m", "minivae.benchmarks.breakdown", "--backend", "numba", "--batch-sizes", "4,8",
            "--rounds", "2", "--min-time", "0"]
    printed = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "malloc keeps freed memory: yes" in printed or sys.platform != "linux"
    for batch in ("Batch 4:", "Batch 8:"):
        table = printed.split(batch)[1].split("Batch")[0]
        assert all(f"| {label} |" in table for label in breakdown.LABELS.values())
        assert "27 kernel calls returning 32 arrays" in table


def test_the_cpu_clock_needs_one_thread():
    argv = [sys.executable, "-m", "minivae.benchmarks.breakdown", "--clock", "cpu"]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 2 and "--clock cpu needs --threads 1" in result.stderr
