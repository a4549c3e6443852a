"""Datasets, the IDX reader, splits, minibatches and binarization (no network: files are made here)."""
import gzip
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minivae.app import data, idx, runconfig
from minivae.errors import MinivaeError
from strategies import mutated


def idx_header(dims, type_code=0x08):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def write_bytes(path, blob):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(blob)
    return path


def peak_bytes(function, *args):
    """The peak memory traced while ``function(*args)`` runs (it must raise MinivaeError)."""
    tracemalloc.start()
    try:
        with pytest.raises(MinivaeError):
            function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def traced(function, *args, **kwargs):
    """``function(*args, **kwargs)`` and the peak memory traced (NumPy buffers included) while it ran."""
    tracemalloc.start()
    try:
        result = function(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----- IDX files -----


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(60) - 20).reshape(5, 3, 4).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    idx.write_idx(path, array)
    loaded = idx.read_idx(path)
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_read_idx_sniffs_gzip_whatever_the_name(tmp_path):
    idx.write_idx(tmp_path / "labels.gz", np.arange(7, dtype=np.uint8))
    (tmp_path / "labels.gz").rename(tmp_path / "labels")
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "labels"), np.arange(7))


@pytest.mark.parametrize("blob, message", [
    (b"", "bad magic"),
    (b"\x1f\x8b\x08\x00", "cannot read"),
    (b"\x00\x01\x08\x01\x00\x00\x00\x01x", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "unsupported type code 0x07"),
    (b"\x00\x00\x08\x00", "ndim 0"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x01", "header ends before its 3 dimensions"),
])
def test_bad_headers_are_refused(tmp_path, blob, message):
    with pytest.raises(MinivaeError, match=message):
        idx.read_idx(write_bytes(tmp_path / "bad", blob))


def test_raw_header_larger_than_file(tmp_path):
    path = write_bytes(tmp_path / "train-images-idx3-ubyte", idx_header((60000, 28, 28)) + bytes(1200))
    message = r"header says 60000x28x28 uint8 \(47,040,000 bytes\) but the file holds 1,200 bytes"
    with pytest.raises(MinivaeError, match=message):
        idx.read_idx(path)


def test_raw_trailing_bytes_refused(tmp_path):
    path = write_bytes(tmp_path / "labels", idx_header((10,)) + bytes(11))
    with pytest.raises(MinivaeError, match="holds 11 bytes"):
        idx.read_idx(path)


def test_gz_header_larger_than_data(tmp_path):
    path = write_bytes(tmp_path / "labels.gz", idx_header((100,)) + bytes(60))
    with pytest.raises(MinivaeError, match="holds 60 bytes"):
        idx.read_idx(path)


def test_gz_trailing_bytes_refused(tmp_path):
    path = write_bytes(tmp_path / "labels.gz", idx_header((10,)) + bytes(30))
    with pytest.raises(MinivaeError, match="holds more than 10 bytes"):
        idx.read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_absurd_header_refused_without_allocating(tmp_path, suffix):
    path = write_bytes(tmp_path / f"huge{suffix}", idx_header((10_000, 10_000, 10_000)) + bytes(100))
    assert peak_bytes(idx.read_idx, path) < 1_000_000  # the header claims 10**12 bytes


def test_lying_gz_header_costs_only_the_real_data(tmp_path):
    noise = np.random.default_rng(0).bytes(64 * 1024)  # incompressible: the gz file is ~64 KB
    path = write_bytes(tmp_path / "liar.gz", idx_header((32, 1024, 1024)) + noise)
    assert peak_bytes(idx.read_idx, path) < 4_000_000  # the header claims 32 MiB


def test_conversion_is_exactly_the_float32_quotient(tmp_path):
    idx.write_idx(tmp_path / "all.gz", np.arange(256, dtype=np.uint8).reshape(16, 4, 4))
    pixels = data.Pixels(idx.read_idx(tmp_path / "all.gz").reshape(16, -1), divisor=255)[...]
    assert pixels.dtype == np.float32 and pixels.shape == (16, 16)
    expected = np.arange(256, dtype=np.uint8).astype(np.float32)
    expected /= 255  # how the whole array used to be converted after reading it
    np.testing.assert_array_equal(pixels.reshape(-1), expected)


def test_conversion_swaps_big_endian_elements(tmp_path):
    array = np.array([[-2, 300], [7, -30000]], dtype=np.int16)
    idx.write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "a.gz", dtype=np.float64), array.astype(np.float64))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "a.gz", dtype=np.int64), array)


