"""Datasets as stored integer pixels handed out as float32 rows in [0, 1], minibatches, and binarization.

Three datasets, all pure NumPy:

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (no download);
- ``mnist`` and ``fashion-mnist``: the four standard IDX files, raw or ``.gz``,
  from a directory you name. Fashion-MNIST is found automatically where
  Debian's ``dataset-fashion-mnist`` package puts it.

The images stay as stored (uint8, a quarter of their float32 size) in
``Pixels``, which converts only the rows asked for: a batch, an evaluation
chunk, a figure's images.

Every random choice (validation split, shuffling, binarization) is drawn from
an explicit ``numpy.random.Generator``.
"""
import contextlib
import dataclasses
import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivae.errors import MinivaeError

DATASET_NAMES = ("digits", "mnist", "fashion-mnist")
DIGITS_TEST_FRACTION = 0.2
BINARIZE_MODES = ("none", "static", "dynamic")
SPLITS = ("train", "test")
FINGERPRINT_BYTES = 1 << 20
STATIC_SEED = 0
LIKELIHOODS = ("bernoulli", "gaussian")
CHUNK_ELEMENTS = 1 << 20  # elements per block where a whole-set pass would otherwise make a same-sized temporary

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
    """The array stored in an IDX file, raw or gzip-compressed (sniffed, not by suffix).

    The elements are read one chunk of ``READ_CHUNK`` bytes at a time straight
    into the result (converted to ``dtype`` if given): the file's bytes are
    never held in full beside it. The header's sizes are checked against the file before any
    large allocation: a raw file must hold exactly the bytes the header
    promises, a gzip file cannot promise more than ``MAX_GZIP_RATIO`` times its
    own size, and its result grows as the data arrives, so a lying header
    costs no memory.
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


# ----- Datasets -----


class Pixels:
    """Images kept as the integers they are stored as, handed out as float32 rows ``stored / divisor``.

    ``pixels[index]`` converts only the rows asked for, into a new float32
    array: ``np.divide(stored[index], divisor, dtype=np.float32)``, the float32
    nearest to each quotient (what dividing a float32 array by ``divisor``
    gives). So a training run holds Fashion-MNIST's 70,000 images in 55 MB
    (uint8) instead of 220 MB (float32), and converts one batch at a time.

    ``len``, ``shape``, ``min`` and ``max`` are those of the float32 rows,
    read from ``stored`` without converting it. ``subset(index)`` takes rows
    still as integers; ``np.asarray(pixels)`` converts the whole set at once
    (rarely wanted).
    """
    dtype = np.dtype(np.float32)  # of the rows handed out; ``stored.dtype`` is what is held

    def __init__(self, stored, divisor):
        self.stored = np.asarray(stored)
        self.divisor = divisor

    def __getitem__(self, index):
        return np.divide(self.stored[index], self.divisor, dtype=np.float32)

    def __len__(self):
        return len(self.stored)

    @property
    def shape(self):
        return self.stored.shape

    @property
    def ndim(self):
        return self.stored.ndim

    @property
    def size(self):
        return self.stored.size

    def min(self):
        return np.divide(self.stored.min(), self.divisor, dtype=np.float32)  # dividing keeps the order

    def max(self):
        return np.divide(self.stored.max(), self.divisor, dtype=np.float32)

    def subset(self, index):
        """The rows ``index`` as Pixels: still integers, nothing converted."""
        return Pixels(self.stored[index], self.divisor)

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("Pixels are converted when read: a float32 array of them is always a copy")
        return self[...] if dtype is None else self[...].astype(dtype)

    def __repr__(self):
        return f"Pixels({'x'.join(map(str, self.shape))} {self.stored.dtype} / {self.divisor})"


@dataclass
class Dataset:
    """Images as ``Pixels`` (index them for float32 rows in [0, 1]; reshape a row to ``image_shape``), labels as int64.

    ``valid_x``/``valid_y`` are None unless ``load_dataset`` was asked for a
    validation split, which is then taken out of the training set; ``train_x``
    and ``train_y`` are None when only the test split was asked for.
    ``source`` says where the images were read (a directory, as an absolute
    path); ``test_fingerprint`` identifies the test images file (None for the
    bundled digits), so a checkpoint can tell whether it meets its own test set. What reads
    images by rows (``batches``, ``check_pixels``, ``binarize_static``,
    training and ``train.evaluate_elbo``) takes a float32 array of rows too.
    """
    train_x: Pixels | None
    train_y: np.ndarray | None
    test_x: Pixels
    test_y: np.ndarray
    image_shape: tuple
    name: str
    valid_x: Pixels | None = None
    valid_y: np.ndarray | None = None
    source: str = "scikit-learn (bundled)"
    test_fingerprint: dict | None = None


def load_digits():
    """scikit-learn's 1797 bundled 8x8 digits: integers 0..16 kept as uint8, divided by 16 when read.

    The split is fixed, not random: the first 80% (1438 images) are the
    training set, the last 20% (359 images) the test set.
    """
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    x = Pixels(bunch.data.astype(np.uint8), divisor=16)  # scikit-learn gives the integers as float64
    y = bunch.target.astype(np.int64)
    n_train = len(x) - round(len(x) * DIGITS_TEST_FRACTION)
    return Dataset(x.subset(slice(n_train)), y[:n_train], x.subset(slice(n_train, None)), y[n_train:],
                   (8, 8), "digits")


MNIST_LIKE_DIRS = {"mnist": None, "fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
MNIST_LIKE_HINTS = {
    "mnist": "download the four MNIST IDX files and pass --data-dir DIR",
    "fashion-mnist": "run `apt-get install dataset-fashion-mnist` or pass --data-dir DIR",
}


def load_mnist_like(name, data_dir=None, splits=SPLITS):
    """MNIST or Fashion-MNIST from the standard four IDX files (raw or ``.gz``) in ``data_dir``.

    With ``data_dir`` None, Fashion-MNIST is read from
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    The images are kept as uint8, divided by 255 when read. With
    ``splits=("test",)`` the training files are neither read nor needed.
    """
    if name not in MNIST_LIKE_DIRS:
        raise MinivaeError(f"unknown IDX dataset {name!r}; choose one of {', '.join(MNIST_LIKE_DIRS)}")
    directory = Path(data_dir) if data_dir is not None else MNIST_LIKE_DIRS[name]
    if directory is None:
        raise MinivaeError(f"{name} has no default location; {MNIST_LIKE_HINTS[name]}")
    train_x = train_y = image_shape = None
    if "train" in splits:
        train_x, train_y, image_shape = _load_idx_split(name, directory, "train")
    test_x, test_y, test_shape = _load_idx_split(name, directory, "t10k")
    if image_shape not in (None, test_shape):
        raise MinivaeError(
            f"{name} in {directory}: train images are {image_shape} but test images are "
            f"{test_shape}; re-download the files")
    test_images = _find_idx_file(name, directory, "t10k-images-idx3-ubyte")
    return Dataset(train_x, train_y, test_x, test_y, test_shape, name, source=str(directory.resolve()),
                   test_fingerprint=file_fingerprint(test_images))


def file_fingerprint(path):
    """A file's name, size and the SHA-256 of its first MiB: tells two datasets apart without reading them whole."""
    with open(path, "rb") as f:
        head = f.read(FINGERPRINT_BYTES)
        size = os.fstat(f.fileno()).st_size
    return {"file": Path(path).name, "bytes": size, "sha256_first_mib": hashlib.sha256(head).hexdigest()}


