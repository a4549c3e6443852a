"""Peer frameworks running the same VAE training step that minivae runs.

The model is pytorch/examples vae/main.py's: encoder 784->400 ReLU, heads
400->20 ``mu`` and 400->20 ``logvar``, decoder 20->400 ReLU ->784 logits.
The loss is the negative ELBO averaged over the batch: Bernoulli negative
log-likelihood from the logits summed over pixels, plus the closed-form KL,
with one ``eps`` drawn per step. float32, Adam with lr 1e-3, PyTorch's
default initialisation.

Each peer module (``torch_vae``, ``jax_vae``, ``autograd_vae``) writes that
model in its framework's own idiom and exposes ``make_step(batch_size, seed)``:
a callable running one full step (forward, backward, Adam) on a fixed random
binary batch, returning only when the work is done. The modules import their
framework at the top; this package imports them only on demand, so a missing
framework costs one line from ``available(name)``, never an ImportError.
"""
import importlib
from typing import NamedTuple

import numpy as np

from ..harness import Unavailable

LAYERS = {"fc1": (784, 400), "fc21": (400, 20), "fc22": (400, 20),
          "fc3": (20, 400), "fc4": (400, 784)}  # name: (in, out), as in pytorch/examples
LEARNING_RATE = 1e-3


class Peer(NamedTuple):
    module: str           # in this package
    pip: str              # what to install; its first word is the framework's import name
    numpy_buffers: bool   # arrays live in NumPy, so tracemalloc sees them


PEERS = {
    "torch eager": Peer("torch_vae", "torch", numpy_buffers=False),
    "jax jit": Peer("jax_vae", "jax jaxlib", numpy_buffers=False),
    "autograd": Peer("autograd_vae", "autograd", numpy_buffers=True),
}


def available(name):
    """None if peer ``name`` can run here, else one line saying why not."""
    peer = PEERS[name]
    try:
        importlib.import_module(f"{__name__}.{peer.module}")
    except ImportError as error:
        framework = peer.pip.split()[0]
        if (error.name or "").split(".")[0] in peer.pip.split():
            return f"{framework} not installed: pip install {peer.pip}"
        return f"{framework} failed to import: {error}"
    return None


def make_step(name, batch_size, seed, **options):
    """Peer ``name``'s one-step callable, or ``Unavailable`` saying why it cannot run.

    ``options`` go to the peer's ``make_step``, e.g. ``device="cuda"`` for torch.
    """
    reason = available(name)
    if reason:
        raise Unavailable(reason)
    module = importlib.import_module(f"{__name__}.{PEERS[name].module}")
    return module.make_step(batch_size, seed, **options)


def binary_batch(batch_size, seed):
    """A fixed random batch of binary 28x28 images: float32, shape (batch_size, 784)."""
    rng = np.random.default_rng(seed)
    return (rng.random((batch_size, LAYERS["fc1"][0])) < 0.5).astype(np.float32)


def torch_default_init(seed):
    """{layer: (W, b)} drawn as torch.nn.Linear does, with W stored (in, out).

    Linear's default (kaiming_uniform_ with a=sqrt(5), and its bias rule) is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both weight and bias.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, (fan_in, fan_out) in LAYERS.items():
        bound = 1 / np.sqrt(fan_in)
        params[name] = (rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
                        rng.uniform(-bound, bound, fan_out).astype(np.float32))
    return params
