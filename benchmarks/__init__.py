"""Benchmarks: the measurement harness, the GEMM floor, peer frameworks and drivers.

Run drivers from the repository root as modules, e.g.
``python -m benchmarks.bench_step --out results/bench --quick``.
"""
