"""Checkpoints: exact round trips, atomic writes, and refusal of pickles and damaged files."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

from checkpoint_files import UNPICKLED, Trap, encoded_meta, write_npz
from minivae.app import checkpoint
from minivae.errors import MinivaeError
from minivae.kernels import reference
from strategies import mutated


def sample_arrays():
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-300])
    return {
        "encoder.fc1.weight": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32),
        "special": special,
        "counts": np.arange(5, dtype=np.int64),
        "mask": np.array([True, False]),
        "step": np.array(7),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


SAMPLE_META = {
    "config": {"dataset": "digits", "hidden": [400, 20], "lr": 1e-3, "note": "µ σ"},
    "epoch": 3,
    "adam": {"t": 120, "beta1": 0.9},
    "big": 2**127 + 5,
    "nothing": None,
}


def assert_bitwise_equal(loaded, arrays):
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        assert loaded[name].tobytes() == array.tobytes(), name


# ----- Round trips -----


def test_round_trip(tmp_path):
    path = tmp_path / "model.npz"
    checkpoint.save_checkpoint(path, sample_arrays(), SAMPLE_META)
    arrays, meta = checkpoint.load_checkpoint(path)
    assert_bitwise_equal(arrays, sample_arrays())
    assert meta == SAMPLE_META
    assert os.listdir(tmp_path) == ["model.npz"]


def test_rng_state_restores_the_stream(tmp_path):
    rng = np.random.default_rng(5)
    rng.random(7)
    checkpoint.save_checkpoint(tmp_path / "c.npz", {}, {"rng": reference.rng_state(rng)})
    expected = rng.standard_normal(10)
    _, meta = checkpoint.load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(reference.restore_rng(meta["rng"]).standard_normal(10), expected)


@pytest.mark.parametrize("name", reference.BIT_GENERATORS)
def test_rng_state_is_json_safe_for_every_bit_generator(name):
    rng = np.random.Generator(getattr(np.random, name)(11))
    rng.random(3)
    state = json.loads(json.dumps(reference.rng_state(rng)))
    np.testing.assert_array_equal(reference.restore_rng(state).random(5), rng.random(5))


@pytest.mark.parametrize("state", [
    None,
    {"bit_generator": "Evil"},
    {"bit_generator": "PCG64"},
    {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}, "has_uint32": 0, "uinteger": 0},
    {"bit_generator": "MT19937", "state": {"key": [1, 2, 3], "pos": 624}},  # a key of 624 words, cut short
])
def test_restore_rng_refuses_bad_state(state):
    with pytest.raises(MinivaeError, match="random state"):
        reference.restore_rng(state)


# ----- Refusing bad files -----


def test_pickled_object_array_refused(tmp_path):
    path = write_npz(tmp_path / "evil.npz", trap=np.array([Trap()], dtype=object),
                     __meta__=encoded_meta({"format_version": 1, "meta": {}}))
    with pytest.raises(MinivaeError, match="evil.npz: array 'trap' holds Python objects, which only pickle"):
        checkpoint.load_checkpoint(path)
    assert UNPICKLED == []


def test_truncated_file_refused(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save_checkpoint(path, sample_arrays(), SAMPLE_META)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(MinivaeError, match="c.npz is unreadable or corrupt"):
        checkpoint.load_checkpoint(path)


@pytest.mark.parametrize("content, message", [
    (b"", "not an .npz file"),
    (b"epoch,loss\n1,93.2\n", "not an .npz file"),
    (None, "single .npy array"),
])
def test_non_npz_files_refused(tmp_path, content, message):
    path = tmp_path / "c.npz"
    if content is None:
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    else:
        path.write_bytes(content)
    with pytest.raises(MinivaeError, match=message):
        checkpoint.load_checkpoint(path)


@pytest.mark.parametrize("meta, message", [
    (None, "no __meta__ entry"),
    (np.frombuffer(b"{not json", dtype=np.uint8), "metadata is corrupt"),
    (encoded_meta({"meta": {}}), "metadata is corrupt"),
    (encoded_meta({"format_version": 99, "meta": {}}), "format version 99 but this minivae reads version 1"),
])
def test_bad_meta_refused(tmp_path, meta, message):
    extra = {} if meta is None else {"__meta__": meta}
    path = write_npz(tmp_path / "c.npz", w=np.zeros(2), **extra)
    with pytest.raises(MinivaeError, match=message):
        checkpoint.load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(MinivaeError, match="no checkpoint at"):
        checkpoint.load_checkpoint(tmp_path / "absent.npz")


@pytest.mark.parametrize("arrays, meta, message", [
    ({"objects": np.array([{}], dtype=object)}, {}, "holds Python objects"),
    ({"__meta__": np.zeros(2)}, {}, "name '__meta__' is not allowed"),
    ({}, {"loss": np.float32(1.5)}, "not JSON-serialisable"),
])
def test_save_refuses_what_cannot_round_trip(tmp_path, arrays, meta, message):
    with pytest.raises(MinivaeError, match=message):
        checkpoint.save_checkpoint(tmp_path / "c.npz", arrays, meta)
    assert os.listdir(tmp_path) == []


# ----- Atomic writes -----


def half_write_then_fail(file, **arrays):
    file.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def io_error(*args, **kwargs):
    raise OSError(5, "Input/output error")


@pytest.mark.parametrize("target, replacement, raised", [
    ("savez", half_write_then_fail, MinivaeError),
    ("savez", interrupt, KeyboardInterrupt),
    ("replace", io_error, MinivaeError),
])
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target, replacement, raised):
    path = tmp_path / "c.npz"
    checkpoint.save_checkpoint(path, {"w": np.ones(3)}, {"epoch": 1})
    module = np if target == "savez" else os
    monkeypatch.setattr(module, target, replacement)
    with pytest.raises(raised):
        checkpoint.save_checkpoint(path, {"w": np.zeros(3)}, {"epoch": 2})
    monkeypatch.undo()
    arrays, meta = checkpoint.load_checkpoint(path)
    assert meta == {"epoch": 1} and arrays["w"].tolist() == [1, 1, 1]
    assert os.listdir(tmp_path) == ["c.npz"]


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(MinivaeError, match="cannot write checkpoint"):
        checkpoint.save_checkpoint(tmp_path / "absent" / "c.npz", {}, {})


# ----- Output directories -----


def test_check_writable_creates_the_directory(tmp_path):
    directory = checkpoint.check_writable(tmp_path / "runs" / "a")
    assert directory.is_dir() and os.listdir(directory) == []


def test_check_writable_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "results").write_text("a file, not a directory")
    with pytest.raises(MinivaeError, match="cannot write to directory .*results/run1 .*Not a directory"):
        checkpoint.check_writable(tmp_path / "results" / "run1")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; covered by the file-parent test")
def test_check_writable_refuses_a_read_only_directory(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(MinivaeError, match="Permission denied"):
            checkpoint.check_writable(tmp_path)
    finally:
        tmp_path.chmod(0o700)


# ----- Fuzzing: load or refuse, nothing else -----


def loads_or_refuses(path, blob):
    path.write_bytes(blob)
    try:
        arrays, meta = checkpoint.load_checkpoint(path)
    except MinivaeError:
        return
    assert isinstance(arrays, dict) and isinstance(meta, dict)


@given(blob=st.binary(max_size=200))
def test_fuzz_random_bytes(scratch, blob):
    loads_or_refuses(scratch / "random.npz", blob)


@given(choice=st.data())
def test_fuzz_mutated_checkpoint(scratch, choice):
    valid = scratch / "valid.npz"
    checkpoint.save_checkpoint(valid, {"w": np.arange(6.0).reshape(2, 3)}, {"epoch": 1})
    loads_or_refuses(scratch / "mutant.npz", choice.draw(mutated(valid.read_bytes())))
