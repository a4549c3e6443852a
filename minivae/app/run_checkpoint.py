"""The checkpoint of a training run: what ``train`` saves, and the checks made before any of it is trusted.

A run's checkpoint holds the model's and the optimizer's arrays, each random
generator's state (JSON values), the config, the history and where the data
came from. ``read_training_checkpoint`` checks the metadata and every array's
header before a single array is read.
"""
import dataclasses
import math
from typing import NamedTuple

import numpy as np

from minivae.app.checkpoint import load_checkpoint
from minivae.app.checkpoint_meta import check_array_dtypes, check_meta_values, check_step_count, damaged
from minivae.app.runconfig import RESUME_FIELDS, TrainConfig, check_same_data
from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.kernels import reference
from minivae.vae import VAE, parameter_count

CHECKPOINT_NAME = "checkpoint.npz"


class TrainingCheckpoint(NamedTuple):
    """What ``read_training_checkpoint`` found in a checkpoint, checked: its arrays, metadata and options."""
    arrays: dict
    meta: dict
    config: TrainConfig


# ----- Saving and restoring a run -----

def checkpoint_payload(run):
    """The arrays and JSON metadata of a run's checkpoint: everything ``restore_checkpoint`` needs."""
    arrays = {f"model/{name}": value for name, value in run.model.state_dict().items()}
    optimizer_arrays, optimizer_scalars = run.optimizer.state_dict()
    arrays.update({f"optimizer/{name}": value for name, value in optimizer_arrays.items()})
    rng_meta = {name: kernels.rng_state(run.rngs[name]) for name, kernels in _rng_kernels().items()}
    meta = {"config": dataclasses.asdict(run.config), "model": run.model.config, "history": run.history,
            "optimizer": optimizer_scalars, "rng": rng_meta, "backend": get_backend().name,
            "image_shape": list(run.data.image_shape),
            "data": {"source": run.data.source, "test_images": run.data.test_fingerprint,
                     "train_images": run.data.train_fingerprint}}
    return arrays, meta


def checkpoint_nbytes(run):
    """The bytes of the arrays in the run's checkpoint, counted without copying the model or optimizer to the host.

    The parameters and each optimizer buffer are one flat array each, of the
    parameters' size; the generators' states are JSON metadata, not arrays.
    """
    return run.optimizer.flat.data.nbytes * (1 + len(run.optimizer.BUFFERS))


def _rng_kernels():
    """The kernel set owning each generator: NumPy shuffles the host-held data, the backend draws the noise."""
    return {"data": reference, "sample": get_backend().kernels}


def _split_arrays(arrays, prefix):
    return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}


def restore_checkpoint(path, checkpoint, run):
    """Load ``checkpoint`` (``read_training_checkpoint(path)``) into a freshly started ``run``: its model,
    optimizer, generators and history."""
    arrays, meta, trained = checkpoint
    config = run.config
    check_same_data(path, meta, run.data)
    for field in RESUME_FIELDS:
        if getattr(trained, field) != getattr(config, field):
            raise MinivaeError(f"{path} was trained with {field}={getattr(trained, field)!r}, not "
                               f"{getattr(config, field)!r}; resume with the same options")
    check_step_count(path, meta, run.steps_per_epoch)
    run.model.load_state_dict(_split_arrays(arrays, "model/"))
    run.optimizer.load_state_dict(_split_arrays(arrays, "optimizer/"), meta["optimizer"])
    for name, kernels in _rng_kernels().items():
        try:
            run.rngs[name] = kernels.restore_rng(meta["rng"].get(name))
        except MinivaeError as err:
            raise MinivaeError(f"{path}: {err}; it was written with --backend {meta.get('backend', 'numpy')}, "
                               "resume with that backend") from None
    run.history = meta["history"]


# ----- Reading a checkpoint, checked before it is trusted -----

def read_training_checkpoint(path):
    """The ``TrainingCheckpoint`` (arrays, meta, TrainConfig) ``train`` wrote at ``path``, or a one-line MinivaeError.

    Beyond ``load_checkpoint``'s checks: the fields and arrays ``train`` writes, no more, and finite floats.
    """
    config = None

    def check(meta, headers):
        """Before any array is loaded: the metadata's fields, and the arrays a model of its sizes and its optimizer
        hold; keeps the TrainConfig it built."""
        nonlocal config
        config = check_training_meta(path, meta, headers)
    arrays, meta = load_checkpoint(path, check=check)
    for name, array in arrays.items():  # training never saves NaN
        if not np.isfinite(array).all():
            raise damaged(path, f"{name} is not an array of finite floats")
    return TrainingCheckpoint(arrays, meta, config)


