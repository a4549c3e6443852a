"""The tapes a learner asks to see, traced after one backward pass of a small VAE on a few digits.

- ``elbo``: -mean ELBO, the loss training minimizes. The gradient reaches mu
  and logvar through z = mu + exp(logvar / 2) * eps; the noise eps is a leaf
  that receives none (the reparameterization trick).
- ``score_function``: the surrogate whose gradient is the score-function
  estimate of the encoder's gradient, sum_b 1/K sum_k f(z_k) log q(z_k | x)
  with z sampled and f(z_k) = log p(x, z_k) - log q(z_k | x) taken as numbers:
  the gradient reaches the encoder only through log q.
- ``iwae``: -mean L_K, the importance-weighted bound, K = 3: log p(x | z_k),
  log p(z_k) and log q(z_k | x) per sample, joined by a log-sum-exp.

Each is drawn (``tape_plot.save_tape``) and written as DOT for graphviz.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivae.app.files import write_atomically
from minivae.app.tape_plot import save_tape, tape_dot
from minivae.backend import get_backend
from minivae.estimators import elbo_problem, score_function_signal, score_function_surrogate
from minivae.tape import retain_grads, trace
from minivae.tensor import Tensor, no_grad
from minivae.vae import VAE

IWAE_SAMPLES = 3  # samples per image of the score-function and IWAE tapes; B = 4 images, so every axis differs


def small_model():
    """An untrained 64-16-2 VAE for the bundled 8x8 digits: on its tapes each size (64, 16, 2) names one axis."""
    return VAE((64, 16), 2, (16, 64), rng=np.random.default_rng(0))


@dataclass
class Preset:
    title: str
    caption: str
    build: object  # function(model, x, rng) -> (loss, names, roles)


def _noise(model, x, k, rng):
    """eps ~ N(0, I) of shape (K, B, latent), from the active backend's generator."""
    return get_backend().kernels.standard_normal(rng, (k, len(x), model.config["latent_dim"]), model.dtype)


def elbo_loss(model, x, rng):
    """-mean ELBO with one sample per image, as a training step computes it; its terms named."""
    terms = model.elbo(x, eps=_noise(model, x, 1, rng))
    return -terms.elbo.mean(), {terms.elbo: "ELBO", terms.reconstruction: "reconstruction", terms.kl: "KL"}, {}


def iwae_loss(model, x, rng):
    """-mean L_K with K = ``IWAE_SAMPLES``."""
    terms = model.iwae(x, eps=_noise(model, x, IWAE_SAMPLES, rng))
    return -terms.bound.mean(), {terms.bound: "L_K"}, {}


def score_function_loss(model, x, rng):
    """The score-function surrogate of the whole sampled ELBO (``estimators.score_function_surrogate``), K = 3."""
    problem = elbo_problem(model, x, kl="sampled")
    q = problem.posterior()
    with no_grad():
        z = q.rsample(eps=_noise(model, x, IWAE_SAMPLES, rng))
    signal = score_function_signal(problem, q, z)
    surrogate = score_function_surrogate(problem, q, z, signal)
    names = {q.mu: "mu", q.logvar: "logvar", z: "z (sampled)", signal: "f(z) as numbers", surrogate: "surrogate"}
    return surrogate, names, {z: "noise"}


PRESETS = {
    "elbo": Preset("the ELBO's tape: loss = -mean ELBO, one sample per image",
                   "the gradient reaches mu and logvar through z = reparameterize(mu, logvar, eps); "
                   "the noise eps and the data x receive none", elbo_loss),
    "score_function": Preset(
        "the score-function surrogate's tape: sum_b mean_k f(z_k) log q(z_k | x)",
        "z is sampled and f(z) = log p(x, z) - log q(z | x) enters as numbers: the decoder is not on the tape, "
        "and the gradient reaches the encoder only through log q(z | x)", score_function_loss),
    "iwae": Preset(f"the importance-weighted bound's tape: loss = -mean L_K, K = {IWAE_SAMPLES}",
                   "log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) for each of the K samples, "
                   "joined by logsumexp; the gradient reaches mu and logvar through z and through log q",
                   iwae_loss),
}


def preset_tape(name, model, x, seed=0):
    """The tape of preset ``name`` for ``model`` on images x (B, D), after one backward pass."""
    x = Tensor(x, dtype=model.dtype)
    model.zero_grad()
    loss, names, roles = PRESETS[name].build(model, x, get_backend().kernels.make_rng(seed))
    retain_grads(loss)
    loss.backward()
    names = {**{p: n for n, p in model.named_parameters()}, x: "x", loss: "loss", **names}
    return trace(loss, names, {x: "data", **roles})


def write_tapes(out, model, x, names=tuple(PRESETS), seed=0):
    """tape_NAME.png and tape_NAME.dot in ``out`` for each preset in ``names``; returns {name: Tape}."""
    out = Path(out)
    tapes = {}
    for name in names:
        preset = PRESETS[name]
        tapes[name] = preset_tape(name, model, x, seed)
        save_tape(out / f"tape_{name}.png", tapes[name], preset.title, preset.caption)
        dot = tape_dot(tapes[name], preset.title)
        write_atomically(out / f"tape_{name}.dot", lambda f, text=dot: f.write(text.encode()))
    return tapes
