"""The values a training checkpoint's metadata may hold, checked before any of them is used.

``run_checkpoint.check_training_meta`` makes sure the metadata has its parts;
``check_meta_values`` refuses, in one line naming the field, any value
``minivae train`` would never write: an option of the wrong type or out of its
range, an empty or non-numeric history, a model that is not the one its
options describe, an image shape that does not multiply to its pixels, a
malformed record of the data. ``check_array_dtypes`` holds the model's and the
optimizer's arrays to the model's own dtype, and ``check_step_count`` the
optimizer's steps to the epochs the history counts.
"""
import math
import numbers

import numpy as np

from minivae.app.data import BINARIZE_MODES, DATASET_NAMES
from minivae.app.runconfig import LR_SCHEDULES, OPTIMIZERS, SIGMA_RANGE
from minivae.app.threads import MAX_THREADS
from minivae.errors import MinivaeError
from minivae.kernels.reference import ACTIVATIONS
from minivae.nn import is_int, is_positive_int
from minivae.vae import LIKELIHOODS, OBJECTIVES

DAMAGED = "it is damaged, use another checkpoint"
MODEL_DTYPES = ("float32", "float64")


# ----- What each value may be -----

def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def non_negative_int(value):
    return is_int(value) and value >= 0


def positive_number(value):
    return _is_number(value) and value > 0


def number_within(low, high):
    return lambda value: _is_number(value) and low <= value <= high


def one_of(choices):
    return lambda value: value in choices


def optional(rule):
    return lambda value: value is None or rule(value)


def int_list(value):
    return isinstance(value, list) and len(value) > 0 and all(map(is_positive_int, value))


# The options a run's checkpoint stores (TrainConfig's fields), each with what train could have written.
CONFIG_RULES = {
    "data": one_of(DATASET_NAMES), "data_dir": optional(lambda value: isinstance(value, str)),
    "train_examples": optional(is_positive_int), "test_examples": optional(is_positive_int), "hidden": int_list,
    "latent_dim": is_positive_int, "activation": one_of(ACTIVATIONS), "likelihood": one_of(LIKELIHOODS),
    "sigma": number_within(*SIGMA_RANGE), "logvar_clamp": optional(positive_number), "objective": one_of(OBJECTIVES),
    "samples": is_positive_int, "beta": positive_number, "kl_warmup": non_negative_int, "batch_size": is_positive_int,
    "epochs": is_positive_int, "lr": positive_number, "lr_schedule": one_of(LR_SCHEDULES),
    "optimizer": one_of(tuple(OPTIMIZERS)), "binarize": one_of(BINARIZE_MODES), "seed": non_negative_int,
    "log_interval": non_negative_int, "plot_interval": non_negative_int, "out": lambda value: isinstance(value, str),
    "threads": optional(lambda value: is_positive_int(value) and value <= MAX_THREADS),
}
FINGERPRINT_RULES = {  # data.file_fingerprint (test images) and data.images_fingerprint (training images)
    "test_images": {"file": lambda value: isinstance(value, str), "bytes": non_negative_int,
                    "sha256_first_mib": lambda value: isinstance(value, str)},
    "train_images": {"images": non_negative_int, "sha256": lambda value: isinstance(value, str)},
}


def damaged(path, what):
    """The one-line MinivaeError refusing the checkpoint ``path``, which ``what`` shows to be damaged."""
    return MinivaeError(f"checkpoint {path}: {what}; {DAMAGED}")


# ----- The checks -----

def check_meta_values(path, meta, config):
    """Refuse metadata (already holding its parts; ``config`` its TrainConfig) with a value train never writes."""
    for field, value in meta["config"].items():
        if field in CONFIG_RULES and not CONFIG_RULES[field](value):
            raise damaged(path, f"its option {field} is {value!r}, which minivae train never writes")
    _check_history(path, meta["history"])
    _check_model(path, meta["model"], config)
    _check_image_shape(path, meta.get("image_shape"), meta["model"])
    _check_data(path, meta.get("data"))


def _check_history(path, history):
    """One row per epoch, 1, 2, ..., each value a finite number; at least one (train saves after an epoch)."""
    if not history:
        raise damaged(path, "its history is empty, but minivae train writes a checkpoint only after an epoch")
    for n, row in enumerate(history, 1):
        if not isinstance(row, dict) or row.get("epoch") != n:
            raise damaged(path, "its history does not count epochs 1, 2, ...")
        wrong = [key for key, value in row.items() if not _is_number(value)]
        if wrong:
            raise damaged(path, f"epoch {n} of its history has {wrong[0]} = {row[wrong[0]]!r}, not a finite number")


def _check_model(path, model, config):
    """The stored model is the one its options describe: hidden sizes mirrored, latent size, distributions."""
    encoder, decoder, hidden = model.get("encoder_sizes"), model.get("decoder_sizes"), list(config.hidden)
    expected = {"latent_dim": config.latent_dim, "activation": config.activation, "likelihood": config.likelihood,
                "logvar_clamp": config.logvar_clamp}
    fits = (isinstance(encoder, list) and isinstance(decoder, list) and encoder[1:] == hidden
            and decoder[:-1] == hidden[::-1] and model.get("dtype", "float32") in MODEL_DTYPES
            and all(model.get(key, value) == value for key, value in expected.items()))
    if not fits:
        raise damaged(path, "its model is not the one its options describe (hidden, latent_dim, activation, "
                            "likelihood, logvar_clamp, a float32 or float64 dtype)")


def _check_image_shape(path, shape, model):
    """Two positive whole numbers whose product is the model's input size (absent: refused as an older layout)."""
    if shape is None:
        return
    pixels = model["encoder_sizes"][0]
    if not (isinstance(shape, list) and len(shape) == 2 and all(map(is_positive_int, shape))
            and math.prod(shape) == pixels):
        raise damaged(path, f"its image_shape {shape!r} is not two positive whole numbers making its {pixels} pixels")


def _check_data(path, data):
    """Where the data came from: a source, and the fingerprints ``data.py`` writes (or None)."""
    if data is None:
        return
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        raise damaged(path, f"its record of the data {data!r} names no source")
    for key, rules in FINGERPRINT_RULES.items():
        fingerprint = data.get(key)
        if fingerprint is not None and not (isinstance(fingerprint, dict) and fingerprint.keys() == rules.keys()
                                            and all(rule(fingerprint[name]) for name, rule in rules.items())):
            raise damaged(path, f"its data's {key} {fingerprint!r} is not a fingerprint minivae writes")


def check_array_dtypes(path, meta, headers):
    """The model's and the optimizer's arrays are of the model's dtype (float32 unless it says float64)."""
    dtype = np.dtype(meta["model"].get("dtype", "float32"))
    for name, (_, stored) in headers.items():
        if name.startswith(("model/", "optimizer/")) and stored != dtype:
            raise damaged(path, f"{name} is {stored}, not the model's {dtype}")


def check_step_count(path, meta, steps_per_epoch):
    """The optimizer took as many steps as the history's epochs make (a step per batch)."""
    steps, epochs = meta["optimizer"].get("step_count"), len(meta["history"])
    if steps != epochs * steps_per_epoch:
        raise damaged(path, f"its optimizer took {steps!r} steps, but {epochs} epochs of {steps_per_epoch} batches "
                            f"make {epochs * steps_per_epoch}")