IMAGES = 4000  # 3.1 MB of uint8 images of 28x28, 12.5 MB as float32: both well above one READ_CHUNK


@pytest.mark.parametrize("name, pixels", [
    ("raw", lambda rng: rng.integers(0, 256, (IMAGES, 28, 28), dtype=np.uint8)),
    ("noise.gz", lambda rng: rng.integers(0, 256, (IMAGES, 28, 28), dtype=np.uint8)),  # room made at once
    ("sparse.gz", lambda rng: (rng.random((IMAGES, 28, 28)) < 0.01).astype(np.uint8) * 255),  # grows as it reads
])
def test_reading_images_as_float32_holds_only_the_result_and_a_chunk(tmp_path, name, pixels):
    images = pixels(np.random.default_rng(0))
    path = tmp_path / name
    idx.write_idx(path, images)
    loaded, peak = traced(idx.read_idx, path, dtype=np.float32)
    np.testing.assert_array_equal(loaded, images.astype(np.float32), strict=True)
    # the file's bytes (3.1 MB) or the uint8 images beside the float32 result would exceed this
    assert peak <= loaded.nbytes + idx.READ_CHUNK + 256 * 1024


def test_loading_a_dataset_holds_the_uint8_images_and_a_chunk(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count, suffix in [("train", IMAGES, ".gz"), ("t10k", 40, "")]:
        idx.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}",
                       rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        idx.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, count, dtype=np.uint8))
    dataset, peak = traced(data.load_mnist_like, "mnist", tmp_path)
    assert dataset.train_x.shape == (IMAGES, 784) and dataset.test_x.shape == (40, 784)
    assert dataset.train_x.stored.dtype == dataset.test_x.stored.dtype == np.uint8
    assert dataset.train_x.stored.nbytes == IMAGES * 784  # a quarter of the float32 images
    held = sum(array.nbytes for array in (dataset.train_x.stored, dataset.train_y, dataset.test_x.stored,
                                          dataset.test_y))
    # the float32 images alone (4 * IMAGES * 784 = 12.5 MB) would exceed this
    assert peak <= held + idx.READ_CHUNK + 256 * 1024


def test_images_that_are_not_uint8_are_refused_before_they_are_read(tmp_path):
    idx.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), dtype=np.int16))
    idx.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(MinivaeError, match=r"should hold uint8 images .* not int16 \(3, 2, 2\) and \(3,\)"):
        data.load_mnist_like("mnist", tmp_path)


def test_read_idx_header_reads_no_data_but_checks_the_size(tmp_path):
    path = write_bytes(tmp_path / "short.gz", idx_header((10, 28, 28), type_code=0x0B) + bytes(10))
    dtype, shape = idx.read_idx_header(path)  # a gzip file's data is only counted by reading it
    assert dtype == np.dtype(np.int16) and shape == (10, 28, 28)
    path = write_bytes(tmp_path / "short", idx_header((1000, 28, 28)) + bytes(10))
    with pytest.raises(MinivaeError, match="header says 1000x28x28 uint8 .* but the file holds 10 bytes"):
        idx.read_idx_header(path)


def test_a_lying_label_header_is_named_before_the_pair_is_compared(fake_mnist):
    (fake_mnist / "t10k-labels-idx1-ubyte").write_bytes(idx_header((10**9,)) + bytes(6))
    with pytest.raises(MinivaeError, match=r"header says 1000000000 uint8 \(1,000,000,000 bytes\) but the file"):
        data.load_mnist_like("mnist", fake_mnist)


