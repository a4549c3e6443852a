"""The marginal likelihood log p(x) = log integral p(x|z) p(z) dz, three ways, all in log space.

- Naive Monte Carlo: z_i ~ p(z), log p(x) ~ log 1/n sum_i p(x|z_i). Unbiased
  for p(x), but the prior rarely proposes a z that explains x, so its spread
  shrinks very slowly (Kingma & Welling 2014, section 2.1's motivation).
- Importance sampling with q(z|x): log 1/K sum_k p(x, z_k) / q(z_k|x), z_k ~ q.
  Its expectation is the K-sample importance-weighted bound L_K, with
  ELBO = L_1 <= L_K <= L_{K+1} <= log p(x) (Burda et al. 2016, Theorem 1);
  K = 5000 is how papers report a test log-likelihood.
- Quadrature on a grid, for a latent space of dimension 1 or 2: exact up to
  the grid's resolution and extent. On the same grid, the posterior p(z|x)
  itself, and KL(q(z|x) || p(z|x)) = log p(x) - ELBO.

Sums of probabilities are log-sum-exps, taken over chunks of samples so that
memory stays bounded whatever the number of samples. Samples are drawn and
reduced on the active backend (on a GPU, on the device); results come back as
NumPy float64 arrays.
"""
import dataclasses
import math

import numpy as np

from minivae.backend import get_backend
from minivae.distributions import DiagonalNormal, log_prior
from minivae.errors import MinivaeError
from minivae.kernels import reference
from minivae.tensor import Tensor, no_grad

DEFAULT_CHUNK = 500


CHUNK_ROWS = 20_000  # decoded (sample, example) rows alive at once in ``minivae evaluate``


SAMPLE_COUNTS = (1, 10, 100, 1000, 10_000)


QUADRATURE_DIMS = (1, 2)


# ----- Log densities -----

def log_joint(model, x, z):
    """log p(x, z) = log p(x|z) + log p(z), shape (K, B) for x (B, D) and z (K, B, L)."""
    return model.p_x_given_z(z).log_prob(x) + log_prior(z)


def log_likelihood_each(model, x, z):
    """log p(x_b | z_i) for every example b and every shared latent point z_i (M, L): (B, M) float64, on the backend."""
    likelihood = model.p_x_given_z(z)  # the M points decoded once, then scored against each example in turn
    return get_backend().xp.stack([_float64(likelihood.log_prob(row)) for row in x.data])


def _numpy(tensor):
    return np.asarray(tensor.numpy(), dtype=np.float64)


def _float64(tensor):
    """The values as a float64 array of the active backend: log-sum-exps of many terms are taken in float64."""
    return tensor.data.astype(np.float64)


def _as_input(model, x):
    return x if isinstance(x, Tensor) else Tensor(x, dtype=model.dtype)


# ----- Monte Carlo estimates -----

def log_mean_exp_in_chunks(log_terms, n, chunk):
    """log (1/n) sum_i exp(a_i) per example, where ``log_terms(m)`` returns the next m values a as (m, B).

    ``log_terms`` returns arrays of the active backend; each chunk is reduced
    to its log-sum-exp right away, there (at most ``chunk`` samples are alive
    at once); the chunks' results are combined by one more log-sum-exp:
    log sum_i e^a_i = log sum_chunks e^(log sum_chunk e^a_i). The result is a
    NumPy float64 array (B,).
    """
    if n < 1 or chunk < 1:
        raise MinivaeError(f"need at least one sample and a chunk of at least one (got n={n}, chunk={chunk})")
    backend = get_backend()
    partial = []
    for start in range(0, n, chunk):
        partial.append(backend.kernels.logsumexp(log_terms(min(chunk, n - start)), axis=0))
    total = backend.kernels.logsumexp(backend.xp.stack(partial), axis=0)
    return np.asarray(backend.asnumpy(total), dtype=np.float64) - math.log(n)


def log_px_prior_sampling(model, x, samples, rng, chunk=DEFAULT_CHUNK):
    """Naive Monte Carlo, per example: log (1/n) sum_i p(x|z_i) with z_i ~ p(z) = N(0, I), n = ``samples``.

    The draws do not depend on x, so one set serves every example in the batch;
    memory holds ``chunk`` of them at a time.
    """
    x = _as_input(model, x)
    normal = get_backend().kernels.standard_normal

    def log_terms(m):
        z = Tensor(normal(rng, (m, model.config["latent_dim"]), model.dtype))
        return log_likelihood_each(model, x, z).T
    with no_grad():
        return log_mean_exp_in_chunks(log_terms, samples, chunk)


def log_px_importance(model, x, samples, rng, chunk=DEFAULT_CHUNK):
    """Importance sampling with q(z|x), per example: log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q, K = ``samples``.

    Its expectation is the importance-weighted bound L_K (Burda et al. 2016,
    eq. 8); K = 1 gives an unbiased estimate of the ELBO. Memory holds
    ``chunk`` samples per example at a time.
    """
    x = _as_input(model, x)
    with no_grad():
        q = DiagonalNormal(*model.encode(x))

        def log_terms(m):
            z = q.rsample(m, rng)
            return _float64(log_joint(model, x, z) - q.log_prob(z))
        return log_mean_exp_in_chunks(log_terms, samples, chunk)


