"""The benchmark harness: interleaving, statistics, writers, peer guards, GEMM floor shapes.

Fast and framework-free: fake candidates and a fake clock, no peer is run.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from minivae.benchmarks import bench_step, confinement, gemm_floor, harness, peers, verdicts


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


def test_markdown_shows_floor_multiples_rates_and_skip_reasons():
    lines = harness.markdown_table(fake_report()).splitlines()
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


# ----- physically possible rows -----

def impossible_report():
    """Batch 512 on one core of peak 133 GFLOP/s: JAX's 9.47 ms would run 1.68 GFLOP of products at 177 GFLOP/s."""
    rounds = np.linspace(0.98, 1.02, 7)  # the same spell of the machine lands on every row of a round
    rows = {name: harness.Stats(list(seconds * rounds), number=1).to_dict()
            for name, seconds in (("GEMM floor", 13.8e-3), ("jax jit", 9.47e-3), ("minivae numba", 15.1e-3),
                                  ("torch eager", 19.0e-3))}
    return bench_step.judge({
        "environment": {"cpu": "Test CPU", "cores": 2, "load_average": (0.5, 0.4, 0.3), "gpu": "no GPU"},
        "settings": {"rounds": 7, "threads": 1}, "peak_gflops": 133.0, "floor": "GEMM floor",
        "flops_per_example": gemm_floor.flops_per_example(), "gpu_rows": [],
        "confinement": {"cores": [0], "threads": 3, "escaped": [], "cpus": [0]}, "batches": {"512": rows}})


def test_a_row_faster_than_the_peak_is_flagged_and_never_a_win():
    report = impossible_report()
    rows = report["batches"]["512"]
    assert rows["jax jit"]["gflops"] == pytest.approx(512 * 3.28e6 / 9.47e-3 / 1e9)  # 177 GFLOP/s
    assert "177 GFLOP/s, above the measured peak 133 GFLOP/s" in rows["jax jit"]["invalid"]
    assert "invalid" not in rows["GEMM floor"] and "invalid" not in rows["minivae numba"]  # 122, 111 GFLOP/s
    assert report["comparisons"]["minivae numba"] == {"jax jit": {"512": "invalid"}, "torch eager": {"512": "ahead"}}
    text = harness.markdown_table(report)
    assert "| jax jit | **invalid** 9.47 ms" in text
    assert "- jax jit, batch 512: **invalid**: its products would run at 177 GFLOP/s" in text
    assert "- minivae numba vs jax jit: invalid at batch 512." in text


def gpu_report(seconds):
    """Batch 1024 on a GPU: the cuBLAS floor takes 1 ms; each GPU row ``seconds[name]``, the same in every round."""
    rounds = np.linspace(0.98, 1.02, 7)
    timed = {"GEMM floor": 0.4, "cuBLAS floor": 1e-3} | seconds
    rows = {name: harness.Stats(list(median * rounds), number=1).to_dict() for name, median in timed.items()}
    return bench_step.judge({
        "environment": {"cpu": "Test CPU", "cores": 2, "load_average": (0.5, 0.4, 0.3), "gpu": "Test GPU"},
        "settings": {"rounds": 7, "threads": None}, "peak_gflops": 133.0, "floor": "GEMM floor",
        "flops_per_example": gemm_floor.flops_per_example(), "gpu_rows": ["cuBLAS floor", *seconds],
        "confinement": {"cores": None, "threads": 3, "escaped": [], "cpus": [0, 1]}, "batches": {"1024": rows}})


def test_an_eager_gpu_step_faster_than_its_own_products_on_cublas_is_invalid_and_never_a_win():
    report = gpu_report({"minivae cupy": 0.5e-3, "torch eager GPU": 0.2e-3})
    rows = report["batches"]["1024"]
    assert rows["minivae cupy"]["invalid"] == ("its median 0.5 ms is below the cuBLAS floor's 1 ms, its products"
                                               " alone (x1.10 margin)")
    assert "invalid" in rows["torch eager GPU"] and "invalid" not in rows["cuBLAS floor"]
    assert report["comparisons"] == {}  # GPU rows are never compared, so never a win
    text = harness.markdown_table(report)
    assert "| minivae cupy | **invalid** 500 us" in text
    assert "- minivae cupy, batch 1024: **invalid**: its median 0.5 ms is below the cuBLAS floor's 1 ms" in text


def test_a_gpu_step_at_or_above_the_cublas_floor_or_launched_at_once_is_not_flagged():
    """At the floor (and within the margin below it) an eager step stands; a captured replay and JAX's jitted
    step launch their work at once, without the floor's per-call host time, so the floor does not bound them."""
    report = gpu_report({"minivae cupy": 1e-3, "minivae numba-cuda": 0.95e-3, "torch eager GPU": 3e-3,
                         "minivae cupy captured": 0.3e-3, "jax jit GPU": 0.2e-3})
    assert not any("invalid" in row for row in report["batches"]["1024"].values())
    assert "invalid" in gpu_report({"minivae numba-cuda": 0.9e-3})["batches"]["1024"]["minivae numba-cuda"]


