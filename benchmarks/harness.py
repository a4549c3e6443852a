"""Trustworthy timing: interleaved rounds, robust statistics, the environment, reports.

Candidates are zero-argument callables that do one unit of work and return
only when it is done (GPU work included: wrap it with ``synchronized``).
``compare`` times them side by side: every round takes one sample of every
candidate, in an order shuffled per round by a seeded generator, so a slow
spell on a shared machine lands on all of them rather than on whichever ran
last. ``measure`` is the one-candidate case.

A report is a plain dict, written as JSON (all samples and the environment),
a Markdown table and a bar chart of step time as multiples of the GEMM floor.
Each timed row is judged by ``verdicts.judge_rows`` (its products' rate, its
floor multiple with an interval, "invalid" where impossible); "confinement"
is ``confinement.check``'s result, "comparisons" ``verdicts.compare_batches``::

    {"environment": {...}, "settings": {"rounds": 7, "threads": None, ...},
     "peak_gflops": 150.0, "floor": "GEMM floor", "confinement": {...},
     "batches": {"128": {"GEMM floor": Stats.to_dict() | {"gflops", "floor_ratio"},
                         "torch eager": Stats.to_dict() | {"gflops", "floor_ratio", "invalid"?},
                         "cupy": {"skipped": "no GPU"}}},
     "comparisons": {"minivae numba": {"jax jit": {"128": "level"}}}}
"""
import gc
import json
import math
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import datetime, timezone

from . import confinement, verdicts

MIB = 2**20
VERSIONED = ("numpy", "scipy", "numba", "threadpoolctl", "torch", "jax", "jaxlib", "autograd", "cupy-cuda12x",
             "cupy-cuda13x", "nvmath-python", "numba-cuda", "matplotlib")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "XLA_FLAGS", "NUMBA_ENABLE_CUDASIM")


class Unavailable(Exception):
    """A candidate cannot run here; the message says why in one line."""


# ----- Timing -----

@dataclass
class Stats:
    """Per-call times of one candidate, in seconds, one sample per round."""

    samples: list
    number: int  # calls timed back to back for each sample

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def quartiles(self):
        """(q1, q3); both equal the sample when there is only one."""
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def iqr(self):
        q1, q3 = self.quartiles
        return q3 - q1

    @property
    def min(self):
        return min(self.samples)

    def to_dict(self):
        """The summary and every sample, JSON-ready."""
        q1, q3 = self.quartiles
        return {"median": self.median, "q1": q1, "q3": q3, "iqr": self.iqr,
                "min": self.min, "number": self.number, "samples": list(self.samples)}


def _time(fn, number, clock):
    """Seconds per call of ``number`` back-to-back calls of ``fn``."""
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number


def _calls_per_sample(fn, warmup, min_time, clock):
    """Call ``fn`` ``warmup`` times, then return how many calls make a sample last ``min_time``.

    With ``min_time`` set, one more (timed) call estimates the time of a call.
    """
    for _ in range(warmup):
        fn()
    if min_time <= 0:
        return 1
    return max(1, math.ceil(min_time / max(_time(fn, 1, clock), 1e-9)))


def compare(candidates, rounds=7, warmup=1, min_time=0.0, seed=0, clock=time.perf_counter):
    """Time ``candidates`` ({name: fn}) interleaved; return {name: Stats}.

    Each candidate is warmed up (``warmup`` calls) and calibrated so that one
    sample lasts at least ``min_time`` seconds; then each of ``rounds`` rounds
    takes one sample of every candidate, in an order shuffled per round by
    ``random.Random(seed)``. ``clock`` is injectable for tests. The garbage
    collector stays on: collecting is part of what a training step costs.
    """
    order = list(candidates)
    number = {name: _calls_per_sample(candidates[name], warmup, min_time, clock) for name in order}
    samples = {name: [] for name in order}
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            samples[name].append(_time(candidates[name], number[name], clock))
    return {name: Stats(samples[name], number[name]) for name in candidates}


