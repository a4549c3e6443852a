"""Checkpoints: named arrays plus a JSON ``meta`` dict in one ``.npz`` file, no pickle.

``meta`` holds whatever resumes a run: the config, the epoch, optimizer
scalars, the random generators' states (each kernel set's ``rng_state``; a
device generator's states go in as arrays). It is stored as UTF-8 JSON bytes
in a uint8 array named ``__meta__``, wrapped as ``{"format_version": 1,
"meta": meta}`` so a future format can be told apart.

Saving is atomic: a crash or a full disk mid-write leaves the previous
checkpoint as it was.
"""
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from minivae.errors import MinivaeError

FORMAT_VERSION = 1
META_KEY = "__meta__"
# What np.load and zipfile raise on a damaged file. RuntimeError covers zipfile's
# "encrypted" and NotImplementedError ("compression method not supported");
# MemoryError a damaged header that claims a huge array.
_LOAD_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error,
                RuntimeError, MemoryError, OverflowError)


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` (a dict of name to ndarray) and the JSON-safe ``meta`` dict to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed and
    fsynced, then renamed over ``path`` and the directory fsynced. On any
    error the temporary file is removed and an existing ``path`` is untouched.
    """
    path = Path(path)
    payload = _payload(path, arrays, meta)
    try:
        _write_atomically(path, payload)
    except OSError as exc:
        raise MinivaeError(
            f"cannot write checkpoint {path} ({exc}); check free space and permissions") from None


def _payload(path, arrays, meta):
    """The arrays np.savez writes: the caller's arrays plus the encoded meta."""
    for name, array in arrays.items():
        if not isinstance(name, str) or name == META_KEY:
            raise MinivaeError(f"checkpoint {path}: array name {name!r} is not allowed; use another string")
        if np.asarray(array).dtype.hasobject:
            raise MinivaeError(
                f"checkpoint {path}: array {name!r} holds Python objects, which would need pickle; "
                "store numeric arrays")
    try:
        text = json.dumps({"format_version": FORMAT_VERSION, "meta": meta})
    except (TypeError, ValueError) as exc:
        raise MinivaeError(
            f"checkpoint {path}: meta is not JSON-serialisable ({exc}); store plain "
            "numbers, strings, lists and dicts (NumPy scalars via .item())") from None
    return {**arrays, META_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}


def _write_atomically(path, payload):
    """Temporary file, fsync, rename over ``path``, fsync the directory."""
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory):
    """Make a rename in ``directory`` durable (POSIX; other systems skip it)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path):
    """``(arrays, meta)`` from a file written by ``save_checkpoint``; never unpickles."""
    path = Path(path)
    try:
        arrays = _read_npz(path)
    except FileNotFoundError:
        raise MinivaeError(f"no checkpoint at {path}; check the path") from None
    except _LOAD_ERRORS as exc:
        raise MinivaeError(f"checkpoint {path} is unreadable or corrupt ({exc}); use another checkpoint") from None
    if META_KEY not in arrays:
        raise MinivaeError(f"{path} has no {META_KEY} entry, so it is not a minivae checkpoint; check the path")
    return arrays, _decode_meta(path, arrays.pop(META_KEY))


def _read_npz(path):
    """Every array of an ``.npz`` file, read in full."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise MinivaeError(f"{path} holds a single .npy array, not a minivae checkpoint; check the path")
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def _decode_meta(path, encoded):
    """The meta dict from its uint8 JSON bytes, after checking the format version."""
    try:
        document = json.loads(encoded.tobytes().decode("utf-8"))
        version, meta = document["format_version"], document["meta"]
    except (ValueError, TypeError, KeyError) as exc:
        raise MinivaeError(f"checkpoint {path}: its metadata is corrupt ({exc}); use another checkpoint") from None
    if version != FORMAT_VERSION:
        raise MinivaeError(
            f"checkpoint {path} has format version {version!r} but this minivae reads version "
            f"{FORMAT_VERSION}; load it with the minivae version that wrote it")
    return meta


def check_writable(directory):
    """Create ``directory`` if needed and make sure a file can be written there; returns it as a Path."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise MinivaeError(
            f"cannot write to directory {directory} ({exc.strerror}); choose another output "
            "directory or fix its permissions") from None
    return directory