def test_the_peak_is_one_cores_rate_times_the_cores(monkeypatch):
    assert 0 < gemm_floor.core_gflops(size=64, repeat=2) < np.inf
    monkeypatch.setattr(gemm_floor, "core_gflops", lambda size, repeat: 50.0)
    assert gemm_floor.peak_gflops(cores=3) == 150.0
    assert gemm_floor.peak_gflops() == 50.0 * len(os.sched_getaffinity(0))


# ----- ahead, behind, level -----

def rounds_of(floor, ratios):
    """(samples, floor samples): a row at ``ratios`` x the floor, round by round."""
    return [f * r for f, r in zip(floor, ratios)], floor


def test_floor_ratio_is_the_median_per_round_ratio_with_a_bootstrap_interval():
    floor = [1.0, 2.0, 1.5, 1.2, 3.0, 1.1, 1.4]  # a noisy machine: the floor itself varies 3x
    steady = verdicts.floor_ratio(*rounds_of(floor, [1.3] * 7))
    assert steady == pytest.approx({"ratio": 1.3, "low": 1.3, "high": 1.3, "rounds": 7})  # paired rounds cancel the noise
    noisy = verdicts.floor_ratio(*rounds_of(floor, [1.1, 1.5, 1.2, 1.4, 1.3, 1.25, 1.35]))
    assert noisy["ratio"] == pytest.approx(1.3) and 1.1 <= noisy["low"] < 1.3 < noisy["high"] <= 1.5


def judged(ratios):
    samples, floor_samples = rounds_of([1.0] * len(ratios), ratios)
    return {"median": float(np.median(samples)), "floor_ratio": verdicts.floor_ratio(samples, floor_samples)}


def test_verdicts_come_from_the_intervals_not_the_medians():
    ours = judged([1.20, 1.22, 1.25, 1.21, 1.60, 1.19, 1.23])
    close = judged([1.24, 1.26, 1.30, 1.18, 1.27, 1.55, 1.25])  # a higher median, overlapping interval
    far = judged([1.50, 1.52, 1.55, 1.49, 1.51, 1.53, 1.50])
    assert ours["floor_ratio"]["ratio"] < close["floor_ratio"]["ratio"]
    assert verdicts.verdict(ours, close) == verdicts.verdict(close, ours) == "level"
    assert (verdicts.verdict(ours, far), verdicts.verdict(far, ours)) == ("ahead", "behind")
    assert verdicts.verdict(judged([1.2] * 3), judged([1.5] * 3)) == "too few rounds"
    assert verdicts.verdict(ours | {"invalid": "too fast"}, far) == "invalid"  # never a win


def test_summary_line_groups_batches_by_verdict():
    comparisons = {"minivae numba": {"jax jit": {"32": "level", "128": "level", "512": "ahead"}}}
    assert verdicts.summary_lines(comparisons) == ["minivae numba vs jax jit: level at batch 32 and 128,"
                                                   " ahead at batch 512."]


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


JAX_PEER_DEVICES = """
import inspect, jax
from minivae.benchmarks import peers
jax.config.update("jax_default_device", jax.devices()[1])  # stands in for a GPU that jax-cuda makes the default
for device in (None, jax.devices()[1]):
    step = peers.make_step("jax jit", 8, 0, device=device)
    step()
    arrays = inspect.getclosurevars(step).nonlocals
    print(sorted({f"{d.platform}:{d.id}" for leaf in jax.tree.leaves((arrays["x"], arrays["state"])) for d in leaf.devices()}))
"""