def measure(fn, warmup=1, repeat=5, min_time=0.0, clock=time.perf_counter):
    """``repeat`` samples of ``fn``'s per-call time in seconds (see ``compare``)."""
    return compare({"fn": fn}, rounds=repeat, warmup=warmup, min_time=min_time, clock=clock)["fn"].samples


# ----- Memory -----

def peak_rss_mib():
    """This process's resident-set high-water mark so far, in MiB (all allocators)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


# Spawns argv[2:], waits, writes "exit-status max-rss" to the file argv[1]. See ``child_peak_rss_mib``.
_RSS_LAUNCHER = """\
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def child_peak_rss_mib(argv, **popen):
    """Run ``argv`` to completion: (exit status, its resident-set high-water mark in MiB).

    A process's max RSS starts at the high-water mark of the process that
    spawned it (Linux carries the pre-``exec`` memory's peak into the new
    program's), so spawning straight from a benchmark holding a dataset and
    two frameworks would report the benchmark's size. A small Python
    launcher spawns ``argv`` instead and reads its usage with ``os.wait4``
    (that one child, unlike ``getrusage(RUSAGE_CHILDREN)``, the maximum over
    every child ever waited for). ``popen`` goes to ``subprocess.run`` (e.g.
    ``stdout=subprocess.DEVNULL``); the child inherits its streams.
    """
    with tempfile.TemporaryDirectory() as scratch:
        result = os.path.join(scratch, "usage")
        subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, result, *argv], check=True, **popen)
        with open(result, encoding="utf-8") as usage:
            status, peak = map(int, usage.read().split())
    return status, peak / MIB if sys.platform == "darwin" else peak / 1024


def traced_peak_mib(fn):
    """Peak memory allocated during one call of ``fn``, in MiB, as tracemalloc sees it.

    Meaningful for NumPy code (NumPy reports its buffers to tracemalloc);
    PyTorch's and XLA's allocators are invisible to it.
    """
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


# ----- GPU -----

def gpu_name():
    """The first CUDA device's name, or None where there is none.

    Asks ``nvidia-smi`` and imports nothing, so probing never fixes numba's
    configuration (``NUMBA_ENABLE_CUDASIM`` must be set before numba loads).
    """
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    names = result.stdout.strip().splitlines()
    return names[0] if names else None


def synchronized(fn, runtime):
    """``fn`` followed by a device synchronize, so timing it includes the GPU work.

    ``runtime`` is ``"cupy"`` (``cupy.cuda.Device().synchronize()``) or
    ``"numba"`` (``numba.cuda.synchronize()``). Use only where a GPU exists.
    """
    if runtime == "cupy":
        import cupy
        synchronize = cupy.cuda.Device().synchronize
    elif runtime == "numba":
        from numba import cuda
        synchronize = cuda.synchronize
    else:
        raise ValueError(f"unknown GPU runtime {runtime!r}; choose 'cupy' or 'numba'")

    def run_and_wait():
        fn()
        synchronize()
    return run_and_wait


# ----- Environment -----

def _cpu_model():
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    """``git describe --always --dirty`` of the checkout holding this file, or None outside one."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                timeout=30, check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _thread_pools():
    """BLAS/OpenMP libraries loaded in this process and their thread counts."""
    from threadpoolctl import threadpool_info
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "threading_layer", "architecture")
    return [{key: info.get(key) for key in keys} for info in threadpool_info()]


# ----- Other work on the machine while a benchmark runs -----

BUSY_OTHER_CORES = 0.25  # other work keeping more cores than this busy, on average, makes a run "busy"


class MachineUse:
    """How many cores other work kept busy while a benchmark ran: the machine's busy CPU time less its own.

    Linux's /proc/stat counts every CPU's busy time (steal too: time the
    hypervisor gave to other machines); ``os.times`` this process's threads
    and its waited-for children. The load average cannot tell the two apart:
    it counts the benchmark's own threads, and lags a minute behind.
    """

    def __init__(self):
        self.started = (_machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter())

    def other_cores(self):
        """Other work's average busy cores since this was made (None where /proc/stat is missing)."""
        machine, own, wall = (_machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter())
        if machine is None or self.started[0] is None:
            return None
        return max(0.0, ((machine - self.started[0]) - (own - self.started[1])) / (wall - self.started[2]))


