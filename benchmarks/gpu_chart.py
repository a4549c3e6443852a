"""Where the GPU starts to pay: training-step time against batch size, numba on the CPU beside cupy on the GPU.

    python -m minivae.benchmarks.gpu_chart BENCH_JSON [--out DIR]

From the step rows of a ``minivae bench`` report (the ``bench.json`` that
``minivae bench --only step --out DIR`` writes), draws the median time of one
training step of the 784-400-20 VAE at each batch size, on log-log axes, for

- ``minivae numba``: the CPU backend, beside the CPU's ``GEMM floor`` (dashed);
- ``minivae cupy``: the GPU backend, every step eager;
- ``minivae cupy captured``: the same step captured once as a CUDA graph and replayed;
- ``cuBLAS floor``: the step's 11 products alone by cuBLAS, each its own call
  (dashed): no eager GPU step can be faster (one that is is marked invalid:
  ``verdicts.judge_rows``); a captured replay launches its work at once, so
  at small batches it may be;

and writes ``gpu_chart.png`` and ``gpu_chart.md`` (the same medians as a
table, with the reason wherever a row did not run: "no GPU" on a machine
without one, and "**invalid**" before an impossible median), and the
smallest batch at which a valid GPU step beats numba's.
``minivae bench`` draws it whenever the step part runs with ``--out``;
``--batch-sizes 32,128,1024,8192`` spans the range.
"""
import argparse
import json
import sys
from pathlib import Path

from . import harness

CPU, GPU = "minivae numba", ("minivae cupy", "minivae cupy captured")
FLOORS = ("GEMM floor", "cuBLAS floor")
LINES = (CPU, *GPU, *FLOORS)


def step_batches(report):
    """{batch size: {row name: row}} from a ``minivae bench`` report's step part."""
    batches = report["step"]["batches"]
    return {int(batch): rows for batch, rows in sorted(batches.items(), key=lambda item: int(item[0]))}


def medians(batches):
    """{line: {batch size: median seconds}} of every line of the chart that ran at some batch size."""
    return {name: {batch: rows[name]["median"] for batch, rows in batches.items() if "median" in rows.get(name, {})}
            for name in LINES}


def where_the_gpu_pays(batches):
    """(the smallest batch at which a GPU step not marked invalid is faster than numba's, that step's row), or None."""
    for batch, rows in batches.items():
        cpu = rows.get(CPU, {}).get("median")
        faster = [name for name in GPU if cpu and not rows.get(name, {}).get("invalid")
                  and rows.get(name, {}).get("median", float("inf")) < cpu]
        if faster:
            return batch, min(faster, key=lambda name: rows[name]["median"])
    return None


def _cell(row):
    """'1.2 ms', '**invalid** 80 us' or why the row did not run."""
    if "median" not in row:
        return row["skipped"]
    return ("**invalid** " if row.get("invalid") else "") + harness.format_duration(row["median"])


def markdown(batches):
    """The medians as a table, a row per line of the chart, a column per batch size; where the GPU starts to pay."""
    lines = ["| step | " + " | ".join(f"batch {batch}" for batch in batches) + " |", "|---" * (len(batches) + 1) + "|"]
    for name in LINES:
        cells = [_cell(rows.get(name, {"skipped": "not run"})) for rows in batches.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pays = where_the_gpu_pays(batches)
    verdict = (f"A GPU step first beats numba's at batch {pays[0]} ({pays[1]})." if pays else
               "No GPU step beat numba's at these batch sizes (or none ran: see the cells).")
    return "\n".join(lines + ["", verdict]) + "\n"


def draw(batches, path, title):
    """The chart: median step time against batch size, log-log, one line per step; a line that never ran says why."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in medians(batches).items():
        if points:
            axes.plot(list(points), [seconds * 1e3 for seconds in points.values()], marker="o",
                      linestyle="--" if name in FLOORS else "-", label=name)
        else:
            why = next((rows[name]["skipped"] for rows in batches.values() if name in rows), "not run")
            axes.plot([], [], linestyle="none", label=f"{name}: {why[:40]}")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda milliseconds, _: f"{milliseconds:g}"))
    axes.yaxis.set_minor_formatter(FuncFormatter(lambda milliseconds, _: ""))
    axes.set_xticks(list(batches), [str(batch) for batch in batches])
    axes.set_xticks([], minor=True)
    axes.set_xlabel("batch size (examples per step)")
    axes.set_ylabel("median time per training step (ms)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_chart(report, out):
    """gpu_chart.png and gpu_chart.md in ``out`` from ``report``'s step rows; returns their paths."""
    batches = step_batches(report)
    env = report["environment"]
    png, md = Path(out) / "gpu_chart.png", Path(out) / "gpu_chart.md"
    draw(batches, png, f"VAE training step: {env['cpu']} ({env['cores']} cores) and GPU: {env['gpu']}")
    md.write_text(markdown(batches), encoding="utf-8")
    return png, md


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivae.benchmarks.gpu_chart", description=__doc__.split("\n")[0])
    parser.add_argument("report", help="bench.json of minivae bench --only step --out DIR")
    parser.add_argument("--out", default=None, help="where gpu_chart.png and gpu_chart.md go (default: beside it)")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    if "step" not in report:
        print(f"gpu_chart: {args.report} has no step part: run minivae bench --only step --out DIR", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.report).parent)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_chart(report, out)
    print(paths[1].read_text(encoding="utf-8"), end="")
    print("written to " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
