"""Distributions against scipy.stats in float64, the KL against Monte Carlo, fused ops against composites."""
import numpy as np
import pytest
from scipy import stats

from minivae import ops
from minivae.backend import get_backend
from minivae.distributions import Bernoulli, DiagonalNormal, Gaussian
from minivae.errors import MinivaeError
from minivae.tensor import Tensor
from strategies import binary, normal

B, D, K = 3, 4, 5


def make_rng(seed):
    return get_backend().kernels.make_rng(seed)


# ----- DiagonalNormal -----

def posterior(seed=0):
    return DiagonalNormal(normal((B, D), seed), 0.5 * normal((B, D), seed + 1))


def test_rsample_draws_eps_once_and_keeps_it():
    q = posterior()
    z = q.rsample(K, make_rng(3))
    assert z.shape == q.eps.shape == (K, B, D) and q.eps.dtype == np.float64
    np.testing.assert_array_equal(q.eps, get_backend().kernels.standard_normal(make_rng(3), (K, B, D), np.float64))
    expected = q.mu.numpy() + np.exp(0.5 * q.logvar.numpy()) * q.eps
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-14)


def test_rsample_with_a_given_eps_uses_it():
    q = posterior()
    eps = normal((2, B, D), seed=9)
    np.testing.assert_allclose(q.rsample(eps=eps).numpy(), q.mu.numpy() + np.exp(0.5 * q.logvar.numpy()) * eps)
    assert q.eps.shape == (2, B, D)


def test_rsample_keeps_float32():
    q = DiagonalNormal(np.zeros((B, D), np.float32), np.zeros((B, D), np.float32))
    assert q.rsample(2, make_rng(0)).dtype == np.float32 and q.eps.dtype == np.float32


def test_rsample_needs_a_generator_or_eps_and_a_positive_sample_count():
    with pytest.raises(MinivaeError, match=r"rsample needs rng="):
        posterior().rsample(2)
    with pytest.raises(MinivaeError, match="rsample: samples must be a positive integer, got 0"):
        posterior().rsample(0, make_rng(0))


def test_sample_is_cut_from_the_graph():
    q = DiagonalNormal(Tensor(np.zeros((B, D)), requires_grad=True), Tensor(np.zeros((B, D)), requires_grad=True))
    assert q.rsample(2, make_rng(0)).requires_grad
    assert not q.sample(2, make_rng(0)).requires_grad


def test_diagonal_normal_log_prob_and_entropy_match_scipy():
    q = posterior()
    z = normal((K, B, D), seed=5)
    mu, sd = q.mu.numpy(), np.exp(0.5 * q.logvar.numpy())
    np.testing.assert_allclose(q.log_prob(z).numpy(), stats.norm.logpdf(z, mu, sd).sum(axis=-1), rtol=1e-12)
    entropies = [stats.multivariate_normal(mu[i], np.diag(sd[i] ** 2)).entropy() for i in range(B)]
    np.testing.assert_allclose(q.entropy().numpy(), entropies, rtol=1e-12)


def test_kl_closed_form_matches_monte_carlo():
    """KL(q || p) = E_q[log q(z) - log p(z)]: the mean of n draws lies within 4 standard errors."""
    q = posterior()
    z = q.sample(100_000, make_rng(1)).numpy()
    log_ratio = q.log_prob(z).numpy() - stats.norm.logpdf(z).sum(axis=-1)
    estimate, standard_error = log_ratio.mean(axis=0), log_ratio.std(axis=0) / np.sqrt(len(z))
    closed_form = q.kl_standard_normal().numpy()
    assert np.all(np.abs(estimate - closed_form) < 4 * standard_error), (estimate, closed_form, standard_error)


def test_kl_is_zero_for_the_prior_itself():
    np.testing.assert_array_equal(DiagonalNormal(np.zeros((B, D)), np.zeros((B, D))).kl_standard_normal().numpy(),
                                  np.zeros(B))


# ----- Bernoulli and Gaussian -----

def test_bernoulli_log_prob_matches_scipy_and_broadcasts_over_samples():
    logits, x = normal((K, B, D)), binary((B, D))
    p = 1 / (1 + np.exp(-logits))
    expected = stats.bernoulli.logpmf(x, p).sum(axis=-1)
    np.testing.assert_allclose(Bernoulli(logits).log_prob(x).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(Bernoulli(logits).mean.numpy(), p, rtol=1e-12)


def test_bernoulli_log_prob_is_finite_for_extreme_logits():
    logits = np.array([[-1000.0, 1000.0, -1000.0, 1000.0]])
    lp = Bernoulli(logits).log_prob(np.array([[0.0, 1.0, 1.0, 0.0]])).numpy()
    np.testing.assert_allclose(lp, [-2000.0])


def test_bernoulli_takes_data_in_the_logits_dtype():
    lp = Bernoulli(np.zeros((B, D), np.float32)).log_prob(binary((B, D)))
    assert lp.dtype == np.float32


@pytest.mark.parametrize("sigma", [0.1, 1.0, 2.5])
def test_gaussian_log_prob_matches_scipy(sigma):
    mean, x = normal((K, B, D)), normal((B, D), seed=1)
    expected = stats.norm.logpdf(x, mean, sigma).sum(axis=-1)
    np.testing.assert_allclose(Gaussian(mean, sigma).log_prob(x).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), "1", None, True])
def test_gaussian_rejects_a_bad_sigma_in_one_line(sigma):
    with pytest.raises(MinivaeError, match="sigma must be a finite number > 0"):
        Gaussian(np.zeros((B, D)), sigma)


# ----- The fused primitives equal their composites, values and gradients -----

def reparameterize_composite(mu, logvar, eps):
    return mu + ops.exp(0.5 * logvar) * eps


def kl_composite(mu, logvar):
    return (-0.5 * (1 + logvar - mu * mu - ops.exp(logvar))).sum(axis=-1)


def bernoulli_composite(x, logits):
    return (x * logits - ops.softplus(logits)).sum(axis=-1)


def gaussian_composite(x, mean, sigma):
    return (-0.5 * ops.square(x - mean) / sigma**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum(axis=-1)


EPS, X_BINARY, X_REAL = normal((K, B, D), 7), binary((B, D), 8), normal((B, D), 9)

PAIRS = {
    "reparameterize": (lambda mu, lv: ops.reparameterize(mu, lv, EPS),
                       lambda mu, lv: reparameterize_composite(mu, lv, EPS), [(B, D), (B, D)]),
    "kl_normal": (ops.kl_normal, kl_composite, [(B, D), (B, D)]),
    "bernoulli_log_prob": (lambda logits: ops.bernoulli_log_prob(X_BINARY, logits),
                           lambda logits: bernoulli_composite(X_BINARY, logits), [(K, B, D)]),
    "gaussian_log_prob": (lambda mean: ops.gaussian_log_prob(X_REAL, mean, 0.7),
                          lambda mean: gaussian_composite(X_REAL, mean, 0.7), [(K, B, D)]),
}


def value_and_grads(fn, arrays, seed):
    inputs = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*inputs)
    out.backward(normal(out.shape, seed))
    return [out.numpy()] + [t.grad for t in inputs]


@pytest.mark.parametrize("name", PAIRS)
def test_fused_op_equals_its_composite_with_gradients(name):
    fused, composite, shapes = PAIRS[name]
    arrays = [normal(shape, seed=i) for i, shape in enumerate(shapes)]
    for a, b in zip(value_and_grads(fused, arrays, 11), value_and_grads(composite, arrays, 11)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
