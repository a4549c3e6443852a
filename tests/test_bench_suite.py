"""``minivae bench``: option checks, a kernel table covering the whole contract, GPU rows, the written report.

Tiny sizes (batch 2, an 8-cubed product, a fake 28x28 MNIST of a few
hundred images); no peer framework is run and no time is asserted.
"""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minivae.app.data import Pixels
from minivae.backend import load_backend
from minivae.benchmarks import bench_step, harness, micro, report, suite
from minivae.kernels.reference import KERNEL_NAMES
from runs import assert_one_line_error, run_cli, write_fake_mnist

REPO = Path(__file__).resolve().parents[1]
CPU_BACKENDS = ("numpy", "numba")
TINY = bench_step.Settings(rounds=1, warmup=1, min_time=0.0, peak_repeat=1)
no_gpu_here = pytest.mark.skipif(harness.gpu_name() is not None, reason="a GPU is present: its rows are timed")


@pytest.mark.parametrize("option, value, fragment", [
    ("--backends", "numpy,tpu", "unknown tpu; choose among numpy, numba, cupy, numba-cuda"),
    ("--backends", ",", "no names"),
    ("--only", "micro,macro", "unknown macro; choose among micro, step, epoch, iw, memory"),
    ("--threads", "0", "must be a positive whole number"),
    ("--batch-sizes", "32,-1", "positive whole numbers"),
    ("--data", "digits", "invalid choice"),
    ("--iw-samples", "0", "must be a positive whole number"),
])
def test_bad_options_are_one_line_errors(capsys, option, value, fragment):
    status, _, err = run_cli(["bench", option, value], capsys)
    assert_one_line_error(status, err, option, fragment)


def test_kernel_table_covers_every_kernel_on_each_cpu_backend():
    backends = {name: load_backend(name) for name in CPU_BACKENDS}
    rows = micro.measure(micro.cases([2], cube=8), backends, TINY)
    assert {row["kernel"] for row in rows} == set(KERNEL_NAMES)
    assert all(set(row["times"]) == set(CPU_BACKENDS) for row in rows)
    assert [row["kernel"] for row in rows] == sorted((row["kernel"] for row in rows), key=KERNEL_NAMES.index)
    work = {row["kernel"]: (row["flops"], row["bytes"]) for row in rows}
    assert work["matmul"][0] > 0 and work["adam_step"][1] == 7 * 4 * micro.PARAMETERS  # p g m v read, p m v written
    lines = micro.markdown(rows, list(CPU_BACKENDS))
    assert lines[0] == "| kernel | size | numpy | numba |"
    assert all("x numpy" in line for line in lines[2:len(rows) + 2])


def test_model_sizes():
    assert micro.PARAMETERS == 652_824  # 784*400+400 + 400*40+40 + 20*400+400 + 400*784+784
    assert bench_step.gemm_floor.iw_flops(1, 1) == sum(p.flops for p in bench_step.gemm_floor.products(1)[:4])


@no_gpu_here
def test_gpu_backends_and_the_torch_gpu_step_say_no_gpu():
    statuses = suite.backend_statuses(["numpy", "cupy", "numba-cuda"], has_gpu=False)
    assert statuses["numpy"] is None
    assert statuses["cupy"].startswith("no GPU (cupy: ") and statuses["numba-cuda"].startswith("no GPU (numba-cuda: ")
    factories = {name: factory for name, factory in suite.step_factories(statuses, with_peers=True).items()
                 if factory.gpu or name == "minivae numpy"}  # the CPU peers are bench_step's, tested there
    rows = bench_step.bench_batch(2, TINY, seed=0, has_gpu=False, factories=factories)
    assert rows["minivae cupy"] == rows["minivae numba-cuda"] == rows["torch eager GPU"] == {"skipped": "no GPU"}
    assert "median" in rows["minivae numpy"]


def test_epoch_floor_runs_every_batch_and_the_last_partial_one(monkeypatch):
    ran = []
    monkeypatch.setattr(suite.gemm_floor, "make_floor", lambda batch_size, seed: lambda: ran.append(batch_size))
    suite.epoch_floor(5, 2, seed=0)()
    assert ran == [2, 2, 1]


