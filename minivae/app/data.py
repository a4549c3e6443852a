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
import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivae.app.idx import read_idx, read_idx_header
from minivae.errors import MinivaeError
from minivae.vae import LIKELIHOODS

DATASET_NAMES = ("digits", "mnist", "fashion-mnist")
DIGITS_TEST_FRACTION = 0.2
BINARIZE_MODES = ("none", "static", "dynamic")
SPLITS = ("train", "test")
FINGERPRINT_BYTES = 1 << 20
STATIC_SEED = 0
CHUNK_ELEMENTS = 1 << 20  # elements per block where a whole-set pass would otherwise make a same-sized temporary

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
    path); ``test_fingerprint`` identifies the test images file and
    ``train_fingerprint`` the training images (``images_fingerprint``; both None
    for the bundled digits, and the latter when only the test split was read), so
    a checkpoint can tell whether it meets its own data. What reads
    images by rows (``batches``, ``check_pixels``, ``binarize_static``,
    training and ``likelihood.evaluate_elbo``) takes a float32 array of rows too.
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
    train_fingerprint: dict | None = None


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
                   test_fingerprint=file_fingerprint(test_images),
                   train_fingerprint=None if train_x is None else images_fingerprint(train_x))


def file_fingerprint(path):
    """A file's name, size and the SHA-256 of its first MiB: tells two datasets apart without reading them whole."""
    with open(path, "rb") as f:
        head = f.read(FINGERPRINT_BYTES)
        size = os.fstat(f.fileno()).st_size
    return {"file": Path(path).name, "bytes": size, "sha256_first_mib": hashlib.sha256(head).hexdigest()}


def images_fingerprint(pixels):
    """How many images, and the SHA-256 of all their stored bytes: which images a run trained on.

    Hashing the uint8 pixels as loaded (47 MB for MNIST's training set, a tenth
    of a second) tells apart sets that differ in a single pixel, whether the
    files are raw or gzip-compressed.
    """
    stored = np.ascontiguousarray(pixels.stored)
    return {"images": len(stored), "sha256": hashlib.sha256(stored.data).hexdigest()}


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
    """``binarize_static`` drawn afresh for every batch: each epoch sees new binary images (a regularizer)."""
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
