"""The Variational Autoencoder (Kingma & Welling 2014).

- encoder q(z | x) = N(mu(x), diag(exp(logvar(x)))): a hidden MLP, then one
  Linear layer ``fc_heads`` giving [mu | logvar] side by side, split by columns;
- prior p(z) = N(0, I);
- decoder p(x | z): Bernoulli(sigmoid(logits(z))) or N(mean(z), sigma^2 I).

Training maximizes the evidence lower bound, per example, in nats:

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x)

with the expectation estimated by K reparameterized samples
z_k = mu + exp(logvar / 2) * eps_k, and the KL in closed form. Or it
maximizes the importance-weighted bound (Burda et al. 2016), from the same
K samples:

    L_K(x) = log 1/K sum_k w_k,  w_k = p(x | z_k) p(z_k) / q(z_k | x);
    ELBO = E L_1 <= E L_K <= E L_{K+1} <= log p(x).

``beta`` weighs the KL term of either objective (Higgins et al. 2017); 1 gives the bounds.
"""
import math
import numbers
from dataclasses import dataclass

import numpy as np

from minivae import ops
from minivae.backend import get_backend
from minivae.distributions import Bernoulli, DiagonalNormal, Gaussian, check_sigma, log_prior
from minivae.errors import MinivaeError, check_finite
from minivae.nn import MLP, Linear, Module, check_positive_int, is_positive_int
from minivae.tensor import Tensor, no_grad

LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae")
DTYPES = ("float32", "float64")
WEIGHTS_ADVICE = "the checkpoint's weights are too large to decode; use another checkpoint"


@dataclass
class ElboTerms:
    """Per-example Tensors of shape (B,), in nats: elbo = reconstruction - kl."""
    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor


@dataclass
class IwaeTerms:
    """Per-example Tensors of shape (B,), in nats, from one set of K samples.

    bound = L_K; reconstruction - kl is the K-sample ELBO of the same samples.
    """
    bound: Tensor
    reconstruction: Tensor
    kl: Tensor


def _checked_sizes(name, sizes):
    """``sizes`` as a list of ints, or a one-line MinivaeError."""
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(map(is_positive_int, sizes)):
        raise MinivaeError(f"VAE: {name} must be a non-empty list of positive integers such as "
                           f"(784, 400), got {sizes!r}")
    return [int(n) for n in sizes]


