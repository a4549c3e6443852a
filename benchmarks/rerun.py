"""The step benchmark as RESULTS.md reports it: both thread settings, batches 32, 128 and 512, every peer.

    python -m minivae.benchmarks.rerun --out results/rerun [-- extra minivae bench options]

Runs ``minivae bench --only step --batch-sizes 32,128,512`` twice, each in a
process of its own, one after the other: with the libraries' default threads
(every core), then with ``--threads 1`` (every thread pinned to one core from
that process's start). It refuses to start unless PyTorch, JAX and autograd all
import (unless ``--skip-peers`` is passed on). Writes ``DIR/default/`` and
``DIR/1-thread/`` (bench.json, bench.md, bench.png) and ``DIR/rerun.md``: the
commit, the load average before and after each run, then both reports, each
with its peak, its confinement check and its verdicts. Options after ``--``
go to both runs (e.g. ``--quick``, or ``--backends numba``).
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

from minivae.errors import MinivaeError

from . import harness, peers
from .bench_step import BATCH_SIZES

SETTINGS = {"default": [], "1-thread": ["--threads", "1"]}  # directory: the options that make the setting


def missing_peers():
    """One line per peer framework that cannot run here (empty when all can)."""
    return [f"{name}: {why}" for name in peers.PEERS if (why := peers.available(name))]


def bench_argv(out, setting, extra):
    """The ``minivae bench`` command line of one setting, writing to ``out``."""
    return [sys.executable, "-m", "minivae.cli", "bench", "--only", "step",
            "--batch-sizes", ",".join(map(str, BATCH_SIZES)), *SETTINGS[setting], *extra, "--out", str(out)]


def _loads(load):
    return " ".join(f"{value:.2f}" for value in load)


def _demoted(markdown):
    """A bench report without its title, every other heading one level down, to sit under a setting's heading."""
    body = markdown.split("\n", 1)[1].lstrip("\n")
    return "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())


def run(out, extra):
    """Both settings, one process each; returns the text of ``rerun.md``."""
    if "--skip-peers" not in extra and (missing := missing_peers()):
        raise MinivaeError("rerun needs every peer installed (pip install -e '.[peers]'): " + "; ".join(missing))
    lines = ["# Step benchmark, both thread settings", "",
             f"`python -m minivae.benchmarks.rerun {' '.join(['--out', str(out), *(['--', *extra] if extra else [])])}`"
             f" at commit {harness.git_commit()}; load average (1, 5, 15 minutes) around each run:", ""]
    reports = []
    for setting in SETTINGS:
        directory = Path(out) / setting
        before = os.getloadavg()
        status = subprocess.run(bench_argv(directory, setting, extra), stdout=subprocess.DEVNULL).returncode
        if status:
            raise MinivaeError(f"minivae bench ({setting}) failed with status {status}; its message is above")
        lines.append(f"- {setting}: {_loads(before)} before, {_loads(os.getloadavg())} after.")
        reports += ["", f"## {setting}", "", _demoted((directory / "bench.md").read_text(encoding="utf-8"))]
    return "\n".join(lines + reports).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivae.benchmarks.rerun", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for default/, 1-thread/ and rerun.md")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: options for both minivae bench runs")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    try:
        text = run(args.out, extra)
    except MinivaeError as error:
        print(f"rerun: {error}", file=sys.stderr)
        return 2
    Path(args.out, "rerun.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