def _load_idx_split(name, directory, prefix):
    """Flattened images as ``Pixels`` (uint8, divisor 255), int64 labels and the image shape of one split.

    The headers are checked first; the images are then read chunk by chunk
    straight into their uint8 array, so loading holds the result and one
    chunk, never the file's bytes beside it, nor a float32 copy.
    """
    images_path = _find_idx_file(name, directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx_file(name, directory, f"{prefix}-labels-idx1-ubyte")
    (image_dtype, image_shape), (_, label_shape) = read_idx_header(images_path), read_idx_header(labels_path)
    _check_idx_pair(images_path, labels_path, image_dtype, image_shape, label_shape)
    labels = read_idx(labels_path, dtype=np.int64)
    images = read_idx(images_path)
    _check_idx_pair(images_path, labels_path, image_dtype, images.shape, labels.shape)  # unchanged since
    return Pixels(images.reshape(len(images), -1), divisor=255), labels, images.shape[1:]


def _check_idx_pair(images_path, labels_path, image_dtype, image_shape, label_shape):
    """Refuse anything but uint8 images (N, H, W) and as many labels (N,)."""
    if len(image_shape) != 3 or len(label_shape) != 1 or image_dtype != np.uint8:
        raise MinivaeError(
            f"{images_path} and {labels_path} should hold uint8 images (N, H, W) and labels (N,), "
            f"not {image_dtype} {tuple(image_shape)} and {tuple(label_shape)}; check the file names")
    if 0 in image_shape:
        raise MinivaeError(f"{images_path} holds {'x'.join(map(str, image_shape))} images, that is none; "
                           "re-download it or check the path")
    if image_shape[0] != label_shape[0]:
        raise MinivaeError(
            f"{images_path} holds {image_shape[0]} images but {labels_path} holds {label_shape[0]} "
            "labels; re-download the pair")


def _find_idx_file(name, directory, stem):
    """``directory/stem`` or ``directory/stem.gz``, whichever exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise MinivaeError(f"{name}: no {stem}[.gz] in {directory}; {MNIST_LIKE_HINTS[name]}")


def load_dataset(name="digits", data_dir=None, validation=0.0, seed=0, splits=SPLITS):
    """The dataset called ``name``, with a ``validation`` fraction of train held out (seeded).

    ``splits=("test",)`` reads only the test split of an IDX dataset (the bundled digits come whole).
    """
    if name == "digits":
        if data_dir is not None:
            raise MinivaeError("digits ships with scikit-learn and reads no --data-dir; drop it")
        data = load_digits()
    elif name in MNIST_LIKE_DIRS:
        data = load_mnist_like(name, data_dir, splits)
    else:
        raise MinivaeError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if validation == 0:
        return data
    train_x, train_y, valid_x, valid_y = validation_split(  # the stored integers: nothing converted
        data.train_x.stored, data.train_y, validation, np.random.default_rng(seed))
    divisor = data.train_x.divisor
    return dataclasses.replace(data, train_x=Pixels(train_x, divisor), train_y=train_y,
                               valid_x=Pixels(valid_x, divisor), valid_y=valid_y)


def validation_split(x, y, fraction, rng):
    """A random ``fraction`` of the rows held out: ``(train_x, train_y, valid_x, valid_y)``."""
    n_valid = round(len(x) * fraction) if 0 < fraction < 1 else 0  # NaN or out of range: refused
    if not 0 < n_valid < len(x):
        raise MinivaeError(
            f"validation fraction {fraction} of {len(x)} examples leaves an empty split; "
            "choose a fraction between 0 and 1, e.g. 0.1")
    order = rng.permutation(len(x))
    valid, train = order[:n_valid], order[n_valid:]
    return x[train], y[train], x[valid], y[valid]


# ----- Minibatches and binarization -----


def binarize_static(x, rng, out=None):
    """One Bernoulli(x) draw per pixel, as zeros and ones (in ``out`` when given; it may be ``x``).

    ``x`` is an array of float32 rows, giving a float32 array, or ``Pixels``,
    giving Pixels of uint8 zeros and ones (divisor 1): a binarized set stays a
    quarter of its float32 size.

    Static binarization draws once for a whole set and keeps the result, so
    every epoch sees the same binary images. ``batches(binarize="static")``
    draws with a Generator seeded by ``STATIC_SEED``: the same images in every
    run, whatever the shuffling. The uniforms are drawn ``CHUNK_ELEMENTS`` at a
    time (whole rows), in order, so they are the numbers one draw of
    ``x.shape`` would give, without holding them all beside ``x`` and the
    result; with ``out=x`` a set is binarized in place, never held twice.
    """
    pixels = isinstance(x, Pixels)
    x = x if pixels else np.asarray(x)
    dtype = np.uint8 if pixels else np.float32
    if out is None:
        out = Pixels(np.empty(x.shape, dtype), divisor=1) if pixels else np.empty(x.shape, dtype)
    binary = out.stored if isinstance(out, Pixels) else out
    if isinstance(out, Pixels) != pixels or binary.shape != x.shape or binary.dtype != dtype:
        raise ValueError(f"out must be {'uint8 Pixels' if pixels else 'a float32 array'} of shape {x.shape}, "
                         f"not {type(out).__name__} {binary.dtype} {binary.shape}")
    if x.ndim == 0:
        np.less(rng.random(dtype=np.float32), x, out=binary)
        return out
    rows = _rows_per_chunk(x.shape)
    for start in range(0, len(x), rows):
        block = binary[start:start + rows]
        np.less(rng.random(block.shape, dtype=np.float32), x[start:start + rows], out=block)
    if pixels:
        out.divisor = 1  # only now: with out=x, the rows not yet drawn were read as they were
    return out


def _rows_per_chunk(shape):
    """How many whole rows of an array of ``shape`` make about ``CHUNK_ELEMENTS`` elements (at least one)."""
    return max(1, CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))


def binarize_dynamic(x_batch, rng):
    """A fresh Bernoulli(x) draw for one batch.

    The same draw as ``binarize_static``, repeated for every batch, so each
    epoch sees new binary versions of the gray images (a regularizer).
    """
    return binarize_static(x_batch, rng)


def batches(x, y, batch_size, rng, shuffle=True, binarize="none"):
    """Yield ``(x_batch, y_batch)`` covering every example once; the last batch may be smaller.

    ``x`` is ``Pixels`` or an array of float32 rows; each ``x_batch`` is a new
    float32 array. ``rng`` shuffles (when ``shuffle``) and draws dynamic
    binarizations. ``binarize="static"`` binarizes all of ``x`` (with ``STATIC_SEED``) each
    time it is called; for a large set, binarize once yourself with
    ``binarize_static`` and pass ``binarize="none"``.
    """
    if binarize not in BINARIZE_MODES:
        raise MinivaeError(f"unknown binarization {binarize!r}; choose one of {', '.join(BINARIZE_MODES)}")
    if batch_size < 1 or len(x) != len(y):
        raise MinivaeError(
            f"cannot batch {len(x)} images and {len(y)} labels by {batch_size}; "
            "give as many labels as images and a batch size of at least 1")
    if binarize == "static":
        x = binarize_static(x, np.random.default_rng(STATIC_SEED))
    order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        rows = order[start:start + batch_size]
        x_batch = x[rows]
        if binarize == "dynamic":
            x_batch = binarize_dynamic(x_batch, rng)
        yield x_batch, y[rows]


def check_pixels(x, likelihood):
    """Refuse NaN or infinite pixels, and pixels outside [0, 1] under a Bernoulli likelihood.

    ``x`` is an array or ``Pixels``. Valid data costs two reductions and no
    array the size of ``x``: NaN propagates into both the minimum and the
    maximum, and an infinity is one of them (Pixels take both from their
    stored integers). Only data about to be refused is counted, in chunks.
    """
    if likelihood not in LIKELIHOODS:
        raise MinivaeError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    x = x if isinstance(x, Pixels) else np.atleast_1d(np.asarray(x))
    if x.size == 0:
        return
    low, high = x.min(), x.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        nonfinite = _count(x, lambda block: ~np.isfinite(block))
        raise MinivaeError(
            f"data has {nonfinite} NaN or infinite values out of {x.size}; clean the data or re-download it")
    if likelihood == "bernoulli" and (low < 0 or high > 1):
        outside = _count(x, lambda block: (block < 0) | (block > 1))
        raise MinivaeError(
            f"data has {outside} values outside [0, 1] (min {low:g}, max {high:g}), which a "
            "Bernoulli likelihood cannot model; rescale the pixels to [0, 1] or use the gaussian likelihood")


def _count(x, predicate):
    """How many elements of ``x`` satisfy ``predicate`` (elementwise), a block of whole rows at a time."""
    rows = _rows_per_chunk(x.shape)
    return sum(int(np.count_nonzero(predicate(x[start:start + rows]))) for start in range(0, len(x), rows))
