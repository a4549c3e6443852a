"""The benchmark harness: interleaving, statistics, writers, peer guards, GEMM floor shapes.

Fast and framework-free: fake candidates and a fake clock, no peer is run.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from minivae.benchmarks import bench_step, gemm_floor, harness, peers


class FakeClock:
    """A clock that moves only when a fake candidate says it worked."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def timed_candidate(clock, durations):
    """A candidate whose successive calls take ``durations`` seconds of fake time."""
    remaining = iter(durations)

    def candidate():
        clock.now += next(remaining)
    return candidate


# ----- compare and measure -----

def test_compare_interleaves_rounds_in_shuffled_order():
    calls = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    harness.compare(candidates, rounds=6, warmup=0)
    rounds = [calls[i:i + 4] for i in range(0, len(calls), 4)]
    assert len(rounds) == 6
    assert all(sorted(r) == list("abcd") for r in rounds)  # every round times every candidate once
    assert len({tuple(r) for r in rounds}) > 1  # and the order changes between rounds


def test_compare_order_is_reproducible_from_the_seed():
    def call_order(seed):
        calls = []
        harness.compare({name: (lambda name=name: calls.append(name)) for name in "abc"},
                        rounds=5, warmup=0, seed=seed)
        return calls
    assert call_order(3) == call_order(3)
    assert len({tuple(call_order(seed)) for seed in range(5)}) > 1


def test_compare_statistics_from_a_fake_clock():
    clock = FakeClock()
    stats = harness.compare({"slow": timed_candidate(clock, [5, 1, 4, 2, 3]),
                             "fast": timed_candidate(clock, [0.1] * 5)},
                            rounds=5, warmup=0, clock=clock)
    slow = stats["slow"]
    assert sorted(slow.samples) == [1, 2, 3, 4, 5]
    assert (slow.median, slow.quartiles, slow.iqr, slow.min, slow.number) == (3, (2, 4), 2, 1, 1)
    assert stats["fast"].median == pytest.approx(0.1)


def test_min_time_sets_calls_per_sample_and_samples_are_per_call():
    clock = FakeClock()
    samples = harness.measure(timed_candidate(clock, [0.01] * 200), warmup=1, repeat=3,
                              min_time=0.1, clock=clock)
    assert samples == pytest.approx([0.01] * 3)
    assert clock.now == pytest.approx(0.01 * (1 + 1 + 3 * 10))  # warm-up, calibration, 3 samples of 10


def test_stats_of_a_single_sample():
    stats = harness.Stats([2.0], number=1)
    assert (stats.median, stats.quartiles, stats.iqr) == (2.0, (2.0, 2.0), 0.0)


# ----- writers -----

def fake_report():
    def row(median):
        return harness.Stats([median * 0.9, median, median * 1.1], number=4).to_dict()
    return {
        "environment": {"cpu": "Test CPU", "cores": 2, "load_average": (0.5, 0.4, 0.3), "gpu": "no GPU"},
        "settings": {"rounds": 3, "threads": 1}, "peak_gflops": 100.0, "floor": "GEMM floor",
        "batches": {"32": {"GEMM floor": row(0.001), "jax jit": row(0.0015), "cupy": {"skipped": "no GPU"}},
                    "128": {"GEMM floor": row(0.002), "jax jit": row(0.004), "cupy": {"skipped": "no GPU"}}},
    }


def test_json_keeps_every_sample_and_the_environment(tmp_path):
    report = fake_report()
    harness.write_json(report, tmp_path / "step.json")
    loaded = json.loads((tmp_path / "step.json").read_text())
    assert loaded["batches"]["32"]["jax jit"]["samples"] == report["batches"]["32"]["jax jit"]["samples"]
    assert loaded["environment"]["cpu"] == "Test CPU"


def test_markdown_shows_floor_multiples_and_skip_reasons(tmp_path):
    harness.write_markdown(fake_report(), tmp_path / "step.md")
    lines = (tmp_path / "step.md").read_text().splitlines()
    assert lines[0] == "| implementation | batch 32 | batch 128 |"
    assert lines[1] == "|---|---|---|"
    jax_row = next(line for line in lines if line.startswith("| jax jit"))
    assert "1.5 ms (1.50x, IQR 10%)" in jax_row and "4 ms (2.00x, IQR 10%)" in jax_row
    assert "| cupy | skipped | skipped |" in lines
    assert "- cupy: no GPU" in lines
    assert not any(line.startswith("Warning") for line in lines)  # load 0.5 on 2 cores is quiet


