"""Hypothesis profiles (``default`` locally, ``ci``: derandomized, no deadline, when CI=true) and shared fixtures.

Test helpers (``strategies``, ``runs``, ``kernel_cases``, ``checkpoint_files``) are imported by their
plain names: loading this file puts its directory on ``sys.path`` (pytest's default import mode),
so they import the same way under ``pytest`` and ``python -m pytest``, from tests/cudasim too.
No test module imports another test module.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=15, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory the fuzz tests of one module overwrite file by file."""
    return tmp_path_factory.mktemp("fuzz")
