"""Two ways to estimate the gradient of an expectation under q: score function and reparameterization.

Both estimate, for variational parameters phi,

    g = grad_phi ( E_{q_phi(z)}[f(z)] + h(phi) ),

where h, if present, is a term whose gradient is exact and shared by both.
For the VAE's encoder (``elbo_problem``) that is the gradient of the ELBO
(Kingma & Welling 2014, eq. 2-3), written in one of two equal forms:

- ``kl="sampled"``: f = log p(x, z) - log q(z|x), no h: the whole ELBO is sampled;
- ``kl="closed"``: f = log p(x|z), h = -KL(q || p(z)) in closed form (eq. 7):
  what training uses. Only the reconstruction term adds variance.

Either way both estimators estimate the same gradient, so their means must agree.

- Score function (log-derivative, REINFORCE; Williams 1992):
  grad E_q[f] = E_q[f(z) grad log q(z)], so with z_k ~ q held fixed,

      g_SF = 1/K sum_k (f(z_k) - b_k) grad log q(z_k)  + grad h.

  Any baseline b_k independent of z_k leaves the mean unchanged, because
  E_q[grad log q] = grad 1 = 0. The same identity drops the direct term
  E_q[grad_phi f] = -E_q[grad log q] = 0 of the sampled form's integrand.
  It needs f only as numbers: no gradient flows through z.
- Reparameterization (Kingma & Welling 2014, eq. 10):
  z = mu + sigma * eps with eps ~ N(0, I), so

      g_RP = grad_phi 1/K sum_k f(mu + sigma * eps_k)  + grad h,

  backpropagated through z. It uses the gradient of f, and usually has a far
  smaller variance.

Estimates are gradients of the objective summed over the batch,
sum_b ELBO(x_b); averaging instead only divides every number by B.
"""
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minivae import ops
from minivae.backend import get_backend
from minivae.distributions import DiagonalNormal
from minivae.errors import MinivaeError
from minivae.likelihood import log_joint
from minivae.tensor import Tensor, no_grad

ESTIMATORS = ("score function", "score function + baseline", "reparameterization")
AGREEMENT_Z = 3.0


@dataclass
class GradientProblem:
    """grad_phi of sum_b E_q[f]: the parameters phi, how q is built from them, and f(z, q) -> (K, B)."""
    parameters: dict
    posterior: Callable[[], DiagonalNormal]
    integrand: Callable[[Tensor, DiagonalNormal], Tensor]
    exact_term: Callable[[DiagonalNormal], Tensor] | None = None


# ----- The two estimators -----

def score_function_gradient(problem, samples, rng, baseline=False):
    """One score-function estimate from K = ``samples`` draws: 1/K sum_k (f(z_k) - b_k) grad log q(z_k) (Williams 1992).

    z is sampled under ``no_grad`` (held fixed), f(z_k) enters as numbers, and
    one backward pass of the surrogate sum_k (f_k - b_k) log q(z_k) / K gives
    the estimate. With ``baseline`` b_k is the leave-one-out mean of the
    other K - 1 values of f (Kool et al. 2019), independent of z_k.
    """
    _zero_grads(problem.parameters)
    q = problem.posterior()
    with no_grad():
        z = q.rsample(samples, rng)
    score_function_surrogate(problem, q, z, score_function_signal(problem, q, z, baseline)).backward()
    return _gradients(problem.parameters)


def score_function_signal(problem, q, z, baseline=False):
    """f(z_k) - b_k (K, B) as a constant Tensor: numbers, with no tape behind them (b_k = 0 without ``baseline``)."""
    with no_grad():
        signal = problem.integrand(z, q).data
    if baseline:
        signal = signal - leave_one_out_mean(signal)
    return Tensor(signal)


def score_function_surrogate(problem, q, z, signal):
    """sum_b 1/K sum_k signal_k log q(z_k | x) (+ h): its gradient is the score-function estimate.

    z and the signal are constants, so the gradient reaches q's parameters only through log q.
    """
    return _plus_exact_term(problem, q, (signal * q.log_prob(z)).mean(axis=0).sum())


def reparameterization_gradient(problem, samples, rng):
    """One reparameterization estimate from K = ``samples`` draws: grad 1/K sum_k f(mu + sigma eps_k) (Kingma &
    Welling 2014, eq. 10)."""
    _zero_grads(problem.parameters)
    q = problem.posterior()
    z = q.rsample(samples, rng)
    _plus_exact_term(problem, q, problem.integrand(z, q).mean(axis=0).sum()).backward()
    return _gradients(problem.parameters)


def leave_one_out_mean(values):
    """b_k = (sum_j f_j - f_k) / (K - 1) over axis 0: the mean of the other samples."""
    samples = values.shape[0]
    if samples < 2:
        raise MinivaeError("the leave-one-out baseline needs at least 2 samples per example; use K >= 2")
    return (values.sum(axis=0, keepdims=True) - values) / (samples - 1)