def _checked_dtype(dtype):
    """The dtype's name, float32 or float64, or a one-line MinivaeError."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise MinivaeError(f"VAE: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return name


def _checked_clamp(clamp):
    """None (no clamp) or a finite number > 0 as a float, or a one-line MinivaeError."""
    if clamp is None:
        return None
    if isinstance(clamp, bool) or not isinstance(clamp, numbers.Real) or not 0 < clamp < math.inf:
        raise MinivaeError(f"VAE: logvar_clamp must be None or a finite number > 0, got {clamp!r}")
    return float(clamp)


class VAE(Module):
    """A VAE with MLP encoder and decoder; e.g. ``VAE((784, 400), 20, (400, 784))``.

    ``encoder_sizes`` runs from the data to the last hidden layer,
    ``decoder_sizes`` from the first hidden layer to the data. The encoder
    ends in one Linear layer of 2 * latent outputs whose first half is mu and
    second half logvar: one matrix product for both heads instead of two (and
    one fewer in each of the two backward products), at the cost of slicing,
    whose backward writes each half's gradient into its columns. ``config``
    holds the constructor arguments, JSON-safe, so ``VAE(**model.config)`` rebuilds it.

    ``logvar_clamp=c`` (off by default) clips the encoder's logvar to [-c, c]
    with ``ops.clip``, so exp(logvar) stays between e^-c and e^c even when
    training goes astray; the gradient is zero outside the interval.
    """

    def __init__(self, encoder_sizes, latent_dim, decoder_sizes, activation="relu",
                 likelihood="bernoulli", sigma=1.0, init="pytorch", rng=None, dtype=np.float32,
                 logvar_clamp=None):
        encoder_sizes = _checked_sizes("encoder_sizes", encoder_sizes)
        decoder_sizes = _checked_sizes("decoder_sizes", decoder_sizes)
        check_positive_int("VAE", "latent_dim", latent_dim)
        if decoder_sizes[-1] != encoder_sizes[0]:
            raise MinivaeError(f"VAE: the decoder must output what the encoder reads: decoder_sizes ends "
                               f"with {decoder_sizes[-1]} but encoder_sizes starts with {encoder_sizes[0]}")
        if likelihood not in LIKELIHOODS:
            raise MinivaeError(f"VAE: unknown likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        self.config = dict(encoder_sizes=encoder_sizes, latent_dim=int(latent_dim),
                           decoder_sizes=decoder_sizes, activation=activation, likelihood=likelihood,
                           sigma=check_sigma(sigma), init=init, dtype=_checked_dtype(dtype),
                           logvar_clamp=_checked_clamp(logvar_clamp))
        rng = np.random.default_rng(0) if rng is None else rng
        layer_options = dict(init=init, rng=rng, dtype=dtype)
        self.encoder = MLP(encoder_sizes, activation, final_activation=activation, **layer_options)
        self.fc_heads = Linear(encoder_sizes[-1], 2 * latent_dim, **layer_options)
        self.decoder = MLP([latent_dim] + decoder_sizes, activation, **layer_options)

    @property
    def dtype(self):
        return self.fc_heads.weight.dtype

    def encode(self, x):
        """x (B, D) -> (mu, logvar), each (B, latent): the parameters of q(z | x); logvar clipped if asked.

        [mu | logvar] = fc_heads(encoder(x)), one product, split by columns.
        """
        heads = self.fc_heads(self.encoder(x))
        latent = self.config["latent_dim"]
        mu, logvar = heads[:, :latent], heads[:, latent:]
        clamp = self.config["logvar_clamp"]
        if clamp is not None:
            logvar = ops.clip(logvar, -clamp, clamp)
        return mu, logvar

    def reparameterize(self, mu, logvar, samples=1, rng=None, eps=None):
        """z = mu + exp(logvar / 2) * eps, shape (K, B, latent), K = ``samples``; see ``DiagonalNormal.rsample``."""
        return DiagonalNormal(mu, logvar).rsample(samples, rng, eps)

    def decode(self, z):
        """z (B, latent) or (K, B, latent) -> logits (Bernoulli) or means (Gaussian), same leading axes."""
        rows = self.decoder(z.reshape(-1, z.shape[-1]))  # (K*B, latent): the matrix-product kernel is 2-D
        return rows.reshape(*z.shape[:-1], rows.shape[-1])

    def p_x_given_z(self, z):
        """The likelihood p(x | z) as a distribution over x."""
        return self.p_x_given_decoded(self.decode(z))

    def p_x_given_decoded(self, decoded):
        """p(x | z) from the decoder's output ``decode(z)``: Bernoulli(logits) or Gaussian(means, sigma)."""
        if self.config["likelihood"] == "gaussian":
            return Gaussian(decoded, self.config["sigma"])
        return Bernoulli(decoded)

    def elbo(self, x, samples=1, rng=None, eps=None):
        """ElboTerms per example (B,): reconstruction = 1/K sum_k log p(x | z_k), kl in closed form.

        eps ~ N(0, I) is drawn from ``rng``, or given as ``eps`` (K, B, latent)
        to fix it (then ``samples``, K, and ``rng`` are not used), e.g. to gradient-check.
        """
        posterior = DiagonalNormal(*self.encode(x))
        z = posterior.rsample(samples, rng, eps)
        reconstruction = self.p_x_given_z(z).log_prob(x).mean(axis=0)
        kl = posterior.kl_standard_normal()
        return ElboTerms(reconstruction - kl, reconstruction, kl)

    def iwae(self, x, samples=1, rng=None, eps=None, beta=1.0):
        """IwaeTerms per example (B,): the bound L_K = log 1/K sum_k w_k (Burda et al. 2016, eq. 8).

        log w_k = log p(x | z_k) + beta (log p(z_k) - log q(z_k | x)), z_k drawn as in ``elbo`` (same draws);
        beta < 1 discounts the prior's pull, as KL warm-up does for the ELBO.
        """
        posterior = DiagonalNormal(*self.encode(x))
        z = posterior.rsample(samples, rng, eps)
        log_px_given_z = self.p_x_given_z(z).log_prob(x)  # (K, B)
        log_w = log_px_given_z + beta * (log_prior(z) - posterior.log_prob(z))
        # logsumexp's backward is the softmax: each sample's gradient weighed by w_k / sum_j w_j.
        bound = ops.logsumexp(log_w, axis=0) - math.log(z.shape[0])
        return IwaeTerms(bound, log_px_given_z.mean(axis=0), posterior.kl_standard_normal())

    def objective(self, x, objective="elbo", samples=1, rng=None, eps=None, beta=1.0):
        """The per-example objective training maximizes, and the ``ElboTerms`` of the same samples.

        elbo: reconstruction - beta * KL (the ELBO at beta = 1); iwae: ``iwae``'s
        L_K, its log weights' log p(z) - log q(z | x) scaled by beta (L_K at beta = 1).
        ``beta`` is a number, or a 0-d Tensor (whose value can then change on the device between steps).
        """
        if objective not in OBJECTIVES:
            raise MinivaeError(f"VAE.objective: unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
        if objective == "iwae":
            terms = self.iwae(x, samples, rng, eps, beta)
            return terms.bound, ElboTerms(terms.reconstruction - terms.kl, terms.reconstruction, terms.kl)
        terms = self.elbo(x, samples, rng, eps)
        return terms.reconstruction - beta * terms.kl, terms

    def forward(self, x, samples=1, rng=None, eps=None):
        """``model(x)`` is the ELBO, the objective training maximizes."""
        return self.elbo(x, samples, rng, eps)

    def sample(self, n, rng):
        """n draws z ~ N(0, I) decoded to probabilities (Bernoulli) or means (Gaussian): NumPy (n, D), checked
        as ``_decoded_means`` says."""
        check_positive_int("VAE.sample", "n", n)
        z = get_backend().kernels.standard_normal(rng, (n, self.config["latent_dim"]), self.dtype)
        return self._decoded_means(Tensor(z), "samples")

    def reconstruct(self, x):
        """decode(mu(x)) as probabilities or means: NumPy (B, D); NonFiniteResult unless every code mu(x) is
        finite, and the decoder's output too (``_decoded_means``)."""
        with no_grad(), np.errstate(over="ignore", invalid="ignore"):  # checked just below
            mu, _ = self.encode(x)
        check_finite("reconstructions: a code z", mu.numpy(), WEIGHTS_ADVICE)
        return self._decoded_means(mu, "reconstructions")

    def _decoded_means(self, z, what):
        """p(x | z)'s means (probabilities or grey levels) for the codes ``z``, refused (NonFiniteResult naming
        ``what``) unless the decoder's output ``decode(z)`` (logits or means) is finite: a sigmoid shows
        infinite logits as a plausible black-and-white picture."""
        with no_grad(), np.errstate(over="ignore", invalid="ignore"):  # checked below
            decoded = self.decode(z)
            check_finite(f"{what}: the decoder's output", decoded.numpy(), WEIGHTS_ADVICE)
            return self.p_x_given_decoded(decoded).mean.numpy()


def parameter_count(encoder_sizes, latent_dim, decoder_sizes):
    """How many numbers ``VAE(encoder_sizes, latent_dim, decoder_sizes)`` holds, without building it.

    Each Linear(a, b) holds a * b weights and b biases: the encoder's layers,
    the fused mu|logvar head (hidden -> 2 x latent), the decoder's layers
    from the latent space. A MinivaeError if a size is not a positive integer.
    """
    encoder_sizes = _checked_sizes("encoder_sizes", encoder_sizes)
    decoder_sizes = _checked_sizes("decoder_sizes", decoder_sizes)
    check_positive_int("VAE", "latent_dim", latent_dim)
    layers = [*zip(encoder_sizes, encoder_sizes[1:]), (encoder_sizes[-1], 2 * latent_dim),
              *zip([latent_dim] + decoder_sizes, decoder_sizes)]
    return sum(a * b + b for a, b in layers)

