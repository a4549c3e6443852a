"""Checkpoints: named arrays plus a JSON ``meta`` dict in one ``.npz`` file, no pickle.

``meta`` holds whatever resumes a run: the config, the epoch, optimizer
scalars, the random generators' states (each kernel set's ``rng_state``, JSON
values). It is stored as UTF-8 JSON bytes
in a uint8 array named ``__meta__``, wrapped as ``{"format_version": 1,
"meta": meta}`` so a future format can be told apart.

The arrays of a model are named as its parameters (``model/fc_heads.weight``).

Saving is atomic: a crash or a full disk mid-write leaves the previous
checkpoint as it was.
"""
import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from minivae.app.files import write_atomically
from minivae.errors import MinivaeError

FORMAT_VERSION = 1
META_KEY = "__meta__"
MAX_META_BYTES = 16 << 20  # JSON metadata: a run's history takes about 300 bytes an epoch
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
        write_atomically(path, lambda f: np.savez(f, **payload))
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


def load_checkpoint(path, check=None):
    """``(arrays, meta)`` from a file written by ``save_checkpoint``; never unpickles.

    Nothing is trusted before it is checked: the metadata and every array's
    header (shape and dtype, from its ``.npy`` header inside the zip) are read
    first, and ``check(meta, headers)``, if given, refuses the file by raising
    before any array is loaded. So an array the caller did not expect, or a
    metadata claiming a huge model, costs nothing. Compressed members are
    refused (``save_checkpoint`` never compresses), so every array loaded is at
    most as large as the file.
    """
    path = Path(path)
    try:
        with _open_regular(path) as f:
            _check_is_npz(path, f.read(len(NPY_MAGIC)))
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                return _read_archive(path, archive, check)
    except FileNotFoundError:
        raise MinivaeError(f"no checkpoint at {path}; check the path") from None
    except _LOAD_ERRORS as exc:
        raise MinivaeError(f"checkpoint {path} is unreadable or corrupt ({exc}); use another checkpoint") from None


def _read_archive(path, archive, check):
    """``load_checkpoint`` on the open zip ``archive``: the metadata and headers, checked, then the arrays."""
    members = _members(path, archive)
    if META_KEY not in members:
        raise MinivaeError(f"{path} has no {META_KEY} entry, so it is not a minivae checkpoint; check the path")
    meta_info = members.pop(META_KEY)
    _check_meta_header(path, _read_header(path, archive, meta_info))
    meta = _decode_meta(path, _read_member(archive, meta_info))
    headers = {name: _read_header(path, archive, info) for name, info in members.items()}
    if check is not None:
        check(meta, headers)
    arrays = {name: _read_member(archive, info) for name, info in members.items()}
    return arrays, meta


def _open_regular(path):
    """``path`` opened for binary reading, refused unless a regular file: opened without blocking (a FIFO's open
    waits for a writer), then checked on the open file itself."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(path, mode):
    if stat.S_ISDIR(mode):
        raise MinivaeError(f"{path} is a directory, not a checkpoint; pass the checkpoint.npz inside it")
    if not stat.S_ISREG(mode):
        raise MinivaeError(f"{path} is not a regular file (a FIFO, a socket or a device), so not a checkpoint; "
                           "pass the checkpoint.npz a training run wrote")


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def _check_is_npz(path, start):
    """Refuse a file that is not a zip archive (what np.load would try to unpickle) by its first bytes."""
    if start.startswith(NPY_MAGIC):
        raise MinivaeError(f"{path} holds a single .npy array, not a minivae checkpoint; check the path")
    if not start.startswith(ZIP_MAGIC):
        raise MinivaeError(f"{path} is not a minivae checkpoint (not an .npz file: it does not start like a "
                           "zip archive); pass the checkpoint.npz a training run wrote")


def _members(path, archive):
    """{array name: ZipInfo} of an ``.npz``, refusing compressed members."""
    members = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise MinivaeError(f"checkpoint {path}: array {name!r} is compressed, and minivae writes checkpoints "
                               "uncompressed; use the checkpoint.npz a training run wrote")
        members[name] = info
    return members


def _read_header(path, archive, info):
    """(shape, dtype) of one member from its .npy header; refuses object arrays and sizes the member cannot hold."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{info.filename}: unsupported .npy version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        header_size = f.tell()
    name = info.filename.removesuffix(".npy")
    if dtype.hasobject:
        raise MinivaeError(f"checkpoint {path}: array {name!r} holds Python objects, which only pickle could "
                           "load, and minivae never unpickles; use another checkpoint")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != info.file_size - header_size:
        raise MinivaeError(f"checkpoint {path}: array {name!r} claims {nbytes:,} bytes but holds "
                           f"{info.file_size - header_size:,}; it is damaged, use another checkpoint")
    return tuple(shape), dtype


def _read_member(archive, info):
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _check_meta_header(path, header):
    """The metadata member is JSON bytes (uint8, one dimension), no larger than ``MAX_META_BYTES``, before it is read."""
    shape, dtype = header
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
        raise MinivaeError(f"checkpoint {path}: its {META_KEY} entry is {dtype} of shape {shape}, not at most "
                           f"{MAX_META_BYTES:,} bytes of JSON; it is damaged, use another checkpoint")


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
    if not isinstance(meta, dict):
        raise MinivaeError(f"checkpoint {path}: its metadata is a {type(meta).__name__}, not a dict of named "
                           "parts; it is damaged, use another checkpoint")
    return meta


def check_writable(directory):
    """Create ``directory`` if needed and make sure a file can be written there; returns it as a Path."""
    directory = Path(directory)
    try:
        if directory.exists() and not directory.is_dir():
            raise MinivaeError(f"{directory} is a file, not a directory; choose a directory for the output "
                               "(it is created if missing)")
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise MinivaeError(
            f"cannot write to directory {directory} ({exc.strerror}); choose another output "
            "directory or fix its permissions") from None
    return directory
