"""docs/walkthrough.md runs: every ```python block, in order, in one namespace."""
import re
from pathlib import Path

WALKTHROUGH = Path(__file__).resolve().parent.parent / "docs" / "walkthrough.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(text):
    return PYTHON_BLOCK.findall(text)


def test_walkthrough_has_a_block_per_step():
    assert len(python_blocks(WALKTHROUGH.read_text())) >= 10


def test_walkthrough_blocks_run_in_order():
    namespace = {}
    for number, block in enumerate(python_blocks(WALKTHROUGH.read_text()), start=1):
        code = compile(block, f"{WALKTHROUGH.name}, python block {number}", "exec")
        exec(code, namespace)