def test_markdown_warns_when_the_machine_was_busy():
    report = fake_report()
    report["environment"]["load_average"] = (3.0, 2.0, 1.0)
    assert "Warning: the machine was busy" in harness.markdown_table(report)


def test_chart_is_a_png(tmp_path):
    harness.write_chart(fake_report(), tmp_path / "step.png")
    assert (tmp_path / "step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_environment_imports_no_framework():
    before = set(sys.modules)
    env = harness.environment()
    assert {"cpu", "cores", "python", "versions", "thread_pools", "gpu"} <= env.keys()
    assert env["versions"]["numpy"]
    assert not {"numba", "torch", "jax", "cupy"} & (set(sys.modules) - before)


# ----- peers and the driver's plug-in point -----

def test_peer_reports_why_when_its_framework_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    monkeypatch.delitem(sys.modules, "minivae.benchmarks.peers.torch_vae", raising=False)
    assert peers.available("torch eager") == "torch not installed: pip install torch"
    with pytest.raises(harness.Unavailable, match="pip install torch"):
        peers.make_step("torch eager", 32, 0)


def make_noop_step(batch_size, seed):
    return lambda: None


def make_unavailable_step(batch_size, seed):
    raise harness.Unavailable("frobnicator not installed: pip install frobnicator")


def test_driver_times_registered_steps_and_skips_with_reasons(monkeypatch):
    monkeypatch.setattr(bench_step, "STEP_FACTORIES", {})
    bench_step.register("noop", make_noop_step, numpy_buffers=True)
    bench_step.register("missing", make_unavailable_step)
    bench_step.register("on gpu", make_noop_step, gpu=True)
    settings = bench_step.Settings(rounds=2, warmup=0, min_time=0.0, peak_repeat=1)
    rows = bench_step.bench_batch(4, settings, seed=0, has_gpu=False)
    assert len(rows["noop"]["samples"]) == 2 and "tracemalloc_peak_mib" in rows["noop"]
    assert rows["GEMM floor"]["gflops"] > 0
    assert rows["missing"] == {"skipped": "frobnicator not installed: pip install frobnicator"}
    assert rows["on gpu"] == {"skipped": "no GPU"}


# ----- GEMM floor -----

def test_floor_is_the_11_products_of_the_784_400_20_step():
    step = gemm_floor.products(128)
    assert len(step) == 11
    weights = {(784, 400), (400, 40), (20, 400), (400, 784)}  # mu and logvar heads fused: 400x40
    assert {(p.m, p.n) for p in step if p.transpose_a} == weights  # one gradient per weight
    assert {(p.k, p.n) for p in step[:4]} == weights  # forward: x @ W
    assert all(p.flops == 128 * q.flops for p, q in zip(step, gemm_floor.products(1), strict=True))
    # DESIGN.md's 3.3 MFLOP per example is 2 FLOP x 1,640,000 multiply-adds: 651,200 forward,
    # as many for the weight gradients, 337,600 for the input gradients (none for x)
    assert gemm_floor.flops_per_example() == 3_280_000


def test_floor_runs_with_the_step_layouts():
    gemm_floor.make_floor(8)()


# ----- memory -----

def test_child_peak_rss_is_the_childs_own_not_this_process_size():
    ballast = np.ones(30_000_000)  # 229 MiB resident here: a child's max RSS must not start from it
    allocate = "import numpy as np; np.ones(20_000_000); import sys; sys.exit(3)"  # 153 MiB
    small_status, small = harness.child_peak_rss_mib([sys.executable, "-c", "pass"])
    large_status, large = harness.child_peak_rss_mib([sys.executable, "-c", allocate])
    assert (small_status, large_status) == (0, 3)
    assert small < 100 and 150 < large < 250
    del ballast


# ----- threads -----

def test_limit_threads_caps_the_pools_and_pins_the_process():
    probe = ("import os, numpy; from threadpoolctl import threadpool_info; from minivae.benchmarks import harness;"
             " harness.limit_threads(1);"
             " print(len(os.sched_getaffinity(0)), {pool['num_threads'] for pool in threadpool_info()})")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split(maxsplit=1) == ["1", "{1}\n"]
