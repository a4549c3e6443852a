"""The model and the images a command works on: a checkpoint's (or a fresh one's), or a small one trained in seconds."""
import dataclasses

import numpy as np

from minivae.app.data import STATIC_SEED, binarize_static
from minivae.app.run_checkpoint import load_trained
from minivae.app.runconfig import TrainConfig, build_model, check_same_data, prepare_data
from minivae.app.training import train
from minivae.errors import MinivaeError


def load_model_and_data(checkpoint, data_name=None, data_dir=None, split="test"):
    """(model, config, x): a checkpoint's model (or a fresh one for ``data_name``) and a split's images (``Pixels``,
    from ``split_images``); prints where they were read."""
    if checkpoint is None:
        config, meta = TrainConfig(data=data_name or "digits"), {}
    else:
        model, config, meta = load_trained(checkpoint)
        if data_name not in (None, config.data):
            raise MinivaeError(f"{checkpoint} was trained on {config.data}, not {data_name}; drop --data")
    x, read_from = split_images(checkpoint, config, meta, data_dir, split)
    print(read_from)
    if checkpoint is None:
        model = build_model(config, x.shape[1])
    return model, config, x


def split_images(checkpoint, config, meta, data_dir=None, split="test"):
    """(x, where): the images (``Pixels``) of ``split`` a model trained per ``config`` is scored on, and in words
    where they were read (``digits test images from ...``).

    Only that split is read (from ``data_dir``, else the run's own); its test
    images must be the checkpoint's (``meta``). A model trained on binarized
    images (static or dynamic) is evaluated on one fixed binarization of the
    split (seed ``data.STATIC_SEED``), as papers do.
    """
    data = prepare_data(dataclasses.replace(config, data_dir=data_dir or config.data_dir,  # every image
                                            train_examples=None, test_examples=None), splits=(split,))
    check_same_data(checkpoint, meta, data)
    x = data.train_x if split == "train" else data.test_x
    if config.binarize != "none":
        x = binarize_static(x, np.random.default_rng(STATIC_SEED))
    return x, f"{data.name} {split} images from {data.source}"


def train_small_model(out, epochs=40, seed=1, **options):
    """A small VAE (64 hidden units, a 2-D latent space by default) trained on the bundled digits in a few seconds.

    ``options`` replace other ``TrainConfig`` fields: ``latent_dim=5``, ``likelihood="gaussian", sigma=0.3``.
    """
    fields = dict(data="digits", hidden=(64,), latent_dim=2, batch_size=64, lr=1e-2, plot_interval=0)
    config = TrainConfig(**{**fields, **options}, epochs=epochs, seed=seed, out=str(out))
    return train(config, progress=False, log=lambda line: None, overwrite=True).model, config
