"""Checkpoint files that must be refused, shared by test_checkpoint.py, test_hardening.py and test_run_safety.py."""
import json

import numpy as np

from minivae.app.checkpoint import load_checkpoint, save_checkpoint

UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)


class Trap:
    """An object whose unpickling runs code: what pickle allows and a checkpoint must not."""

    def __reduce__(self):
        return record_unpickling, ()


def write_npz(path, **arrays):
    """An .npz written by plain np.savez (which pickles object arrays)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def encoded_meta(document):
    return np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)


def altered(source, target, change):
    """A copy of the checkpoint ``source`` with ``change(arrays, meta)`` applied, saved at ``target``."""
    arrays, meta = load_checkpoint(source)
    change(arrays, meta)
    save_checkpoint(target, arrays, meta)
    return target
