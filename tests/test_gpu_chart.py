"""The CPU-vs-GPU chart: step time against batch size from a bench report, with or without the GPU rows."""
import json

from benchmarks import gpu_chart

PNG = b"\x89PNG\r\n\x1a\n"


def row(milliseconds):
    return {"median": milliseconds / 1e3}


def bench_report(gpu_rows):
    """A ``minivae bench`` report's step part at batch 32 to 8192: numba's step grows with the batch, a GPU's barely."""
    batches = {}
    for batch in (32, 128, 512, 2048, 8192):
        rows = {"minivae numba": row(batch / 40), "GEMM floor": row(batch / 60), "minivae numpy": row(batch / 20)}
        rows |= {name: row(2 + batch / 4000) if gpu_rows else {"skipped": "no GPU"}
                 for name in ("minivae cupy", "cuBLAS floor")}
        rows["minivae cupy captured"] = row(0.5 + batch / 4000) if gpu_rows else {"skipped": "no GPU"}
        batches[str(batch)] = rows
    env = {"cpu": "a test CPU", "cores": 16, "gpu": "a test GPU" if gpu_rows else "no GPU"}
    return {"environment": env, "step": {"batches": batches}}


def test_without_a_gpu_the_gpu_rows_say_so(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench_report(gpu_rows=False)))
    assert gpu_chart.main([str(path)]) == 0
    table = (tmp_path / "gpu_chart.md").read_text()
    assert "| minivae numba | 800 us | 3.2 ms | 12.8 ms | 51.2 ms | 205 ms |" in table
    assert "| minivae cupy captured | no GPU | no GPU | no GPU | no GPU | no GPU |" in table
    assert "No GPU step beat numba's at these batch sizes (or none ran: see the cells)." in table
    assert (tmp_path / "gpu_chart.png").read_bytes()[:8] == PNG
    assert capsys.readouterr().out.startswith("| step | batch 32 | batch 128 |")


def test_with_a_gpu_the_chart_says_where_it_starts_to_pay(tmp_path):
    """numba takes batch / 40 ms, the captured step 0.5 + batch / 4000 ms: the captured one is faster from 32 on,
    the eager one (2 ms + ...) only from 128 on."""
    batches = gpu_chart.step_batches(bench_report(gpu_rows=True))
    assert gpu_chart.where_the_gpu_pays(batches) == (32, "minivae cupy captured")
    del batches[32]["minivae cupy captured"]
    assert gpu_chart.where_the_gpu_pays(batches) == (128, "minivae cupy captured")
    png, md = gpu_chart.write_chart(bench_report(gpu_rows=True), tmp_path)
    assert png.read_bytes()[:8] == PNG
    assert "A GPU step first beats numba's at batch 32 (minivae cupy captured)." in md.read_text()


def test_a_gpu_step_marked_invalid_says_so_and_never_pays():
    report = bench_report(gpu_rows=True)
    for rows in report["step"]["batches"].values():
        rows["minivae cupy captured"]["invalid"] = "its median is below the cuBLAS floor's"
    batches = gpu_chart.step_batches(report)
    assert gpu_chart.where_the_gpu_pays(batches) == (128, "minivae cupy")  # the eager step's 2 ms + ... from 128
    assert "| minivae cupy captured | **invalid** 508 us | **invalid** 532 us |" in gpu_chart.markdown(batches)


def test_a_report_without_the_step_part_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"environment": {}, "micro": []}))
    assert gpu_chart.main([str(path)]) == 2
    assert capsys.readouterr().err == (f"gpu_chart: {path} has no step part: run minivae bench --only step"
                                       " --out DIR\n")
    assert list(tmp_path.iterdir()) == [path]