def estimate(problem, estimator, samples, rng):
    """One estimate by the estimator named in ``ESTIMATORS``: {parameter name: NumPy array}."""
    if estimator == "reparameterization":
        return reparameterization_gradient(problem, samples, rng)
    if estimator in ESTIMATORS:
        return score_function_gradient(problem, samples, rng, baseline=estimator.endswith("baseline"))
    raise MinivaeError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def _plus_exact_term(problem, q, objective):
    """objective + sum_b h_b(phi), when the problem has a term h with an exact gradient (the closed-form KL)."""
    return objective if problem.exact_term is None else objective + problem.exact_term(q).sum()


def _zero_grads(parameters):
    for p in parameters.values():
        p.zero_grad()


def _gradients(parameters):
    backend = get_backend()
    return {name: np.zeros(p.shape) if p.grad is None else np.array(backend.asnumpy(p.grad), dtype=np.float64)
            for name, p in parameters.items()}


# ----- The VAE's encoder as a GradientProblem -----

def encoder_parameters(model):
    """The parameters of q(z|x): every named parameter outside the decoder."""
    return {name: p for name, p in model.named_parameters() if not name.startswith("decoder.")}


def elbo_problem(model, x, kl="sampled"):
    """The encoder's gradient of sum_b ELBO(x_b), in one of two forms with the same value.

    - ``kl="sampled"``: ELBO = E_q[log p(x, z) - log q(z|x)], all of it estimated.
    - ``kl="closed"``: ELBO = E_q[log p(x|z)] - KL(q || p(z)), the KL's gradient
      exact (Kingma & Welling 2014, eq. 7 and Appendix B); only the
      reconstruction term is estimated, so only it contributes variance.
    """
    x = Tensor(x, dtype=model.dtype)

    def posterior():
        return DiagonalNormal(*model.encode(x))

    def integrand(z, q):
        return log_joint(model, x, z) - q.log_prob(z)

    def reconstruction(z, q):
        return model.p_x_given_z(z).log_prob(x)

    def negative_kl(q):
        return -q.kl_standard_normal()
    if kl == "sampled":
        return GradientProblem(encoder_parameters(model), posterior, integrand)
    if kl == "closed":
        return GradientProblem(encoder_parameters(model), posterior, reconstruction, negative_kl)
    raise MinivaeError(f"unknown KL form {kl!r}; use sampled or closed")


# ----- A 1-D problem with every answer in closed form -----

def quadratic_problem(mu, sigma, c, copies=1):
    """q = N(mu, sigma^2), f(z) = (z - c)^2, as ``copies`` independent rows (each row's gradient is one estimate).

    phi = (mu, sigma); logvar = 2 log sigma, so gradients are taken with respect to sigma itself.
    """
    mu_t = Tensor(np.full((copies, 1), mu), requires_grad=True, dtype=np.float64)
    sigma_t = Tensor(np.full((copies, 1), sigma), requires_grad=True, dtype=np.float64)

    def posterior():
        return DiagonalNormal(mu_t, 2 * ops.log(sigma_t))

    def integrand(z, q):
        return ((z - c) ** 2).sum(axis=-1)
    return GradientProblem({"mu": mu_t, "sigma": sigma_t}, posterior, integrand)


def quadratic_exact_gradient(mu, sigma, c):
    """E_q[(z - c)^2] = (mu - c)^2 + sigma^2, so g = (2 (mu - c), 2 sigma)."""
    return {"mu": 2 * (mu - c), "sigma": 2 * sigma}


def quadratic_variances(mu, sigma, c, samples):
    """Variance of each estimator of ``quadratic_exact_gradient`` with K = ``samples`` samples, in closed form.

    From the moments of e ~ N(0, 1); the leave-one-out baseline's only for K >= 2.
    """
    # a = mu - c, z = mu + sigma e: E e^2 = 1, E e^4 = 3, E e^6 = 15, E e^8 = 105, odd moments 0. Then
    # f = a^2 + 2 a sigma e + sigma^2 e^2, mean m = a^2 + sigma^2, Var f = 4 a^2 sigma^2 + 2 sigma^4.
    a2, s2 = (mu - c) ** 2, sigma**2
    variances = {  # of one sample; Var = E[.^2] - g^2
        # grad of f(mu + sigma e): d/dmu = 2 (a + sigma e), d/dsigma = 2 (a + sigma e) e
        "reparameterization": {"mu": 4 * s2, "sigma": 4 * a2 + 8 * s2},
        # f s with the score s = grad log q: s_mu = e / sigma, s_sigma = (e^2 - 1) / sigma,
        # E s_mu^2 = 1/sigma^2, E s_sigma^2 = 2/sigma^2.
        # f s_mu = (a^2 e + 2 a sigma e^2 + sigma^2 e^3) / sigma: E[.^2] = a^4/sigma^2 + 18 a^2 + 15 sigma^2.
        # f s_sigma: E[.^2] = (a^4 E(e^2-1)^2 + 6 a^2 sigma^2 E e^2(e^2-1)^2 + sigma^4 E e^4(e^2-1)^2) / sigma^2
        #                   = 2 a^4/sigma^2 + 60 a^2 + 78 sigma^2.
        "score function": {"mu": a2**2 / s2 + 14 * a2 + 15 * s2,
                           "sigma": 2 * a2**2 / s2 + 60 * a2 + 74 * s2},
    }
    per_sample = {name: {p: v / samples for p, v in group.items()} for name, group in variances.items()}  # / K
    if samples >= 2:
        # 1/K sum_k (f_k - m_-k) s_k, m_-k the mean of the other K - 1 values. Split
        # f_k - m_-k = (f_k - m) - (m_-k - m): the first part gives V_m / K, V_m = Var((f - m) s); the second,
        # C = 1/(K(K-1)) sum_{j != k} (f_j - m) s_k, has mean 0, is uncorrelated with the first, and
        # E C^2 = (Var f E s^2 + g^2) / (K (K-1)): only the pairings (j, k) = (j', k') and (k', j') survive.
        #   (f - m) s_mu    = 2 a e^2 + sigma (e^3 - e):            V_m = 8 a^2 + 10 sigma^2
        #   (f - m) s_sigma = 2 a e (e^2 - 1) + sigma (e^2 - 1)^2:   V_m = 40 a^2 + 56 sigma^2
        pairs = samples * (samples - 1)
        per_sample["score function + baseline"] = {
            "mu": (8 * a2 + 10 * s2) / samples + (8 * a2 + 2 * s2) / pairs,
            "sigma": (40 * a2 + 56 * s2) / samples + (8 * a2 + 8 * s2) / pairs,
        }
    return per_sample


