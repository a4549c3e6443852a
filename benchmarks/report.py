"""``minivae bench``'s report as Markdown: the machine, the confinement check, then each part that ran.

The report is ``suite.run``'s dict; ``markdown`` writes it, ``write_report``
saves it (JSON with every sample, the Markdown, the step's charts).
"""
from . import confinement, gemm_floor, gpu_chart, harness, micro, verdicts
from .bench_step import FLOOR


def _other_work(env):
    if env.get("other_cores") is None:
        return "not measured (no /proc/stat)"
    return (f"{env['other_cores']:.2f} cores busy on average during the run (the machine's busy CPU time, from"
            " /proc/stat, less this process's own)")


def _thread_pools(env):
    """'openblas 0.3.27 (2 threads), numba 2 threads': the pools that ran the work."""
    pools = [f"{pool['prefix']} {pool['version'] or ''}".rstrip() + f" ({pool['num_threads']} threads)"
             for pool in env["thread_pools"]]
    pools += [f"{name} {env[key]} threads" for name, key in (("numba", "numba_threads"), ("torch", "torch_threads"))
              if env.get(key)]
    return ", ".join(pools) or "none loaded"


def machine_lines(report):
    """Where and how the numbers were measured, the load average before and after, and a warning if busy."""
    env, settings = report["environment"], report["settings"]
    before, after = env["load_average_before"][0], env["load_average"][0]
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    lines = [(f"- Machine: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable), {env['platform']},"
              f" Python {env['python']}; GPU: {env['gpu']}."),
             f"- Libraries: {versions}.",
             f"- Thread pools: {_thread_pools(env)}; --threads {settings['threads'] or 'not given'}.",
             (f"- Confinement: {confinement.describe(report['confinement'])} (every thread checked"
              f"{' after each step batch and' if 'step' in report else ''} at the end of the run)."),
             (f"- Peak float32 GEMM: {report['peak_gflops']:.0f} GFLOP/s, {env['usable_cores']} core(s) x"
              f" {report['peak_gflops'] / env['usable_cores']:.0f} (the best 2048-cubed NumPy product on one thread,"
              " by its CPU time, at start and end)."),
             f"- Load average (1 minute): {before:.2f} before, {after:.2f} after, on {env['cores']} cores"
             " (the run's own threads count in it).",
             f"- Other work: {_other_work(env)}.",
             (f"- Run: {'quick' if settings['quick'] else 'full'}, parts {', '.join(settings['parts'])},"
              f" {report['seconds']:.0f} s, finished {env['time']}, commit {env['commit']}.")]
    if harness.was_busy(env):
        lines.append("- **The machine was busy with other work**: absolute times are inflated and noisy, the"
                     " interleaved ratios less so." + ("" if settings["threads"] else
                     " With the default thread counts, BLAS, OpenMP and Numba threads spin waiting for descheduled"
                     " siblings. Rerun when it is idle, or with --threads 1."))
    backends = ["| backend | status |", "|---|---|"]
    backends += [f"| {name} | {why or 'timed'} |" for name, why in report["backends"].items()]
    return lines + [""] + backends


def _iw_lines(iw, peak):
    """The IW table; only a CPU backend's row is held to the CPU's ``peak`` (share, **invalid**)."""
    lines = ["| implementation | time | GFLOP/s | share of peak |", "|---|---|---|---|"]
    for name, row in iw["rows"].items():
        if "median" not in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | |")
            continue
        on_cpu = name.removeprefix("minivae ") not in micro.GPU_RUNTIMES
        invalid = "**invalid** " if on_cpu and verdicts.impossible(row["gflops"], peak) else ""
        share = f"{100 * row['gflops'] / peak:.0f}%" if on_cpu else "GPU: not held to the CPU peak"
        lines.append(f"| {name} | {invalid}{harness.format_duration(row['median'])} (IQR"
                     f" {100 * row['iqr'] / row['median']:.0f}%) | {row['gflops']:.1f} | {share} |")
    legend = (f"GFLOP/s: the products alone ({gemm_floor.iw_flops(iw['examples'], iw['k']) / 1e12:.2f} TFLOP:"
              " encode each image once, decode K samples); share of the CPU's peak GEMM rate above (CPU rows"
              f" only); **invalid**: a CPU row faster than {verdicts.PEAK_MARGIN:.2f}x the peak allows.")
    return [*lines, "", legend]


def _epoch_lines(epoch):
    table, notes = harness.floor_table({"one epoch": epoch["rows"]})
    legend = (f"Nx [low, high] = multiple of the {FLOOR} of the same {epoch['examples']:,} images (the step's"
              f" products for every batch of {epoch['batch_size']}) and its 95% bootstrap interval over the rounds.")
    return [*table, "", legend, *notes]


def _memory_lines(memory):
    allowance = memory["allowance_mib"]
    budget = (f"Dataset in float32: {memory['dataset_mib']:.1f} MiB; budget: dataset + "
              f"{allowance * harness.MIB / 1e6:.0f} MB ({allowance:.1f} MiB) = {memory['budget_mib']:.1f} MiB"
              " (MB = 10^6 bytes, MiB = 2^20 bytes).")
    lines = [budget, "", "| backend | peak RSS of `minivae train --epochs 1` | within budget |", "|---|---|---|"]
    for name, row in memory["rows"].items():
        if "peak_rss_mib" in row:
            spare = memory["budget_mib"] - row["peak_rss_mib"]
            within = f"yes ({spare:.0f} MiB to spare)" if spare >= 0 else f"**no** ({-spare:.0f} MiB over)"
            lines.append(f"| {name} | {row['peak_rss_mib']:.0f} MiB | {within} |")
        else:
            lines.append(f"| {name} | skipped: {row['skipped']} | |")
    return lines


def _section(report, part, title, lines):
    """A titled section, or one line saying why the part was skipped."""
    body = [f"Skipped: {report[part]['skipped']}"] if "skipped" in report[part] else lines(report[part])
    return ["", f"## {title}", "", *body]


def markdown(report):
    """The whole report as Markdown: the machine, then each part that ran."""
    lines = ["# minivae bench", "", *machine_lines(report)]
    if "step" in report:
        lines += ["", "## One training step: 784-400-20 Bernoulli VAE, forward, backward, Adam", "",
                  harness.markdown_table(report["step"], with_confinement=False).rstrip()]
    data = report["settings"]["data"]
    if "epoch" in report:
        lines += _section(report, "epoch", f"One epoch of {data} training images, batch {report['settings']['epoch_batch']}", _epoch_lines)
    if "iw" in report:
        lines += _section(report, "iw", f"Importance-weighted log-likelihood of {data} test images",
                          lambda part: [f"K = {part['k']} samples for each of {part['examples']} images.", "",
                                        *_iw_lines(part, report["peak_gflops"])])
    if "memory" in report:
        lines += _section(report, "memory", f"Peak memory of a {data} training run", _memory_lines)
    if "micro" in report:
        timed = [name for name, why in report["backends"].items() if not why]
        lines += ["", "## Kernels", "", *micro.markdown(report["micro"], timed)]
    return "\n".join(lines) + "\n"


def write_report(report, text, out):
    """bench.json (every sample), bench.md and, when the step ran, bench.png and the CPU-vs-GPU chart
    (``gpu_chart``); returns the paths written."""
    paths = [out / "bench.json", out / "bench.md"]
    harness.write_json(report, paths[0])
    paths[1].write_text(text, encoding="utf-8")
    if "step" in report:
        paths.append(out / "bench.png")
        harness.write_chart(report["step"], paths[2])
        paths += gpu_chart.write_chart(report, out)
    return paths
