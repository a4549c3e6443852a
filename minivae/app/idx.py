"""IDX files, the format of MNIST and Fashion-MNIST, raw or gzip-compressed: read checked against their size, and written."""
import contextlib
import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from minivae.errors import MinivaeError

# ----- IDX files -----
# An IDX file is a 4-byte magic (0x00 0x00 type-code ndim), ndim big-endian
# uint32 dimensions, then the elements, big-endian, in C order.
# http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT")

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_RATIO = 1032  # deflate never expands data more than 1032-fold
# A gzip file's array is first given room for this many elements per compressed
# byte (MNIST's images hold 4.7, Fashion-MNIST's 1.8), and grows only as more
# data arrives: a header promising more than the file holds costs nothing.
GZIP_FIRST_RATIO = 8
READ_CHUNK = 1 << 20
_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def read_idx(path, dtype=None):
    """The array stored in an IDX file, raw or gzip-compressed (sniffed, not by suffix), as ``dtype`` if given.

    The header's sizes are checked against the file before any large allocation, so a lying header costs no memory.
    """
    with _open_idx(path) as (stream, file_size, is_gzip):
        source, shape = _read_idx_header(stream, path)
        _check_idx_size(path, file_size, is_gzip, source, shape)
        return _read_idx_payload(stream, path, file_size, is_gzip, source, shape, dtype)


def read_idx_header(path):
    """The element dtype (native byte order) and the shape an IDX file's header announces.

    Reads no data, but refuses a header the file's size contradicts, as ``read_idx`` does.
    """
    with _open_idx(path) as (stream, file_size, is_gzip):
        source, shape = _read_idx_header(stream, path)
        _check_idx_size(path, file_size, is_gzip, source, shape)
    return source.newbyteorder("="), shape


@contextlib.contextmanager
def _open_idx(path):
    """(stream, file size, is gzip) of an IDX file; errors while it is read become one-line MinivaeErrors."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            file_size = os.fstat(raw.fileno()).st_size
            is_gzip = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            yield (gzip.GzipFile(fileobj=raw) if is_gzip else raw), file_size, is_gzip
    except FileNotFoundError:
        raise MinivaeError(f"IDX file {path} does not exist; check the path") from None
    except _READ_ERRORS as exc:
        raise MinivaeError(f"IDX file {path}: cannot read it ({exc}); re-download it") from None


def _check_idx_size(path, file_size, is_gzip, source, shape):
    """Refuse a header promising other than a raw file's bytes, or more than a gzip file can hold."""
    nbytes = math.prod(shape) * source.itemsize
    if is_gzip:
        bound = file_size * MAX_GZIP_RATIO
        if nbytes > bound:
            raise _size_mismatch(path, shape, source, nbytes, f"at most {bound:,}")
    else:
        available = file_size - 4 - 4 * len(shape)
        if nbytes != available:
            raise _size_mismatch(path, shape, source, nbytes, f"{available:,}")


def _read_idx_payload(stream, path, file_size, is_gzip, source, shape, dtype):
    """The elements of an open IDX stream whose size was checked, converted chunk by chunk into one array."""
    elements = math.prod(shape)
    nbytes = elements * source.itemsize
    capacity = min(elements, file_size * GZIP_FIRST_RATIO) if is_gzip else elements
    flat = np.empty(capacity, dtype=source.newbyteorder("=") if dtype is None else dtype)
    per_chunk = max(1, READ_CHUNK // source.itemsize)
    for start in range(0, elements, per_chunk):
        count = min(per_chunk, elements - start)
        chunk = _read_exactly(stream, count * source.itemsize)
        if len(chunk) < count * source.itemsize:
            raise _size_mismatch(path, shape, source, nbytes, f"{start * source.itemsize + len(chunk):,}")
        if start + count > capacity:  # realloc: large arrays are remapped, not copied
            capacity = min(elements, max(2 * capacity, start + count))
            flat.resize(capacity, refcheck=False)
        flat[start:start + count] = np.frombuffer(chunk, dtype=source)
        del chunk  # before the next read: one chunk at a time
    if stream.read(1):
        if is_gzip:  # damaged deflate data often decodes to too many bytes: its CRC check is the true cause
            while stream.read(READ_CHUNK):  # an OSError (CRC failure) here becomes "cannot read it"
                pass
        raise _size_mismatch(path, shape, source, nbytes, f"more than {nbytes:,}")
    return flat.reshape(shape)


def _read_idx_header(stream, path):
    """The element dtype and the shape that an IDX header announces."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise MinivaeError(
            f"IDX file {path}: bad magic {magic.hex(' ') or '(empty file)'}, expected 00 00 "
            "type ndim; is it an MNIST-style IDX file?")
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_TYPES or ndim == 0:
        raise MinivaeError(
            f"IDX file {path}: unsupported type code 0x{type_code:02x} or ndim {ndim}; "
            "re-download it")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise MinivaeError(f"IDX file {path}: header ends before its {ndim} dimensions; re-download it")
    return np.dtype(IDX_TYPES[type_code]), struct.unpack(f">{ndim}I", dims)


def _read_exactly(stream, size):
    """``size`` bytes, or fewer only at the end of the stream (a read may return less than asked)."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    while size > (held := sum(map(len, parts))):
        part = stream.read(size - held)
        if not part:
            break
        parts.append(part)
    return b"".join(parts)


def _size_mismatch(path, shape, dtype, nbytes, held):
    shape_text = "x".join(str(n) for n in shape)
    return MinivaeError(
        f"IDX file {path}: header says {shape_text} {dtype.name} ({nbytes:,} bytes) but the "
        f"file holds {held} bytes of data; re-download it or check the path")


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(name).name: code for code, name in IDX_TYPES.items()}
    if array.dtype.name not in codes or array.ndim == 0:
        raise MinivaeError(
            f"cannot write a {array.ndim}-d {array.dtype} array as IDX; use an array of "
            f"at least 1 dimension and one of {', '.join(sorted(codes))}")
    code = codes[array.dtype.name]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = array.astype(IDX_TYPES[code]).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "wb") as f:
            f.write(header + payload)
    except OSError as exc:
        raise MinivaeError(f"cannot write IDX file {path} ({exc.strerror}); check the directory") from None
