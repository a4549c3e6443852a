"""JAX peer: the VAE as pure functions; the whole step, Adam included, is one jit.

The optimizer state is donated to the compiled step, so XLA updates the
parameters and Adam moments in place.
"""
import functools

import jax
import jax.numpy as jnp
from jax.example_libraries import optimizers

from . import LEARNING_RATE, binary_batch, torch_default_init


def dense(params, x):
    w, b = params
    return x @ w + b


def encode(params, x):
    h1 = jax.nn.relu(dense(params["fc1"], x))
    return dense(params["fc21"], h1), dense(params["fc22"], h1)


def reparameterize(key, mu, logvar):
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + eps * jnp.exp(0.5 * logvar)


def decode(params, z):
    return dense(params["fc4"], jax.nn.relu(dense(params["fc3"], z)))


def loss_function(params, x, key):
    """Negative ELBO averaged over the batch."""
    mu, logvar = encode(params, x)
    logits = decode(params, reparameterize(key, mu, logvar))
    bce = jnp.sum(jax.nn.softplus(logits) - x * logits)  # binary cross-entropy with logits
    # KL(N(mu, sigma^2) || N(0, I)): Kingma & Welling 2014, Appendix B
    kld = -0.5 * jnp.sum(1 + logvar - mu**2 - jnp.exp(logvar))
    return (bce + kld) / x.shape[0]


def make_step(batch_size, seed, device=None):
    """One training step per call on a fixed batch; blocks until the device is done.

    Every array is committed to ``device`` (default: the first CPU device,
    whatever JAX's default device is, so a machine with jax-cuda still times
    the CPU here), and the jitted step runs where its arguments are.
    """
    device = device or jax.devices("cpu")[0]
    opt_init, opt_update, get_params = optimizers.adam(LEARNING_RATE)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, x):
        i, opt_state, key = state
        key, subkey = jax.random.split(key)
        grads = jax.grad(loss_function)(get_params(opt_state), x, subkey)
        return i + 1, opt_update(i, grads, opt_state), key

    with jax.default_device(device):
        x = jax.device_put(binary_batch(batch_size, seed), device)
        params = jax.device_put(torch_default_init(seed), device)
        state = jax.device_put((jnp.asarray(0), opt_init(params), jax.random.key(seed)), device)

    def step():
        nonlocal state
        state = jax.block_until_ready(train_step(state, x))
    return step