@pytest.mark.parametrize("images", [
    SimpleNamespace(train_x=np.zeros((1000, 784), np.float32), test_x=np.zeros((250, 784), np.float32)),
    SimpleNamespace(train_x=Pixels(np.zeros((1000, 784), np.uint8), 255),  # counted as float32 all the same
                    test_x=Pixels(np.zeros((250, 784), np.uint8), 255)),
], ids=["float32", "uint8 pixels"])
def test_memory_budget_is_the_float32_dataset_plus_200_megabytes(monkeypatch, images):
    peaks = {"numpy": 300.0, "numba": 600.0}
    monkeypatch.setattr(suite, "training_peak_memory", lambda backend, config: peaks[backend])
    memory = suite.bench_memory({"numpy": None, "numba": None, "cupy": "no GPU (cupy: no device)"}, None, images)
    dataset = 1250 * 784 * 4
    assert memory["dataset_mib"] == dataset / 2**20
    assert memory["budget_mib"] == pytest.approx((dataset + 200_000_000) / 2**20)  # 200 MB, not 200 MiB
    assert memory["rows"]["cupy"] == {"skipped": "no GPU"}
    lines = report._memory_lines(memory)
    assert lines[0].startswith("Dataset in float32: 3.7 MiB; budget: dataset + 200 MB (190.7 MiB) = 194.5 MiB")
    assert "| numpy | 300 MiB | **no** (106 MiB over) |" in lines
    peaks["numpy"] = 150.0
    lines = report._memory_lines(suite.bench_memory({"numpy": None}, None, images))
    assert "| numpy | 150 MiB | yes (44 MiB to spare) |" in lines


def test_iw_rows_on_a_gpu_are_not_held_to_the_cpu_peak():
    """A fake IW part: a CPU row faster than the peak is invalid; a GPU row ten times faster is not, and has no share."""
    def row(seconds, gflops):
        return {"median": seconds, "iqr": seconds / 10, "gflops": gflops}
    iw = {"k": 5000, "examples": 100, "rows": {"minivae numba": row(2.0, 150.0), "minivae numpy": row(4.0, 50.0),
                                               "minivae cupy": row(0.1, 1000.0),
                                               "minivae numba-cuda": {"skipped": "no GPU"}}}
    lines = report._iw_lines(iw, peak=100.0)
    assert "| minivae numba | **invalid** 2 s (IQR 10%) | 150.0 | 150% |" in lines
    assert "| minivae numpy | 4 s (IQR 10%) | 50.0 | 50% |" in lines
    assert "| minivae cupy | 100 ms (IQR 10%) | 1000.0 | GPU: not held to the CPU peak |" in lines
    assert "| minivae numba-cuda | skipped: no GPU | | |" in lines


@no_gpu_here
def test_full_report_is_printed_and_written(tmp_path, capsys):
    data_dir = write_fake_mnist(tmp_path / "mnist", train_count=300, test_count=4, side=28)
    out = tmp_path / "bench"
    status, printed, _ = run_cli(["bench", "--quick", "--only", "micro,step,epoch,iw,memory", "--skip-peers",
                                  "--backends", "numpy,cupy", "--batch-sizes", "2", "--data", "mnist",
                                  "--data-dir", str(data_dir), "--iw-samples", "3", "--iw-examples", "2",
                                  "--out", str(out)], capsys)
    assert status == 0
    report = json.loads((out / "bench.json").read_text())
    assert {"environment", "settings", "backends", "micro", "step", "epoch", "iw", "memory"} <= report.keys()
    assert report["epoch"]["examples"] == 300 and "median" in report["epoch"]["rows"]["GEMM floor"]
    assert report["iw"]["rows"]["minivae numpy"]["gflops"] > 0
    assert report["memory"]["rows"]["numpy"]["peak_rss_mib"] > 0
    assert report["memory"]["budget_mib"] == pytest.approx(report["memory"]["dataset_mib"] + 200e6 / 2**20)
    markdown = (out / "bench.md").read_text()
    assert markdown == printed.split("report written to ")[0]
    assert "| cupy | no GPU (cupy: " in markdown and "- minivae cupy: no GPU" in markdown
    assert "Load average (1 minute):" in markdown and "- Confinement: none asked (no --threads)" in markdown
    assert all(f"| {kernel} |" in markdown for kernel in KERNEL_NAMES)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "gpu_chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| minivae cupy captured | no GPU |" in (out / "gpu_chart.md").read_text()