def _machine_busy_seconds():
    """CPU seconds every core spent busy since boot: user, nice, system, irq, softirq, steal (not idle, iowait)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _load_words(env):
    """Other work during the run where it was measured, else the load average."""
    if env.get("other_cores") is not None:
        return f"other work {env['other_cores']:.2f} cores"
    return f"load average {env['load_average'][0]:.1f}"


def was_busy(env):
    """Whether other work shared the machine: measured (``other_cores``) where it was, else the load average."""
    if env.get("other_cores") is not None:
        return env["other_cores"] > BUSY_OTHER_CORES
    return env["load_average"][0] > env["cores"] / 2


def environment():
    """Where the numbers were measured: machine, load, versions, BLAS and threads.

    Call it after the benchmark ran: thread pools are listed only once the
    libraries that own them (NumPy's BLAS, torch's OpenMP) are loaded.
    """
    from minivae.versions import installed_version
    versions = {name: installed_version(name) for name in VERSIONED}
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": git_commit(),
        "versions": {name: version for name, version in versions.items() if version},
        "thread_pools": _thread_pools(),
        "torch_threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
        "numba_threads": sys.modules["numba"].get_num_threads() if "numba" in sys.modules else None,
        "thread_variables": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
        "gpu": gpu_name() or "no GPU",
        "peak_rss_mib": peak_rss_mib(),
    }


# ----- Reports -----

def _timed_rows(report, batch):
    """{name: stats dict} of the rows of ``batch`` that ran (not skipped)."""
    return {name: row for name, row in report["batches"][batch].items() if "median" in row}


def write_json(report, path):
    """The whole report, every sample included."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=1)
        out.write("\n")


