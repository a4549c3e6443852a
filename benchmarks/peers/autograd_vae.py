"""autograd peer: the VAE on HIPS/autograd's NumPy, with Adam as autograd writes it.

autograd's own ``misc.optimizers.adam`` runs a whole training loop, so the
step below repeats one iteration of it: the parameters are one flat vector
(``autograd.misc.flatten``), the gradient is taken on the structured
parameters and flattened, and Adam updates the flat vector.
"""
import autograd.numpy as np
from autograd import grad
from autograd.misc import flatten
from numpy.random import default_rng

from . import LEARNING_RATE, binary_batch, torch_default_init

B1, B2, EPS = 0.9, 0.999, 1e-8  # Adam's defaults in autograd and PyTorch


def relu(x):
    return np.maximum(x, 0.0)


def dense(params, x):
    w, b = params
    return np.dot(x, w) + b


def encode(params, x):
    h1 = relu(dense(params["fc1"], x))
    return dense(params["fc21"], h1), dense(params["fc22"], h1)


def decode(params, z):
    return dense(params["fc4"], relu(dense(params["fc3"], z)))


def loss_function(params, x, eps):
    """Negative ELBO averaged over the batch, for a given draw ``eps``."""
    mu, logvar = encode(params, x)
    logits = decode(params, mu + eps * np.exp(0.5 * logvar))
    bce = np.sum(np.logaddexp(0.0, logits) - x * logits)  # binary cross-entropy with logits
    # KL(N(mu, sigma^2) || N(0, I)): Kingma & Welling 2014, Appendix B
    kld = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar))
    return (bce + kld) / x.shape[0]


def make_step(batch_size, seed):
    """One training step per call on a fixed batch (NumPy work is synchronous)."""
    rs = default_rng(seed)
    x = binary_batch(batch_size, seed)
    flat, unflatten = flatten(torch_default_init(seed))
    m, v = np.zeros_like(flat), np.zeros_like(flat)
    gradient = grad(loss_function)
    i = 0

    def step():
        nonlocal flat, m, v, i
        eps = rs.standard_normal((batch_size, 20), dtype=np.float32)
        g, _ = flatten(gradient(unflatten(flat), x, eps))
        m = (1 - B1) * g + B1 * m
        v = (1 - B2) * g**2 + B2 * v
        mhat = m / (1 - B1**(i + 1))
        vhat = v / (1 - B2**(i + 1))
        flat = flat - LEARNING_RATE * mhat / (np.sqrt(vhat) + EPS)
        i += 1
    return step