def test_threads_confine_the_run_and_the_report_says_it_held(tmp_path):
    argv = [sys.executable, "-m", "minivae.cli", "bench", "--quick", "--only", "step", "--threads", "1",
            "--skip-peers", "--backends", "numpy", "--batch-sizes", "2", "--out", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)  # a process of its own: it is pinned
    report = json.loads((tmp_path / "bench.json").read_text())
    assert len(report["confinement"]["cores"]) == 1 and report["confinement"]["escaped"] == []
    assert f"- Confinement: held: all {report['confinement']['threads']} threads allowed only CPU " in result.stdout
    assert result.stdout.count("Confinement") == 1  # the whole run's, not the step's again with another count
    assert "(every thread checked after each step batch and at the end of the run)." in result.stdout
    assert "minivae numpy" in report["step"]["batches"]["2"]


def test_quick_run_writes_nothing_without_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, printed, _ = run_cli(["bench", "--quick", "--only", "micro", "--backends", "numpy",
                                  "--batch-sizes", "2"], capsys)
    assert status == 0 and "## Kernels" in printed and "report written" not in printed
    assert list(tmp_path.iterdir()) == []


def test_missing_data_skips_its_parts_with_the_reason(tmp_path, capsys):
    status, printed, _ = run_cli(["bench", "--quick", "--only", "epoch,iw", "--backends", "numpy",
                                  "--data", "mnist", "--data-dir", str(tmp_path)], capsys)
    assert status == 0
    assert printed.count("Skipped: ") == 2 and str(tmp_path) in printed


def test_drivers_run_from_the_repository_as_modules():
    for module in ("benchmarks.bench_overhead", "benchmarks.breakdown", "benchmarks.gpu_chart"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_rerun_runs_both_thread_settings_in_processes_of_their_own(tmp_path):
    argv = [sys.executable, "-m", "minivae.benchmarks.rerun", "--out", str(tmp_path), "--",
            "--quick", "--skip-peers", "--backends", "numpy", "--batch-sizes", "2"]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    text = (tmp_path / "rerun.md").read_text()
    assert text == result.stdout
    assert [line.split(":")[0] for line in text.splitlines() if line.endswith(" after.")] == ["- default", "- 1-thread"]
    default, one = (json.loads((tmp_path / setting / "bench.json").read_text()) for setting in ("default", "1-thread"))
    assert default["confinement"]["cores"] is None and len(one["confinement"]["cores"]) == 1
    assert "## 1-thread\n\n- Machine: " in text and "- Confinement: held: all " in text


def test_rerun_refuses_to_start_without_every_peer(monkeypatch, tmp_path, capsys):
    from minivae.benchmarks import rerun
    monkeypatch.setattr(rerun.peers, "available", lambda name: "jax not installed: pip install jax jaxlib"
                        if name == "jax jit" else None)
    assert rerun.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("rerun: rerun needs every peer installed (pip install -e '.[peers]'):"
                                       " jax jit: jax not installed: pip install jax jaxlib\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("other, threads, warned", [(1.5, None, True), (0.0, None, False), (1.5, 1, False)])
def test_bench_warns_of_other_work_only_where_its_threads_would_spin(monkeypatch, capsys, other, threads, warned):
    class Use:
        def other_cores(self):
            return other
    monkeypatch.setattr(harness, "MachineUse", Use)
    suite._warn_if_busy(threads, seconds=0)
    assert ("other work keeps 1.5 of" in capsys.readouterr().err) == warned