def check_training_meta(path, meta, headers):
    """The metadata's ``TrainConfig``; refuses metadata ``train`` did not write, or array headers ((shape, dtype)
    by name) that do not fit it.

    The model's parameter count follows from its stored sizes
    (``vae.parameter_count``); the model's arrays must hold exactly that many
    floats and each optimizer buffer one per parameter. So a metadata claiming
    a huge model is refused unless the file holds its weights, and an array
    nobody asked for is never loaded.
    """
    parts = {"config": dict, "model": dict, "optimizer": dict, "rng": dict, "history": list}
    wrong = [name for name, kind in parts.items() if not isinstance(meta.get(name), kind)]
    if wrong:
        raise MinivaeError(f"{path} is not a checkpoint written by minivae train: its metadata lacks "
                           f"{', '.join(wrong)}; use the checkpoint.npz a training run wrote")
    config = _train_config(path, meta)
    check_meta_values(path, meta, config)
    model = meta["model"]
    try:
        count = parameter_count(model.get("encoder_sizes"), model.get("latent_dim"), model.get("decoder_sizes"))
    except MinivaeError as err:
        raise damaged(path, err) from None
    if any(name.startswith("rng/") for name in headers):
        raise MinivaeError(f"checkpoint {path} holds the states of a GPU generator this minivae no longer has "
                           "(xoroshiro128+ or XORWOW; it draws from Philox4x32-10 now): train the run again")
    _check_current_layout(path, meta, headers)
    unknown = [name for name in headers if not name.startswith(("model/", "optimizer/"))]
    if unknown:
        raise MinivaeError(f"checkpoint {path}: unexpected array {unknown[0]!r}, which minivae train never "
                           "writes; use the checkpoint.npz a training run wrote")
    check_array_dtypes(path, meta, headers)
    stored = sum(math.prod(shape) for name, (shape, _) in headers.items() if name.startswith("model/"))
    if stored != count:
        raise damaged(path, f"its metadata describes a model of {count:,} parameters but its arrays hold "
                            f"{stored:,}")
    for name, (shape, _) in headers.items():
        if name.startswith("optimizer/") and shape != (count,):
            raise MinivaeError(f"checkpoint {path}: {name} has shape {shape}, not ({count},) for the "
                               f"{count:,} parameters its metadata describes; use another checkpoint")
    return config


def _check_current_layout(path, meta, headers):
    """Refuse, in one line, what older versions of minivae wrote: the encoder's heads apart, no image shape."""
    if any(name.startswith(("model/fc_mu.", "model/fc_logvar.")) for name in headers):
        raise MinivaeError(f"checkpoint {path} holds the encoder's mu and logvar heads apart (fc_mu, fc_logvar), "
                           "as minivae wrote before it fused them into fc_heads; retrain it with this minivae")
    if meta.get("image_shape") is None:  # a shape that is there is checked by check_meta_values
        raise MinivaeError(f"checkpoint {path} does not say the (height, width) of its "
                           f"{meta['model']['encoder_sizes'][0]}-pixel images, as minivae wrote before it stored "
                           "them; retrain it with this minivae")


def _train_config(path, meta):
    try:
        return TrainConfig(**{**meta["config"], "hidden": tuple(meta["config"]["hidden"])})
    except (KeyError, TypeError) as exc:
        raise MinivaeError(f"{path}: its training options do not fit this minivae ({exc}); "
                           "use a checkpoint this version wrote") from None


def load_trained(path):
    """The model stored in a checkpoint, and the checkpoint's metadata."""
    arrays, meta, config = read_training_checkpoint(path)
    try:
        model = VAE(**{**meta["model"], "rng": np.random.default_rng(0)})
    except TypeError as exc:
        raise MinivaeError(f"{path}: its model options do not fit this minivae ({exc}); "
                           "use a checkpoint this version wrote") from None
    model.load_state_dict(_split_arrays(arrays, "model/"))
    return model, config, meta