def format_duration(seconds):
    """'12.3 us', '4.56 ms' or '7.89 s': three significant digits in the largest unit below the value (a
    difference of two times may be negative: '-142 us')."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _cell(row):
    """'2.41 ms (1.90x [1.85, 1.97], 68 GFLOP/s)': median, floor multiple and its interval, products' rate.

    A row faster than the machine (or the cuBLAS floor) allows reads '**invalid** ...'.
    """
    ratio = row["floor_ratio"]
    rate = f", {row['gflops']:.0f} GFLOP/s" if "gflops" in row else ""
    cell = (f"{format_duration(row['median'])} ({ratio['ratio']:.2f}x"
            f" [{ratio['low']:.2f}, {ratio['high']:.2f}]{rate})")
    return f"**invalid** {cell}" if row.get("invalid") else cell


def floor_table(columns):
    """(table, notes): Markdown lines, one row per implementation and one column per ``{header: {name: row}}``.

    Each cell is ``_cell`` of a row judged by ``verdicts.judge_rows``; a
    skipped row reads "skipped", and ``notes`` say why ("- name: reason"),
    and why an invalid cell is invalid, to go below the table.
    """
    names = list(dict.fromkeys(name for rows in columns.values() for name in rows))
    lines = ["| implementation | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    notes = {}
    for name in names:
        cells = []
        for header, rows in columns.items():
            row = rows.get(name, {"skipped": "not run"})
            if "median" in row:
                cells.append(_cell(row))
                if row.get("invalid"):
                    notes[f"{name}, {header}"] = "**invalid**: " + row["invalid"]
            else:
                cells.append("skipped")
                notes[name] = row["skipped"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, [f"- {name}: {note}" for name, note in notes.items()]


def verdict_lines(report):
    """The comparisons of minivae's rows with the others', batch by batch, as a table and one line per pair."""
    comparisons = report.get("comparisons") or {}
    if not comparisons:
        return []
    batches = list(report["batches"])
    lines = ["| minivae vs | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---" * (len(batches) + 1) + "|"]
    for mine, others in comparisons.items():
        for other, cells in others.items():
            lines.append(f"| {mine} vs {other} | " + " | ".join(cells.get(b, "not run") for b in batches) + " |")
    rule = (f"Ahead or behind only where the two 95% intervals do not overlap, else level; invalid where either"
            f" row is physically impossible; no verdict from fewer than {verdicts.MIN_ROUNDS} rounds.")
    return [*lines, "", rule, "", *(f"- {line}" for line in verdicts.summary_lines(comparisons))]


def markdown_table(report, with_confinement=True):
    """Step time per implementation and batch size, floor multiples with intervals, the machine, the verdicts.

    ``with_confinement``: the step's own confinement check (after each batch);
    ``minivae bench``'s report gives one line for the whole run instead.
    """
    lines, notes = floor_table({f"batch {b}": rows for b, rows in report["batches"].items()})
    env = report["environment"]
    legend = (f"Median per step; Nx [low, high] = multiple of the {report['floor']} at the same batch size (the"
              " median of the per-round ratios) and its 95% bootstrap interval over the interleaved rounds;"
              f" GFLOP/s = the rate of the step's products ({report['flops_per_example'] / 1e6:.2f} MFLOP per"
              f" example); **invalid** = faster than {verdicts.PEAK_MARGIN:.2f}x the peak allows (an eager GPU"
              f" step: faster than the cuBLAS floor / {verdicts.PEAK_MARGIN:.2f}).")
    machine = (f"Machine: {env['cpu']}, {env['cores']} cores, load average {env['load_average'][0]:.2f},"
               f" threads {report['settings'].get('threads') or 'as the libraries choose'};"
               f" peak float32 GEMM {report['peak_gflops']:.0f} GFLOP/s; GPU: {env['gpu']}.")
    lines += ["", legend, machine]
    if with_confinement:
        lines.append(f"Confinement: {confinement.describe(report['confinement'])}.")
    if was_busy(env):
        lines.append("Warning: the machine was busy with other work; absolute times are inflated"
                     " and noisy, the interleaved ratios less so.")
    verdict = verdict_lines(report)
    return "\n".join(lines + notes + ([""] + verdict if verdict else [])) + "\n"


def write_chart(report, path):
    """Grouped bars: each implementation's step time as a multiple of the GEMM floor."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    batches = list(report["batches"])
    names = [name for name in dict.fromkeys(n for b in batches for n in _timed_rows(report, b))
             if name != report["floor"]]
    width = 0.8 / len(batches)
    figure, axes = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4))
    for index, batch in enumerate(batches):
        rows = _timed_rows(report, batch)
        shown = [name for name in names if name in rows]
        ratios = [rows[name]["floor_ratio"]["ratio"] for name in shown]
        errors = [[rows[n]["floor_ratio"]["ratio"] - rows[n]["floor_ratio"]["low"] for n in shown],
                  [rows[n]["floor_ratio"]["high"] - rows[n]["floor_ratio"]["ratio"] for n in shown]]
        positions = [names.index(name) + (index - (len(batches) - 1) / 2) * width for name in shown]
        axes.bar(positions, ratios, width, yerr=errors, capsize=2, label=f"batch {batch}")
        for position, name in zip(positions, shown):
            if rows[name].get("invalid"):
                axes.annotate("invalid", (position, rows[name]["floor_ratio"]["high"]), ha="center", va="bottom",
                              rotation=90, fontsize=7, color="red")
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1, label=report["floor"])
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel("step time / GEMM floor")
    env = report["environment"]
    axes.set_title(f"VAE training step on {env['cpu']} ({env['cores']} cores, {_load_words(env)})", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
