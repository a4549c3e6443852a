"""The benchmark harness: interleaving, statistics, writers, peer guards, GEMM floor shapes.

Fast and framework-free: fake candidates and a fake clock, no peer is run.
"""
import json
import subprocess
import sys
import time

import pytest

from minivae.benchmarks import bench_step, gemm_floor, harness


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
    return bench_step.judge({
        "environment": {"cpu": "Test CPU", "cores": 2, "load_average": (0.5, 0.4, 0.3), "gpu": "no GPU"},
        "settings": {"rounds": 3, "threads": 1}, "peak_gflops": 100.0, "floor": "GEMM floor",
        "flops_per_example": gemm_floor.flops_per_example(), "gpu_rows": ["cupy"],
        "confinement": {"cores": [0], "threads": 3, "escaped": [], "cpus": [0]},
        "batches": {"32": {"GEMM floor": row(0.002), "jax jit": row(0.003), "cupy": {"skipped": "no GPU"}},
                    "128": {"GEMM floor": row(0.008), "jax jit": row(0.016), "cupy": {"skipped": "no GPU"}}},
    })


def test_json_keeps_every_sample_and_the_environment(tmp_path):
    report = fake_report()
    harness.write_json(report, tmp_path / "step.json")
    loaded = json.loads((tmp_path / "step.json").read_text())
    assert loaded["batches"]["32"]["jax jit"]["samples"] == report["batches"]["32"]["jax jit"]["samples"]
    assert loaded["environment"]["cpu"] == "Test CPU"


def test_markdown_shows_floor_multiples_rates_and_skip_reasons(tmp_path):
    harness.write_markdown(fake_report(), tmp_path / "step.md")
    lines = (tmp_path / "step.md").read_text().splitlines()
    assert lines[0] == "| implementation | batch 32 | batch 128 |"
    assert lines[1] == "|---|---|---|"
    jax_row = next(line for line in lines if line.startswith("| jax jit"))
    # the per-round ratios are all 1.5 (then 2): a zero-width interval; 32 x 3.28 MFLOP in 3 ms is 35 GFLOP/s
    assert "3 ms (1.50x [1.50, 1.50], 35 GFLOP/s)" in jax_row and "16 ms (2.00x [2.00, 2.00], 26 GFLOP/s)" in jax_row
    assert "| cupy | skipped | skipped |" in lines
    assert "- cupy: no GPU" in lines
    assert "Confinement: held: all 3 threads allowed only CPU 0." in lines
    assert not any(line.startswith("Warning") for line in lines)  # load 0.5 on 2 cores is quiet


def test_markdown_warns_when_the_machine_was_busy():
    report = fake_report()
    report["environment"]["load_average"] = (3.0, 2.0, 1.0)
    assert "Warning: the machine was busy" in harness.markdown_table(report)


def test_a_load_the_run_made_itself_is_not_other_work():
    """The load average counts the benchmark's own threads; measured other work decides instead."""
    report = fake_report()
    report["environment"] |= {"load_average": (3.0, 2.0, 1.0), "other_cores": 0.05}
    assert "Warning" not in harness.markdown_table(report)
    report["environment"]["other_cores"] = 0.8
    assert "Warning: the machine was busy" in harness.markdown_table(report)


def test_other_work_is_the_machines_busy_time_less_the_runs_own(monkeypatch):
    readings = {"machine": 100.0, "own": 10.0, "wall": 50.0}
    monkeypatch.setattr(harness, "_machine_busy_seconds", lambda: readings["machine"])
    monkeypatch.setattr(harness, "_own_cpu_seconds", lambda: readings["own"])
    monkeypatch.setattr(harness.time, "perf_counter", lambda: readings["wall"])
    use = harness.MachineUse()
    readings.update(machine=130.0, own=22.0, wall=60.0)  # 30 s busy in 10 s, 12 of them ours: 1.8 cores of others
    assert use.other_cores() == pytest.approx(1.8)


def test_other_work_sees_a_busy_process_beside_the_run():
    """/proc/stat is read: a process spinning beside the run (not its child waited for) shows as other work."""
    use = harness.MachineUse()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"])
    try:
        time.sleep(1.2)
        seen = use.other_cores()
    finally:
        spinner.kill()
        spinner.wait()
    assert seen > 0.4
