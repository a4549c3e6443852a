"""Numba CUDA kernels under the CUDA simulator: this directory needs its own pytest run.

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cudasim

Numba reads the variable when it is first imported, so these tests cannot share
a process with the CPU tests. Without it, every test here is skipped, saying so.
"""
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
SKIP = pytest.mark.skip(reason="Numba CUDA simulator tests: run them on their own with "
                               "NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cudasim")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.cudasim)
            if not SIMULATOR:
                item.add_marker(SKIP)