# ----- Statistics over many independent estimates -----

@dataclass
class Summary:
    """N independent estimates of one parameter group: per-element mean and variance (ddof 1)."""
    mean: np.ndarray
    variance: np.ndarray
    n: int

    @classmethod
    def of(cls, estimates):
        """From an array (N, ...) of N estimates."""
        return cls(estimates.mean(axis=0), estimates.var(axis=0, ddof=1), len(estimates))

    @property
    def total_variance(self):
        """The sum of per-element variances: E ||g_hat - g||^2."""
        return float(self.variance.sum())

    @property
    def snr(self):
        """Signal-to-noise ratio ||E g_hat|| / sqrt(E ||g_hat - g||^2)."""
        return float(np.linalg.norm(self.mean) / math.sqrt(self.total_variance)) if self.total_variance else math.inf

    @property
    def standard_error(self):
        """Per element, the standard error of the mean: sqrt(variance / N)."""
        return np.sqrt(self.variance / self.n)


@dataclass
class Agreement:
    """How two estimators' means compare, element by element, in units of their joint standard error.

    z = (mean_a - mean_b) / sqrt(se_a^2 + se_b^2). If both estimate the same
    gradient, each z is close to standard normal for large N (central limit
    theorem), so about 99.7% of elements lie within 3 and mean z^2 is near 1.
    Elements are correlated, so this describes the whole vector rather than
    testing it exactly; the score function's heavy tails make the normal
    approximation slower to hold, so use N of a few hundred or more.
    """
    z: np.ndarray

    @property
    def fraction_within(self):
        return float(np.mean(np.abs(self.z) <= AGREEMENT_Z)) if self.z.size else 1.0

    @property
    def mean_square(self):
        return float(np.mean(self.z**2)) if self.z.size else 0.0


def agreement(a, b):
    """The z-scores of ``Summary`` a against b, over the elements that vary in either.

    An element constant in both (a dead unit's gradient is always 0) carries no
    evidence and is left out; constant but different would be z = inf.
    """
    difference = (a.mean - b.mean).ravel()
    scale = np.sqrt(a.standard_error**2 + b.standard_error**2).ravel()
    varies = scale > 0
    mismatched = ~varies & (difference != 0)
    return Agreement(np.concatenate([difference[varies] / scale[varies], np.full(mismatched.sum(), np.inf)]))


def estimators_for(samples):
    """The estimators that can run with K = ``samples`` samples (the leave-one-out baseline needs K >= 2)."""
    return ESTIMATORS if samples >= 2 else tuple(name for name in ESTIMATORS if not name.endswith("baseline"))


def gradient_statistics(problem, samples, n, rng, estimators=None):
    """N = ``n`` independent estimates from each estimator at K = ``samples`` samples: {group: {estimator: Summary}}.

    Groups are the named parameters, plus "all" (every parameter as one vector).
    ``estimators`` defaults to ``estimators_for(samples)``.
    """
    estimators = estimators or estimators_for(samples)
    draws = {name: [estimate(problem, name, samples, rng) for _ in range(n)] for name in estimators}
    groups = list(problem.parameters) + ["all"]
    stats = {group: {} for group in groups}
    for name, estimates in draws.items():
        for group in problem.parameters:
            stats[group][name] = Summary.of(np.stack([e[group] for e in estimates]))
        stats["all"][name] = Summary.of(np.stack([np.concatenate([g.ravel() for g in e.values()])
                                                  for e in estimates]))
    return stats