def test_truncated_gz_refused(tmp_path):
    path = tmp_path / "images.gz"
    idx.write_idx(path, np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MinivaeError, match="images.gz"):
        idx.read_idx(path)


def test_missing_idx_file(tmp_path):
    with pytest.raises(MinivaeError, match="does not exist"):
        idx.read_idx(tmp_path / "nothing.gz")


def test_write_idx_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(MinivaeError, match="int64"):
        idx.write_idx(tmp_path / "a", np.arange(3, dtype=np.int64))


def loads_or_refuses(path, blob):
    path.write_bytes(blob)
    try:
        array = idx.read_idx(path)
    except MinivaeError:
        return
    assert isinstance(array, np.ndarray)


@given(blob=st.binary(max_size=64))
def test_fuzz_random_bytes(scratch, blob):
    loads_or_refuses(scratch / "random", blob)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@given(choice=st.data())
def test_fuzz_mutated_idx(scratch, suffix, choice):
    path = scratch / f"valid{suffix}"
    idx.write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    loads_or_refuses(scratch / "mutant", choice.draw(mutated(path.read_bytes())))


# ----- MNIST-like directories -----


@pytest.fixture
def fake_mnist(tmp_path):
    """Four small IDX files in the MNIST layout: 12 train and 6 test images of 5x4, raw and gz mixed."""
    rng = np.random.default_rng(0)
    for prefix, count, suffix in [("train", 12, ".gz"), ("t10k", 6, "")]:
        idx.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}",
                       rng.integers(0, 256, (count, 5, 4), dtype=np.uint8))
        idx.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}",
                       rng.integers(0, 10, count, dtype=np.uint8))
    return tmp_path


def test_load_mnist_like(fake_mnist):
    dataset = data.load_mnist_like("mnist", fake_mnist)
    images = idx.read_idx(fake_mnist / "train-images-idx3-ubyte.gz")
    assert dataset.train_x.shape == (12, 20) and dataset.test_x.shape == (6, 20)
    assert dataset.train_x.dtype == np.float32 and dataset.train_y.dtype == np.int64
    assert dataset.image_shape == (5, 4) and dataset.name == "mnist"
    np.testing.assert_allclose(dataset.train_x, images.reshape(12, 20) / 255, rtol=1e-6)
    assert dataset.test_y.shape == (6,)


def test_mnist_like_images_stay_uint8_and_read_as_the_float32_images_did(fake_mnist):
    dataset = data.load_mnist_like("mnist", fake_mnist)
    assert dataset.train_x.stored.dtype == np.uint8 and dataset.train_x.stored.nbytes == 12 * 20
    for pixels, name in [(dataset.train_x, "train-images-idx3-ubyte.gz"), (dataset.test_x, "t10k-images-idx3-ubyte")]:
        before = idx.read_idx(fake_mnist / name).astype(np.float32)  # how the images were held:
        before /= 255  # the whole set converted, then divided in place
        before = before.reshape(len(before), -1)
        np.testing.assert_array_equal(np.asarray(pixels), before, strict=True)
        rows = [4, 0, 4]
        np.testing.assert_array_equal(pixels[rows], before[rows], strict=True)