@pytest.mark.skipif(peers.available("jax jit") is not None, reason="jax not installed")
def test_the_jax_peer_runs_on_the_first_cpu_whatever_the_default_device_unless_given_one():
    """Two host devices stand in for a CPU and a GPU: the peer's arrays (after a step) are all on the one asked for."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", JAX_PEER_DEVICES], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["['cpu:0']", "['cpu:1']"]


def make_noop_step(batch_size, seed):
    return lambda: None


def make_unavailable_step(batch_size, seed):
    raise harness.Unavailable("frobnicator not installed: pip install frobnicator")


def test_a_batch_times_each_factorys_step_and_skips_with_reasons():
    factories = {"noop": bench_step.Factory(make_noop_step, numpy_buffers=True),
                 "missing": bench_step.Factory(make_unavailable_step),
                 "on gpu": bench_step.Factory(make_noop_step, gpu=True)}
    settings = bench_step.Settings(rounds=2, warmup=0, min_time=0.0, peak_repeat=1)
    rows = bench_step.bench_batch(4, settings, seed=0, has_gpu=False, factories=factories)
    assert len(rows["noop"]["samples"]) == 2 and "tracemalloc_peak_mib" in rows["noop"]
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


def test_the_cublas_floor_multiplies_the_cpu_floors_operands_as_the_step_stores_them(monkeypatch):
    """On the fake CuPy: each cuBLAS call gets the stored operands the CPU floor draws from the same seed
    (transposed ones the other way round, with their flag), and the (m, n) product it is."""
    import fake_cupy
    import fake_nvmath
    from minivae.backend import load_backend
    from minivae.benchmarks import gpu_step
    fake_cupy.install(monkeypatch)
    fake_nvmath.install(monkeypatch)
    kernels, calls = load_backend("cupy").kernels, []
    real_matmul = kernels.matmul

    def recorded(a, b, trans_a=False, trans_b=False):
        out = real_matmul(a, b, trans_a, trans_b)
        calls.append((a.get(), b.get(), trans_a, trans_b, out.shape))
        return out
    monkeypatch.setattr(kernels, "matmul", recorded)
    floor = gpu_step.make_cublas_floor(8, seed=3)
    calls.clear()  # the backend's own 2x3 probe, when loaded
    floor()
    rng = np.random.default_rng(3)
    products = gemm_floor.products(8)
    assert len(calls) == len(products)
    for product, (a, b, trans_a, trans_b, shape) in zip(products, calls, strict=True):
        stored_a, stored_b = gemm_floor.stored_operands(product, rng)
        assert (trans_a, trans_b, shape) == (product.transpose_a, product.transpose_b, (product.m, product.n))
        assert np.array_equal(a, stored_a) and np.array_equal(b, stored_b)
    cpu_a, cpu_b, _ = gemm_floor._operands(products[4], np.random.default_rng(0))  # dW4 = h3.T @ dlogits
    assert cpu_a.shape == (products[4].m, products[4].k) and cpu_a.base is not None and cpu_b.base is None


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

def run_probe(code):
    """Run ``code`` in a fresh interpreter (confinement is process-wide); its stdout as JSON."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_confine_caps_the_pools_and_pins_every_thread():
    probe = ("import json, os, numpy; from threadpoolctl import threadpool_info;"  # numpy's BLAS threads start first
             " from minivae.benchmarks import confinement; cores = confinement.confine(1);"
             " print(json.dumps([cores, confinement.check(cores), sorted({p['num_threads'] for p in threadpool_info()})]))")
    cores, check, pools = run_probe(probe)
    assert len(cores) == 1 and check["escaped"] == [] and check["threads"] >= 1 and pools == [1]


needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                                     reason="needs two usable cores to see a thread escape one")


@needs_two_cores
def test_a_thread_started_before_pinning_the_caller_is_found_escaping():
    probe = """
import json, os, threading
from minivae.benchmarks import confinement
stop = threading.Event()
worker = threading.Thread(target=stop.wait)
worker.start()
first, second = sorted(os.sched_getaffinity(0))[:2]
os.sched_setaffinity(0, {first})  # the calling thread only: the worker keeps both cores
pinned_caller = confinement.check([first])
cores = confinement.confine(1)
confined = confinement.check(cores)
os.sched_setaffinity(worker.native_id, {second})  # as a library pinning its own pool would
repinned = confinement.check(cores)
stop.set()
print(json.dumps({"worker": worker.native_id, "pinned_caller": pinned_caller, "confined": confined,
                  "repinned": repinned, "line": confinement.describe(pinned_caller)}))
"""
    seen = run_probe(probe)
    assert [t["tid"] for t in seen["pinned_caller"]["escaped"]] == [seen["worker"]]
    assert seen["confined"]["escaped"] == []
    assert [(t["tid"], len(t["cpus"])) for t in seen["repinned"]["escaped"]] == [(seen["worker"], 1)]
    assert seen["line"].startswith("**BROKEN**: 1 of 2 threads could leave CPU ")


def test_describe_says_when_nothing_was_confined():
    line = confinement.describe({"cores": None, "threads": 5, "escaped": [], "cpus": [0, 1]})
    assert line == "none asked (no --threads); the 5 threads may run on CPUs 0,1"
    assert confinement.parse_cpu_list("0-2,5") == [0, 1, 2, 5]


def test_durations_read_in_the_largest_unit_below_them_negative_ones_too():
    assert [harness.format_duration(s) for s in (7.891, 4.561e-3, 1.234e-5, 3e-9, -1.42e-4)] == [
        "7.89 s", "4.56 ms", "12.3 us", "3 ns", "-142 us"]


def test_bench_threads_times_each_setting_by_its_epochs_own_seconds_interleaved(monkeypatch, capsys):
    from minivae.benchmarks import bench_threads
    calls = []

    def training_seconds(threads, epochs, out):
        calls.append(threads)
        return {None: 1.0, 1: 1.0, 2: 2.0}[threads] * epochs * (1 + len(calls) / 100)  # the machine slows down
    monkeypatch.setattr(bench_threads, "training_seconds", training_seconds)
    assert bench_threads.main(["--epochs", "2", "--rounds", "5"]) == 0
    assert sorted(calls, key=str) == sorted([None, 1, 2] * 5, key=str)
    assert len({tuple(calls[i:i + 3]) for i in range(0, 15, 3)}) > 1  # rounds in shuffled orders
    lines = capsys.readouterr().out.splitlines()[1:]  # each median: the reported seconds, not the wall time
    assert lines == ["default       2.18 s for 2 epochs (median of 5)", "1 thread      2.14 s for 2 epochs (median of 5)",
                     "2 threads     4.32 s for 2 epochs (median of 5)",
                     "default / best of 1 and 2 threads: 1.02 (target <= 1.10: met)"]