def kl_standard_normal_monte_carlo(q, samples, rng):
    """KL(q || N(0, I)) = E_q[log q(z) - log p(z)] by K = ``samples`` samples, per row: (mean, standard error).

    A check of the closed form ``q.kl_standard_normal()`` (Kingma & Welling 2014, Appendix B).
    """
    with no_grad():
        z = q.rsample(samples, rng)
        terms = _numpy(q.log_prob(z) - log_prior(z))
    return terms.mean(axis=0), terms.std(axis=0, ddof=1) / math.sqrt(samples)


def elbo_with_error(model, x, samples, rng, repeats=10):
    """The ELBO per example from ``model.elbo`` with K = ``samples`` samples, and its Monte Carlo standard error.

    The K samples are split into ``repeats`` independent estimates; the
    standard error is their standard deviation over sqrt(repeats).
    """
    x = _as_input(model, x)
    per_repeat = max(1, samples // repeats)
    with no_grad():
        estimates = np.stack([_numpy(model.elbo(x, per_repeat, rng).elbo) for _ in range(repeats)])
    return estimates.mean(axis=0), estimates.std(axis=0, ddof=1) / math.sqrt(repeats)


# ----- Over a whole set, batch by batch -----

def evaluate_elbo(model, x, batch_size, samples, seed):
    """Mean per-example (ELBO, reconstruction, KL) over ``x`` (``Pixels`` or float32 rows), with a fixed noise seed.

    The sums stay on the device until the last batch: one read of the host for the whole set.
    """
    backend = get_backend()
    rng = backend.kernels.make_rng(seed)
    totals = backend.xp.zeros(3, np.float64)
    with no_grad():
        for start in range(0, len(x), batch_size):
            terms = model.elbo(Tensor(x[start:start + batch_size]), samples, rng)
            totals += float64_sums(terms.elbo, terms.reconstruction, terms.kl)
    return backend.asnumpy(totals) / len(x)


def float64_sums(*tensors):
    """Each tensor's sum over its batch, summed in float64, stacked into one array of the active backend.

    Nothing is read on the host: the caller reads the stack when it needs it, all at once.
    """
    xp = get_backend().xp  # while a step is recorded, the recording's, which records xp.stack
    return xp.stack([tensor.data.sum(dtype=np.float64) for tensor in tensors])


def importance_sampled_log_px(model, x, samples, seed, batch_size=100):
    """``log_px_importance`` over a whole set, ``batch_size`` examples at a time, chunks sized by ``CHUNK_ROWS``."""
    rng = get_backend().kernels.make_rng(seed)
    chunk = max(1, CHUNK_ROWS // min(batch_size, len(x)))
    return np.concatenate([log_px_importance(model, x[i:i + batch_size], samples, rng, chunk)
                           for i in range(0, len(x), batch_size)])


# ----- Quadrature on a grid (latent dimension 1 or 2) -----

def latent_grid(dim, grid_size, extent):
    """Points of a regular grid on [-extent, extent]^dim, (G^dim, dim), and their log trapezoid weights.

    The 1-D trapezoid rule weights the points h, halved at the two ends; the
    2-D rule takes the products of the 1-D weights.
    """
    if dim not in QUADRATURE_DIMS:
        raise MinivaeError(f"quadrature on a grid needs a latent dimension of 1 or 2, not {dim}; "
                           "use importance sampling instead (log_px_importance; minivae evaluate --iw-samples K)")
    if grid_size < 2 or not extent > 0:
        raise MinivaeError(f"a grid needs at least 2 points and an extent > 0 (got {grid_size}, {extent})")
    axis = np.linspace(-extent, extent, grid_size)
    weights = np.full(grid_size, axis[1] - axis[0])
    weights[[0, -1]] /= 2
    points = np.stack(np.meshgrid(*[axis] * dim, indexing="ij"), axis=-1).reshape(-1, dim)
    log_weights = np.log(np.stack(np.meshgrid(*[weights] * dim, indexing="ij"), axis=-1)).sum(axis=-1).ravel()
    return points, log_weights


@dataclasses.dataclass
class GridPosterior:
    """The exact posterior on a grid: log p(x, z) at each point, and log p(x) from the quadrature."""
    points: np.ndarray       # (G, L)
    log_weights: np.ndarray  # (G,) quadrature weights, log
    log_joint: np.ndarray    # (B, G) log p(x, z_g)
    log_px: np.ndarray       # (B,) log sum_g w_g p(x, z_g)

    @property
    def log_density(self):
        """log p(z_g | x) = log p(x, z_g) - log p(x), shape (B, G)."""
        return self.log_joint - self.log_px[:, None]

    @property
    def mass(self):
        """The posterior probability of each grid cell, w_g p(z_g | x); each row sums to 1."""
        return np.exp(self.log_density + self.log_weights)


def posterior_on_grid(model, x, grid_size=101, extent=5.0, chunk=4096):
    """p(z|x) = p(x, z) / p(x) at every grid point, with log p(x) = log sum_g w_g p(x, z_g); p(x | z_g) for
    ``chunk`` grid points at a time."""
    x = _as_input(model, x)
    points, log_weights = latent_grid(model.config["latent_dim"], grid_size, extent)
    with no_grad():
        chunks = [get_backend().asnumpy(log_likelihood_each(model, x, Tensor(points[i:i + chunk], dtype=model.dtype)))
                  for i in range(0, len(points), chunk)]
    joint = np.concatenate(chunks, axis=1) + _numpy(log_prior(Tensor(points)))
    log_px = reference.logsumexp(joint + log_weights, axis=1)  # host arrays: the NumPy kernel
    return GridPosterior(points, log_weights, joint, log_px)


def log_px_quadrature(model, x, grid_size=101, extent=5.0):
    """log p(x) per example by the trapezoid rule on [-extent, extent]^L, L = 1 or 2."""
    return posterior_on_grid(model, x, grid_size, extent).log_px


def kl_q_to_posterior_on_grid(model, x, grid_size=101, extent=5.0):
    """KL(q(z|x) || p(z|x)) = sum_g w_g q(z_g) (log q(z_g) - log p(z_g|x)), per example.

    Both densities are exact at the grid points; only the integral is a sum.
    """
    x = _as_input(model, x)
    grid = posterior_on_grid(model, x, grid_size, extent)
    with no_grad():
        q = DiagonalNormal(*model.encode(x))
        log_q = _numpy(q.log_prob(Tensor(grid.points[:, None, :], dtype=model.dtype))).T  # (B, G)
    return (np.exp(log_q + grid.log_weights) * (log_q - grid.log_density)).sum(axis=1)


# ----- The bound gap: ELBO <= L_K <= log p(x) -----

@dataclasses.dataclass
class BoundGap:
    """Per example (B,): ELBO <= L_K <= log p(x), and log p(x) - ELBO against KL(q || p(z|x)) on the grid.

    ``naive`` and ``weighted`` hold the two samplers' estimates, shape
    (len(sample_counts), seeds, B); L_K is the weighted estimate at the
    largest count averaged over seeds (an estimate of the bound itself).
    """
    elbo: np.ndarray
    elbo_se: np.ndarray
    exact: np.ndarray
    quadrature_error: np.ndarray  # |log p(x) on the grid minus the same on a grid half as fine|
    kl: np.ndarray
    sample_counts: list
    naive: np.ndarray
    weighted: np.ndarray

    @property
    def bound(self):
        return self.weighted[-1].mean(axis=0)

    @property
    def bound_se(self):
        return self.weighted[-1].std(axis=0, ddof=1) / math.sqrt(self.weighted.shape[1])

    @property
    def ordering_tolerance(self):
        """3 joint standard errors of the ELBO and L_K, plus the quadrature error."""
        return 3 * np.hypot(self.elbo_se, self.bound_se) + self.quadrature_error

    @property
    def ordered(self):
        """Per example: ELBO <= L_K <= log p(x), each up to ``ordering_tolerance``."""
        tolerance = self.ordering_tolerance
        return (self.elbo <= self.bound + tolerance) & (self.bound <= self.exact + tolerance)

    @property
    def gap(self):
        return self.exact - self.elbo

    @property
    def gap_tolerance(self):
        """4 standard errors of the ELBO, plus the quadrature error, plus 0.001 nats."""
        return 4 * self.elbo_se + self.quadrature_error + 1e-3

    def spread(self, estimates):
        """Standard deviation over seeds, averaged over examples: one number per sample count."""
        return estimates.std(axis=1, ddof=1).mean(axis=1)


def bound_gap(model, x, grid_size=101, extent=5.0, sample_counts=SAMPLE_COUNTS, seeds=10,
              elbo_samples=10_000, seed=0):
    """Every number of ``minivae bound-gap``, for a model with a 1-D or 2-D latent space."""
    x = _as_input(model, x)
    exact = log_px_quadrature(model, x, grid_size, extent)
    coarse = log_px_quadrature(model, x, grid_size // 2 + 1, extent)
    elbo, elbo_se = elbo_with_error(model, x, elbo_samples, get_backend().kernels.make_rng(seed), repeats=20)
    return BoundGap(elbo, elbo_se, exact, np.abs(exact - coarse),
                    kl_q_to_posterior_on_grid(model, x, grid_size, extent), list(sample_counts),
                    spread_across_seeds(log_px_prior_sampling, model, x, sample_counts, seeds),
                    spread_across_seeds(log_px_importance, model, x, sample_counts, seeds))


def spread_across_seeds(estimator, model, x, sample_counts, seeds):
    """``estimator(model, x, samples, rng)`` for each count and seeds 0..seeds-1: (len(sample_counts), seeds, B)."""
    make_rng = get_backend().kernels.make_rng
    return np.stack([np.stack([estimator(model, x, samples, make_rng(seed)) for seed in range(seeds)])
                     for samples in sample_counts])