def test_label_count_mismatch(fake_mnist):
    idx.write_idx(fake_mnist / "t10k-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(MinivaeError, match="holds 6 images but .* holds 5 labels"):
        data.load_mnist_like("fashion-mnist", fake_mnist)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(MinivaeError, match=f"no train-images-idx3-ubyte.* in {tmp_path}.*apt-get install"):
        data.load_mnist_like("fashion-mnist", tmp_path)


def test_default_fashion_location(monkeypatch, tmp_path):
    monkeypatch.setitem(data.MNIST_LIKE_DIRS, "fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(MinivaeError, match="nowhere.*apt-get install dataset-fashion-mnist.* or pass --data-dir"):
        data.load_dataset("fashion-mnist")


def test_mnist_has_no_default_location():
    with pytest.raises(MinivaeError, match="--data-dir"):
        data.load_dataset("mnist")


# ----- Digits and the dispatcher -----


def test_digits():
    dataset = data.load_dataset()
    assert dataset.name == "digits" and dataset.image_shape == (8, 8)
    assert dataset.train_x.shape == (1438, 64) and dataset.test_x.shape == (359, 64)
    assert dataset.train_x.dtype == np.float32 and dataset.test_y.dtype == np.int64
    assert dataset.train_x.min() == 0 and dataset.train_x.max() == 1
    assert set(dataset.train_y) == set(range(10))
    assert dataset.valid_x is None


def test_digits_stay_uint8_and_read_as_the_float32_digits_did():
    import sklearn.datasets
    before = (sklearn.datasets.load_digits().data / 16).astype(np.float32)  # how the digits were held
    dataset = data.load_digits()
    assert dataset.train_x.stored.dtype == np.uint8 and dataset.train_x.stored.nbytes == 1438 * 64
    assert dataset.train_x.divisor == dataset.test_x.divisor == 16
    np.testing.assert_array_equal(np.asarray(dataset.train_x), before[:1438], strict=True)
    np.testing.assert_array_equal(np.asarray(dataset.test_x), before[1438:], strict=True)


# ----- Pixels -----


def test_pixel_rows_are_float32_quotients_converted_only_when_read():
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    pixels = data.Pixels(stored, 255)
    expected = stored.astype(np.float32)
    expected /= 255  # float32 division, as the images were decoded before
    assert len(pixels) == 16 and pixels.shape == (16, 16) and pixels.size == 256 and pixels.ndim == 2
    for index in (slice(3, 9), [5, 1, 5], np.array([True, False] * 8), 7, (slice(None), 3)):
        np.testing.assert_array_equal(pixels[index], expected[index], strict=True)
    np.testing.assert_array_equal(np.asarray(pixels), expected, strict=True)
    assert np.asarray(pixels, dtype=np.float64).dtype == np.float64
    assert pixels.min() == 0 and pixels.max() == 1 and pixels.max().dtype == np.float32
    subset = pixels.subset([2, 3])
    assert subset.stored.dtype == np.uint8 and subset.divisor == 255
    np.testing.assert_array_equal(subset[:], expected[[2, 3]], strict=True)
    pixels[:4][:] = 9  # a row handed out is a new array: the stored integers are untouched
    np.testing.assert_array_equal(pixels.stored, stored)
    with pytest.raises(ValueError, match="always a copy"):
        np.asarray(pixels, copy=False)
    assert repr(pixels) == "Pixels(16x16 uint8 / 255)"


def test_a_batch_of_pixels_converts_only_its_rows():
    pixels = data.Pixels(np.full((4000, 784), 128, dtype=np.uint8), 255)
    batch, peak = traced(pixels.__getitem__, np.arange(0, 4000, 40))
    assert batch.shape == (100, 784) and batch.dtype == np.float32
    assert peak <= batch.nbytes + 100 * 784 + 64 * 1024  # the rows' integers and floats, not the set's 12.5 MB


def test_unknown_dataset_lists_choices():
    with pytest.raises(MinivaeError, match="choose one of digits, mnist, fashion-mnist"):
        data.load_dataset("cifar")


def test_digits_takes_no_data_dir(tmp_path):
    with pytest.raises(MinivaeError, match="--data-dir"):
        data.load_dataset("digits", data_dir=tmp_path)


def test_load_dataset_validation_is_seeded():
    first = data.load_dataset(validation=0.25, seed=3)
    again = data.load_dataset(validation=0.25, seed=3)
    assert first.train_x.shape == (1078, 64) and first.valid_x.shape == (360, 64)
    np.testing.assert_array_equal(first.valid_x, again.valid_x)
    assert first.test_x.shape == (359, 64)


def test_validation_split_keeps_the_integers_and_takes_the_same_rows():
    split = data.load_dataset(validation=0.25, seed=3)
    assert split.train_x.stored.dtype == split.valid_x.stored.dtype == np.uint8
    assert split.train_x.divisor == split.valid_x.divisor == 16
    whole = data.load_dataset()
    before = data.validation_split(np.asarray(whole.train_x), whole.train_y, 0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(np.asarray(split.train_x), before[0], strict=True)
    np.testing.assert_array_equal(np.asarray(split.valid_x), before[2], strict=True)
    np.testing.assert_array_equal(split.valid_y, before[3])


def test_validation_split_deterministic_and_disjoint():
    x, y = np.arange(40.0).reshape(20, 2), np.arange(20)
    train_x, train_y, valid_x, valid_y = data.validation_split(x, y, 0.3, np.random.default_rng(1))
    again = data.validation_split(x, y, 0.3, np.random.default_rng(1))
    other = data.validation_split(x, y, 0.3, np.random.default_rng(2))
    np.testing.assert_array_equal(valid_y, again[3])
    assert not np.array_equal(valid_y, other[3])
    assert len(valid_y) == 6 and not set(train_y) & set(valid_y)
    assert sorted(np.concatenate([train_y, valid_y])) == list(range(20))
    np.testing.assert_array_equal(valid_x, x[valid_y])


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, float("nan"), 0.01])
def test_validation_split_refuses_empty_splits(fraction):
    with pytest.raises(MinivaeError, match="empty split"):
        data.validation_split(np.zeros((10, 2)), np.zeros(10), fraction, np.random.default_rng(0))


# ----- Minibatches and binarization -----


def epoch(x, y, rng, **options):
    return list(data.batches(x, y, 5, rng, **options))


def test_batches_cover_every_example_once():
    x, y = np.arange(23.0)[:, None] * np.ones(3), np.arange(23)
    rng = np.random.default_rng(0)
    first, second = epoch(x, y, rng), epoch(x, y, rng)
    assert [len(y_batch) for _, y_batch in first] == [5, 5, 5, 5, 3]
    for batches in (first, second):
        labels = np.concatenate([y_batch for _, y_batch in batches])
        assert sorted(labels) == list(range(23))
        for x_batch, y_batch in batches:
            np.testing.assert_array_equal(x_batch[:, 0], y_batch)
    assert not np.array_equal(first[0][1], second[0][1])


def test_batches_in_order_without_shuffle():
    x, y = np.zeros((12, 2)), np.arange(12)
    labels = [y_batch for _, y_batch in epoch(x, y, np.random.default_rng(0), shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(labels), y)


def binary_images(x, y, rng, mode):
    """Each example's binarized image in one epoch, put back in example order."""
    images = np.empty_like(x)
    for x_batch, y_batch in epoch(x, y, rng, binarize=mode):
        images[y_batch] = x_batch
    return images


def test_static_binarization_is_fixed_dynamic_resamples():
    x, y = np.full((40, 30), 0.5, dtype=np.float32), np.arange(40)
    rng = np.random.default_rng(0)
    static = [binary_images(x, y, rng, "static") for _ in range(2)]
    dynamic = [binary_images(x, y, rng, "dynamic") for _ in range(2)]
    np.testing.assert_array_equal(static[0], static[1])
    assert not np.array_equal(dynamic[0], dynamic[1])
    for images in static + dynamic:
        assert set(np.unique(images)) == {0.0, 1.0} and images.dtype == np.float32
        assert 0.4 < images.mean() < 0.6


def test_binarize_follows_the_probabilities():
    x = np.array([[0.0, 1.0, 0.2]] * 2000, dtype=np.float32)
    mean = data.binarize_static(x, np.random.default_rng(0)).mean(axis=0)
    np.testing.assert_allclose(mean, [0, 1, 0.2], atol=0.03)


@pytest.mark.parametrize("x, y, batch_size, mode, message", [
    (np.zeros((4, 2)), np.zeros(4), 2, "sometimes", "unknown binarization"),
    (np.zeros((4, 2)), np.zeros(4), 0, "none", "batch size"),
    (np.zeros((4, 2)), np.zeros(3), 2, "none", "4 images and 3 labels"),
])
def test_batches_refuse_bad_arguments(x, y, batch_size, mode, message):
    with pytest.raises(MinivaeError, match=message):
        next(data.batches(x, y, batch_size, np.random.default_rng(0), binarize=mode))


def test_check_pixels_counts_nonfinite():
    x = np.full((4, 5), 0.5)
    x[0, :2], x[3, 4] = np.nan, np.inf
    for likelihood in data.LIKELIHOODS:
        with pytest.raises(MinivaeError, match="3 NaN or infinite values out of 20"):
            data.check_pixels(x, likelihood)


def test_check_pixels_range_only_for_bernoulli():
    x = np.array([[0.0, 1.0, -0.1, 1.5, 2.0]])
    with pytest.raises(MinivaeError, match=r"3 values outside \[0, 1\] \(min -0.1, max 2\)"):
        data.check_pixels(x, "bernoulli")
    data.check_pixels(x, "gaussian")
    data.check_pixels(np.clip(x, 0, 1), "bernoulli")
    with pytest.raises(MinivaeError, match="unknown likelihood"):
        data.check_pixels(x, "poisson")


def test_static_binarization_in_chunks_is_one_draw_of_the_whole_shape(monkeypatch):
    x = np.random.default_rng(1).random((37, 5), dtype=np.float32)
    expected = (np.random.default_rng(2).random(x.shape, dtype=np.float32) < x).astype(np.float32)
    for chunk in (1, 7, 11, 10_000):  # rows of 5: odd numbers of uniforms per chunk, and all at once
        monkeypatch.setattr(data, "CHUNK_ELEMENTS", chunk)
        np.testing.assert_array_equal(data.binarize_static(x, np.random.default_rng(2)), expected)


def test_static_binarization_in_place_is_the_same_draw(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 7)
    x = np.random.default_rng(1).random((37, 5), dtype=np.float32)
    expected = data.binarize_static(x, np.random.default_rng(2))
    assert data.binarize_static(x, np.random.default_rng(2), out=x) is x
    np.testing.assert_array_equal(x, expected)
    with pytest.raises(ValueError, match="float32 array of shape"):
        data.binarize_static(x, np.random.default_rng(2), out=np.empty((37, 5)))


def test_static_binarization_in_place_holds_no_second_copy(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 1 << 16)
    x = np.full((4000, 784), 0.5, dtype=np.float32)
    _, peak = traced(data.binarize_static, x, np.random.default_rng(0), out=x)
    assert peak <= 4 * data.CHUNK_ELEMENTS + 64 * 1024


def test_static_binarization_holds_only_the_result_and_a_chunk(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 1 << 16)  # the whole mask alone would be 3.1 MB
    x = np.full((4000, 784), 0.5, dtype=np.float32)
    binary, peak = traced(data.binarize_static, x, np.random.default_rng(0))
    assert binary.dtype == np.float32 and 0.49 < binary.mean() < 0.51
    assert peak <= binary.nbytes + 4 * data.CHUNK_ELEMENTS + 64 * 1024  # not all the uniforms or a mask besides


def test_check_pixels_makes_no_copy_of_valid_data():
    x = np.random.default_rng(0).random((4000, 784), dtype=np.float32)
    for likelihood in data.LIKELIHOODS:
        _, peak = traced(data.check_pixels, x, likelihood)
        assert peak < 64 * 1024  # a mask of x alone would be 3.1 MB


def test_check_pixels_counts_across_chunks(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 3)
    x = np.full((4, 5), 0.5)
    x[0, 1], x[2, 2], x[3, 4] = np.nan, -np.inf, np.inf
    with pytest.raises(MinivaeError, match="3 NaN or infinite values out of 20"):
        data.check_pixels(x, "gaussian")
    x = np.linspace(-1, 2, 20).reshape(4, 5)
    with pytest.raises(MinivaeError, match=r"14 values outside \[0, 1\] \(min -1, max 2\)"):
        data.check_pixels(x, "bernoulli")
    data.check_pixels(np.zeros((0, 5)), "bernoulli")


def gray_pixels(rows=37, columns=5, seed=1):
    return data.Pixels(np.random.default_rng(seed).integers(0, 256, (rows, columns), dtype=np.uint8), 255)


@pytest.mark.parametrize("mode", ["none", "static", "dynamic"])
def test_batches_of_pixels_are_the_batches_of_their_float32_rows(mode):
    pixels, y = gray_pixels(23, 6), np.arange(23)
    from_pixels = epoch(pixels, y, np.random.default_rng(4), binarize=mode)
    from_floats = epoch(np.asarray(pixels), y, np.random.default_rng(4), binarize=mode)
    for (x_a, y_a), (x_b, y_b) in zip(from_pixels, from_floats, strict=True):
        np.testing.assert_array_equal(x_a, x_b, strict=True)
        np.testing.assert_array_equal(y_a, y_b)


def test_static_binarization_of_pixels_is_the_draw_on_their_float32_rows(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 7)
    pixels = gray_pixels()
    expected = data.binarize_static(np.asarray(pixels), np.random.default_rng(2))  # as on float32 images
    binary = data.binarize_static(pixels, np.random.default_rng(2))
    assert isinstance(binary, data.Pixels) and binary.stored.dtype == np.uint8 and binary.divisor == 1
    np.testing.assert_array_equal(binary[:], expected, strict=True)
    assert data.binarize_static(pixels, np.random.default_rng(2), out=pixels) is pixels  # in place
    assert pixels.divisor == 1 and set(np.unique(pixels.stored)) == {0, 1}
    np.testing.assert_array_equal(pixels[:], expected, strict=True)
    with pytest.raises(ValueError, match=r"uint8 Pixels of shape \(37, 5\), not ndarray float32"):
        data.binarize_static(gray_pixels(), np.random.default_rng(2), out=np.empty((37, 5), np.float32))


def test_static_binarization_of_pixels_in_place_holds_a_chunk_at_a_time(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 1 << 16)
    pixels = data.Pixels(np.full((4000, 784), 128, dtype=np.uint8), 255)
    _, peak = traced(data.binarize_static, pixels, np.random.default_rng(0), out=pixels)
    assert 0.49 < pixels.stored.mean() < 0.51
    # a chunk's uniforms and its float32 rows; the set as float32 would be 12.5 MB
    assert peak <= 2 * 4 * data.CHUNK_ELEMENTS + 64 * 1024


def test_check_pixels_reads_pixels_without_converting_them():
    pixels = data.Pixels(np.random.default_rng(0).integers(0, 256, (4000, 784), dtype=np.uint8), 255)
    for likelihood in data.LIKELIHOODS:
        _, peak = traced(data.check_pixels, pixels, likelihood)
        assert peak < 64 * 1024  # the rows as float32 would be 12.5 MB


def test_check_pixels_counts_pixels_above_their_divisor(monkeypatch):
    monkeypatch.setattr(data, "CHUNK_ELEMENTS", 3)
    pixels = data.Pixels(np.array([[0, 16, 17], [20, 3, 16]], dtype=np.uint8), 16)
    with pytest.raises(MinivaeError, match=r"2 values outside \[0, 1\] \(min 0, max 1.25\)"):
        data.check_pixels(pixels, "bernoulli")
    data.check_pixels(pixels, "gaussian")


def test_training_binarizes_the_training_set_once_in_place(fake_mnist):
    pass
    gray = data.load_mnist_like("mnist", fake_mnist)
    config = runconfig.TrainConfig(data="mnist", data_dir=str(fake_mnist), binarize="static")
    prepared = runconfig.prepare_data(config)
    expected = data.binarize_static(np.asarray(gray.train_x), np.random.default_rng(data.STATIC_SEED))
    np.testing.assert_array_equal(prepared.train_x, expected, strict=True)  # the images binarizing float32 gave
    assert prepared.train_x.stored.dtype == np.uint8 and prepared.train_x.divisor == 1
    np.testing.assert_array_equal(prepared.test_x, gray.test_x)  # the test set stays gray
