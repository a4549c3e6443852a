"""Benchmarks: the measurement harness, the GEMM floor, peer frameworks and drivers.

Installed as ``minivae.benchmarks`` (like ``kernels/`` as ``minivae.kernels``),
so ``minivae bench`` runs them from an installed package; the modules import
each other relatively, so the drivers also run from the repository root, e.g.
``python -m benchmarks.bench_overhead --repeat 31``.
"""
