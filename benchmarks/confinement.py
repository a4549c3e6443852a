"""Run on N cores, and check that every thread of the process really does.

Linux keeps the CPUs a thread may run on per thread: ``os.sched_setaffinity(0,
cores)`` pins only the calling thread, and a thread started earlier (NumPy's
OpenBLAS starts its workers when NumPy loads) keeps every core. So ``confine``
pins each thread the process has (``/proc/self/task``) and caps the libraries'
pools; threads started later inherit their creator's CPUs. A library may still
set its own threads' affinity, so ``check`` reads every thread's allowed CPUs
again once the peers have started their pools, and a report states the result
(``describe``): a row measured while a thread could run elsewhere may have used
more cores than it claims.
"""
import os

TASKS = "/proc/self/task"
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def parse_cpu_list(text):
    """'0-2,5' (as /proc writes Cpus_allowed_list) -> [0, 1, 2, 5]."""
    cpus = []
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def _read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def thread_cpus():
    """{thread id: (name, [allowed CPUs])} for every thread of this process; {} where /proc has no task list."""
    threads = {}
    try:
        tids = os.listdir(TASKS)
    except OSError:
        return threads
    for tid in tids:
        try:
            status = _read(f"{TASKS}/{tid}/status")
            name = _read(f"{TASKS}/{tid}/comm").strip()
        except OSError:  # the thread ended while we looked
            continue
        allowed = next(line.split(":", 1)[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
        threads[int(tid)] = (name, parse_cpu_list(allowed))
    return threads


def confine(count):
    """Cap BLAS, OpenMP and numba at ``count`` threads and pin every thread to the first ``count`` usable cores.

    Environment variables reach libraries loaded later (call this before
    torch or jax loads: JAX sizes its pool from the CPUs it may use);
    threadpoolctl and ``numba.set_num_threads`` cap the loaded ones. Returns
    the cores.
    """
    from minivae.app.threads import use_threads
    for name in POOL_VARIABLES:
        os.environ[name] = str(count)
    use_threads(count)
    cores = sorted(os.sched_getaffinity(0))[:count]
    for tid in thread_cpus():
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # ended meanwhile
            pass
    return cores


def check(cores=None):
    """What every thread may run on now: {"cores", "threads", "escaped", "cpus"}.

    ``cores`` is what the threads were confined to (None: not confined);
    ``escaped`` lists the threads allowed any other CPU (id, name, CPUs);
    ``cpus`` is every CPU some thread may use. ``threads`` is 0 where the
    system does not list threads (then nothing was checked).
    """
    threads = thread_cpus()
    allowed = set(cores or ())
    escaped = [{"tid": tid, "name": name, "cpus": cpus} for tid, (name, cpus) in sorted(threads.items())
               if cores is not None and not set(cpus) <= allowed]
    return {"cores": None if cores is None else list(cores), "threads": len(threads), "escaped": escaped,
            "cpus": sorted({cpu for _, cpus in threads.values() for cpu in cpus})}


def merge(checks):
    """One result from checks at several moments: the most threads seen, every escape (once per thread)."""
    escaped = {}
    for result in checks:
        escaped |= {thread["tid"]: thread for thread in result["escaped"]}
    return {"cores": checks[-1]["cores"], "threads": max(result["threads"] for result in checks),
            "escaped": [escaped[tid] for tid in sorted(escaped)],
            "cpus": sorted({cpu for result in checks for cpu in result["cpus"]})}


def _cpus(cpus):
    return ("CPU " if len(cpus) == 1 else "CPUs ") + ",".join(map(str, cpus))


def describe(result):
    """The report's line: confined and held, confined and escaped, or not confined."""
    if not result["threads"]:
        return "not checked (this system does not list a process's threads)"
    if result["cores"] is None:
        return f"none asked (no --threads); the {result['threads']} threads may run on {_cpus(result['cpus'])}"
    if not result["escaped"]:
        return f"held: all {result['threads']} threads allowed only {_cpus(result['cores'])}"
    names = "; ".join(f"{t['name']} (thread {t['tid']}) on {_cpus(t['cpus'])}" for t in result["escaped"])
    return (f"**BROKEN**: {len(result['escaped'])} of {result['threads']} threads could leave"
            f" {_cpus(result['cores'])}: {names}. Rows may have used more cores than --threads says.")
