"""``minivae bench``: the benchmark suite (``benchmarks/suite.py``, installed as ``minivae.benchmarks``)."""
from minivae.benchmarks.suite import (  # noqa: F401 (the command's interface)
    add_bench_arguments as add_arguments, run_bench as run)
