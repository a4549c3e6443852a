"""docs/walkthrough.md and docs/autodiff.md run: every ```python block of each, in order, in one namespace."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDES = {"walkthrough.md": 10, "autodiff.md": 8}  # each guide, and the fewest blocks it has (one a step)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(text):
    return PYTHON_BLOCK.findall(text)


@pytest.mark.parametrize("guide, fewest", GUIDES.items())
def test_guide_has_a_block_per_step(guide, fewest):
    assert len(python_blocks((DOCS / guide).read_text())) >= fewest


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_blocks_run_in_order(guide):
    namespace = {}
    for number, block in enumerate(python_blocks((DOCS / guide).read_text()), start=1):
        code = compile(block, f"{guide}, python block {number}", "exec")
        exec(code, namespace)
