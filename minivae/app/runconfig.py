"""A training run: its options (``TrainConfig``), and the data, model, optimizer and generators they define (``Run``).

Everything here follows from the config alone, so a checkpoint that stores
the config rebuilds the same run (``run_checkpoint``).
"""
import dataclasses
import math

import numpy as np

from minivae import optim
from minivae.app.data import SPLITS, STATIC_SEED, Dataset, Pixels, binarize_static, check_pixels, load_dataset
from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.vae import VAE

OPTIMIZERS = {"adam": optim.Adam, "sgd": optim.SGD, "adagrad": optim.Adagrad}


LR_SCHEDULES = ("constant", "burda")
# The Gaussian decoder's standard deviations a run takes (--sigma; a checkpoint holding another is refused): its
# log-likelihood divides by sigma^2, which float32 holds only for sigma roughly within [1e-19, 1e19]; pixels lie
# in [0, 1], so useful values are far inside.
SIGMA_RANGE = (1e-6, 1e6)


# The options a run's checkpoint fixes: resuming with another value would not continue the same run.
RESUME_FIELDS = ("data", "train_examples", "test_examples", "hidden", "latent_dim", "activation", "likelihood",
                 "sigma", "logvar_clamp", "objective", "samples", "beta", "kl_warmup", "batch_size", "lr",
                 "lr_schedule", "optimizer", "binarize", "seed")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint."""
    data: str = "digits"
    data_dir: str | None = None
    train_examples: int | None = None  # train on the first N training images only (None: all)
    test_examples: int | None = None  # measure the test ELBO, and draw figures, on the first N test images
    hidden: tuple = (256,)
    latent_dim: int = 2
    activation: str = "relu"
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    logvar_clamp: float | None = None
    objective: str = "elbo"
    samples: int = 1
    beta: float = 1.0
    kl_warmup: int = 0
    batch_size: int = 128
    epochs: int = 150
    lr: float = 3e-3
    lr_schedule: str = "constant"
    optimizer: str = "adam"
    binarize: str = "none"
    seed: int = 1
    log_interval: int = 0
    plot_interval: int = 25
    out: str = "results"
    threads: int | None = None  # BLAS and numba threads; None: train chooses, and stores the count it ran at

    def model_sizes(self, input_dim):
        """Encoder sizes (input, hidden...) and the mirrored decoder sizes (hidden..., input)."""
        return (input_dim, *self.hidden), (*reversed(self.hidden), input_dim)


def prepare_data(config, splits=SPLITS):
    """The dataset's ``splits`` (the first ``train_examples`` and ``test_examples`` of each), checked for the
    likelihood; with static binarization, train binarized once here."""
    data = load_dataset(config.data, config.data_dir, splits=splits)
    data = dataclasses.replace(data, **_first(config.train_examples, "train", data),
                               **_first(config.test_examples, "test", data))
    for x in (data.train_x, data.test_x):
        if x is not None:
            check_pixels(x, config.likelihood)
    if config.binarize == "static" and data.train_x is not None:  # in place: the gray images are not held twice
        binarize_static(data.train_x, np.random.default_rng(STATIC_SEED), out=data.train_x)
    return data


def check_same_data(path, meta, data):
    """Refuse ``data`` unless its images are those the checkpoint at ``path`` was trained on: the test images,
    and the training images where both the checkpoint and ``data`` fingerprint them."""
    trained_on = meta.get("data")
    if not isinstance(trained_on, dict):
        return
    for split, key, found in (("test", "test_images", data.test_fingerprint),
                              ("training", "train_images", data.train_fingerprint)):
        expected = trained_on.get(key)
        if expected == found or (split == "training" and None in (expected, found)):
            continue
        if None in (expected, found):  # one side is the bundled digits, which have no fingerprint
            raise MinivaeError(f"{path}: its record of the {split} images does not fit {data.name} "
                               f"({data.source}); it is damaged, use another checkpoint")
        raise MinivaeError(f"{path} was trained with the {split} images in {trained_on.get('source')} "
                           f"({_described(expected)}), but {data.source} holds other ones ({_described(found)}); "
                           f"pass --data-dir {trained_on.get('source')} or a copy of it")


def _described(fingerprint):
    """A fingerprint in a few words: the file and its size, or how many images and their hash's start."""
    if "file" in fingerprint:
        return f"{fingerprint.get('file')}, {fingerprint.get('bytes')} bytes"
    return f"{fingerprint.get('images')} images, SHA-256 {str(fingerprint.get('sha256'))[:12]}"


def _first(n, split, data):
    """The fields of ``data`` to replace so that ``split`` keeps its first ``n`` images (none when n is None)."""
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if n is None or x is None:
        return {}
    if n > len(x):
        raise MinivaeError(f"--{split}-examples {n}: {data.name} has only {len(x)} {split} images; "
                           "ask for at most that many")
    return {f"{split}_x": x.subset(slice(n)) if isinstance(x, Pixels) else x[:n], f"{split}_y": y[:n]}


def build_model(config, input_dim):
    encoder_sizes, decoder_sizes = config.model_sizes(input_dim)
    return VAE(encoder_sizes, config.latent_dim, decoder_sizes, activation=config.activation,
               likelihood=config.likelihood, sigma=config.sigma, logvar_clamp=config.logvar_clamp,
               rng=np.random.default_rng(config.seed))


def build_optimizer(config, model):
    return OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr)


# ----- The run -----

@dataclasses.dataclass
class Run:
    """Everything a training run holds, which its epochs advance and its checkpoint saves.

    ``rngs``: ``"data"``, the NumPy generator shuffling the host-held images, and
    ``"sample"``, the kernel set's generator drawing the noise eps.
    ``history``: one metrics row per completed epoch.
    """
    config: TrainConfig
    data: Dataset
    model: VAE
    optimizer: optim.Optimizer
    rngs: dict
    history: list = dataclasses.field(default_factory=list)

    @property
    def next_epoch(self):
        """The number of the epoch the run trains next: 1, 2, ..."""
        return len(self.history) + 1

    @property
    def steps_per_epoch(self):
        """Minibatches in an epoch: ceil(training examples / batch size); the last may be shorter."""
        return math.ceil(len(self.data.train_x) / self.config.batch_size)


def start_run(config, data):
    """A fresh run of ``config`` on ``data``: model, optimizer and generators seeded by ``config.seed``, no history."""
    model = build_model(config, data.train_x.shape[1])
    rngs = {"data": np.random.default_rng([config.seed, 0]), "sample": get_backend().kernels.make_rng(config.seed)}
    return Run(config, data, model, build_optimizer(config, model), rngs)
