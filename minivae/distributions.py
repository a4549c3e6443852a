"""The VAE's distributions: the posterior q(z | x) and the likelihoods p(x | z).

- ``DiagonalNormal(mu, logvar)``: q(z | x) = N(mu, diag(exp(logvar))), sampled by
  reparameterization so gradients reach mu and logvar.
- ``Bernoulli(logits)``: p(x | z) for binary pixels, from logits (stable).
- ``Gaussian(mean, sigma)``: p(x | z) = N(mean, sigma^2 I), sigma a fixed number.
- ``log_prior(z)``: the prior p(z) = N(0, I), as a log density.

Every ``log_prob`` sums over the last axis (the pixels, or the latent
dimensions) and keeps any leading axes (K samples, B examples).
"""
import math
import numbers

from minivae import ops
from minivae.backend import get_backend
from minivae.errors import MinivaeError
from minivae.kernels.reference import LOG_2PI
from minivae.nn import check_positive_int
from minivae.tensor import ShapeError, no_grad, to_array


def _as_data(x, params):
    """Observed data as an array of the parameters' dtype (float64 data must not promote a float32 model)."""
    return to_array(x, params.dtype)


class DiagonalNormal:
    """N(mu, diag(exp(logvar))) over the last axis; mu and logvar of shape (B, D)."""

    def __init__(self, mu, logvar):
        self.mu, self.logvar = ops.as_tensor(mu), ops.as_tensor(logvar)
        if self.mu.shape != self.logvar.shape:
            raise ShapeError(f"DiagonalNormal: mu {self.mu.shape} and logvar {self.logvar.shape} differ")
        self.eps = None

    def rsample(self, samples=1, rng=None, eps=None):
        """z = mu + exp(logvar / 2) * eps, shape (K, B, D) (Kingma & Welling 2014, eq. 10).

        eps ~ N(0, I) is drawn once from ``rng`` (a generator from
        ``get_backend().kernels.make_rng``) and kept as ``self.eps``: the
        backward pass uses this same eps. Pass ``eps`` (K, B, D) to fix it;
        then ``samples`` (K) and ``rng`` are not used.
        """
        if eps is None:
            if rng is None:
                raise MinivaeError("rsample needs rng= (get_backend().kernels.make_rng(seed)) or eps=")
            check_positive_int("rsample", "samples", samples)
            eps = get_backend().kernels.standard_normal(rng, (samples,) + self.mu.shape, self.mu.dtype)
        self.eps = _as_data(eps, self.mu)
        return ops.reparameterize(self.mu, self.logvar, self.eps)

    def sample(self, samples=1, rng=None):
        """K = ``samples`` samples (K, B, D), cut from the graph."""
        with no_grad():
            return self.rsample(samples, rng)

    def log_prob(self, z):
        """log N(z | mu, diag(var)) = -1/2 sum_j ((z_j - mu_j)^2 / var_j + logvar_j + log 2 pi)."""
        diff = z - self.mu
        return -0.5 * (diff * diff * ops.exp(-self.logvar) + self.logvar + LOG_2PI).sum(axis=-1)

    def entropy(self):
        """H = 1/2 sum_j (1 + log 2 pi + logvar_j), per row."""
        return (0.5 * (1 + LOG_2PI) + 0.5 * self.logvar).sum(axis=-1)

    def kl_standard_normal(self):
        """KL(q || N(0, I)) = -1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)) per row (K&W 2014, App. B)."""
        return ops.kl_normal(self.mu, self.logvar)


def log_prior(z):
    """log N(z | 0, I) = -1/2 sum_j (z_j^2 + log 2 pi) over the last axis, for z of any leading shape.

    ``DiagonalNormal.log_prob`` with mu = 0 and logvar = 0, written out: no
    array of zeros is made on the host and copied to the device.
    """
    z = ops.as_tensor(z)
    return -0.5 * (ops.square(z) + LOG_2PI).sum(axis=-1)


class Bernoulli:
    """Independent Bernoulli(sigmoid(logits)) over the last axis."""

    def __init__(self, logits):
        self.logits = ops.as_tensor(logits)

    @property
    def mean(self):
        """The probabilities sigmoid(logits)."""
        return ops.sigmoid(self.logits)

    def log_prob(self, x):
        """sum_j x_j l_j - softplus(l_j), finite for any logits; x broadcasts over leading axes."""
        return ops.bernoulli_log_prob(_as_data(x, self.logits), self.logits)


def check_sigma(sigma):
    """sigma as a float, or a one-line MinivaeError unless it is a finite number > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
        raise MinivaeError(f"Gaussian likelihood: sigma must be a finite number > 0, got {sigma!r}")
    return float(sigma)


class Gaussian:
    """N(mean, sigma^2 I) over the last axis, sigma a fixed number (a hyperparameter)."""

    def __init__(self, mean, sigma):
        self.mean = ops.as_tensor(mean)
        self.sigma = check_sigma(sigma)

    def log_prob(self, x):
        """sum_j -(x_j - m_j)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2; x broadcasts over leading axes."""
        return ops.gaussian_log_prob(_as_data(x, self.mean), self.mean, self.sigma)
