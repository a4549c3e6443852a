"""Which figures stand: rows faster than the machine allows, intervals on ratios, ahead, behind or level.

- **Physically possible.** A step does at least its matrix products, ``flops``
  of them; at the machine's peak float32 GEMM rate (measured in the same run,
  under the same confinement) they take ``flops / peak`` seconds. A row
  faster than that, with a ``PEAK_MARGIN`` for the peak's own noise (the best
  of a few samples against a row's median), measured something else: more
  cores than it claims, or work not done. It is marked invalid and never
  counted as a win. On a GPU the bound is the ``cuBLAS floor``, the step's
  products alone, each its own call from the host: a GPU step that also
  issues every product as its own call (an eager one) and takes less than
  that floor's median, with the same margin, is marked invalid too. A
  captured graph's replay or a jitted step launches its work at once, without
  the floor's per-call host time (and JAX multiplies float32 in TF32 by
  default on Ampere and later GPUs), so the floor bounds neither.
- **An interval on every ratio.** Rounds are interleaved, so round i of a row
  and round i of the floor ran side by side: the row's multiple of the floor
  is the median of the per-round ratios, with a 95% percentile-bootstrap
  interval from resampling whole rounds.
- **Winners only where the data says so.** One row is ahead of another when
  its interval lies wholly below the other's, behind when wholly above, and
  level when the two overlap.
"""
import numpy as np

PEAK_MARGIN = 1.10
CONFIDENCE = 0.95
RESAMPLES = 2000
MIN_ROUNDS = 5  # fewer rounds give no verdict


def products_gflops(flops, seconds):
    """The rate at which ``seconds`` would have run ``flops`` of products, in GFLOP/s."""
    return flops / seconds / 1e9


def impossible(gflops, peak):
    """Why a row running its products at ``gflops`` is physically impossible under ``peak``, or None."""
    if gflops <= PEAK_MARGIN * peak:
        return None
    return (f"its products would run at {gflops:.0f} GFLOP/s, above the measured peak"
            f" {peak:.0f} GFLOP/s (x{PEAK_MARGIN:.2f} margin)")


def below_floor(seconds, floor_seconds, floor):
    """Why a row whose median is ``seconds`` cannot beat ``floor``'s median ``floor_seconds`` (its own products,
    issued the same way), or None."""
    if seconds * PEAK_MARGIN >= floor_seconds:
        return None
    return (f"its median {seconds * 1e3:.3g} ms is below the {floor}'s {floor_seconds * 1e3:.3g} ms, its"
            f" products alone (x{PEAK_MARGIN:.2f} margin)")


def floor_ratio(samples, floor_samples, confidence=CONFIDENCE, resamples=RESAMPLES, seed=0):
    """{"ratio", "low", "high", "rounds"}: the median per-round ratio sample / floor and its bootstrap interval."""
    ratios = np.asarray(samples, float) / np.asarray(floor_samples, float)
    picks = np.random.default_rng(seed).integers(0, len(ratios), (resamples, len(ratios)))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.median(ratios[picks], axis=1), [tail, 1 - tail])
    return {"ratio": float(np.median(ratios)), "low": float(low), "high": float(high), "rounds": len(ratios)}


def verdict(ours, theirs):
    """'ahead', 'behind', 'level', 'invalid' (either row impossible) or 'too few rounds': ours against theirs."""
    if ours.get("invalid") or theirs.get("invalid"):
        return "invalid"
    a, b = ours["floor_ratio"], theirs["floor_ratio"]
    if min(a["rounds"], b["rounds"]) < MIN_ROUNDS:
        return "too few rounds"
    if a["high"] < b["low"]:
        return "ahead"
    if a["low"] > b["high"]:
        return "behind"
    return "level"


def judge_rows(rows, floor, flops, peak, cpu_rows, gpu_floor=None, gpu_rows=()):
    """Add to each timed row its products' rate, its floor ratio with interval, and "invalid" where impossible.

    ``rows``: {name: stats dict or {"skipped": why}}; ``cpu_rows``: the names
    held to the CPU's ``peak`` (a GPU row is not); ``gpu_rows``: the names
    held to the median of row ``gpu_floor`` where it was timed.
    """
    gpu_floor_seconds = rows.get(gpu_floor, {}).get("median")
    for name, row in rows.items():
        if "median" not in row:
            continue
        row["gflops"] = products_gflops(flops, row["median"])
        row["floor_ratio"] = floor_ratio(row["samples"], rows[floor]["samples"])
        row.pop("invalid", None)
        if name in cpu_rows:
            why = impossible(row["gflops"], peak)
        elif name in gpu_rows and gpu_floor_seconds:
            why = below_floor(row["median"], gpu_floor_seconds, gpu_floor)
        else:
            why = None
        if why:
            row["invalid"] = why


def compare_batches(batches, ours, theirs):
    """{our row: {their row: {batch: verdict}}} for every batch where both ran."""
    table = {}
    for mine in ours:
        for other in theirs:
            cells = {batch: verdict(rows[mine], rows[other]) for batch, rows in batches.items()
                     if "median" in rows.get(mine, {}) and "median" in rows.get(other, {})}
            if cells:
                table.setdefault(mine, {})[other] = cells
    return table


def _batches(batches):
    """'32', '32 and 128', '32, 128 and 512'."""
    return batches[0] if len(batches) == 1 else ", ".join(batches[:-1]) + " and " + batches[-1]


def summary_lines(comparisons):
    """'minivae numba vs jax jit: level at batch 32 and 128, ahead at batch 512.' per pair."""
    lines = []
    for mine, others in comparisons.items():
        for other, cells in others.items():
            grouped = {}
            for batch, said in cells.items():
                grouped.setdefault(said, []).append(batch)
            parts = [f"{said} at batch {_batches(batches)}" for said, batches in grouped.items()]
            lines.append(f"{mine} vs {other}: {', '.join(parts)}.")
    return lines
