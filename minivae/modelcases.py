"""The model's rows of ``minivae gradcheck``: a tiny VAE's objectives as functions of all its parameters."""
import numpy as np

from minivae.nn import Module, functional_call
from minivae.opcases import OpCase, fixed_normal
from minivae.vae import VAE


def model_cases():
    """A tiny VAE's objective (6-5-2 / 2-5-6, K = 3, fixed eps) as a function of every parameter.

    The ELBO with each likelihood, and the importance-weighted bound L_3 (``VAE.iwae``).
    """
    class Objective(Module):
        """The VAE's per-example ELBO or L_K as a module's forward, for ``functional_call`` to swap its parameters."""

        def __init__(self, vae, objective):
            self.vae, self.objective = vae, objective

        def forward(self, x, eps):
            if self.objective == "iwae":
                return self.vae.iwae(x, eps=eps).bound
            return self.vae.elbo(x, eps=eps).elbo

    def case(objective, likelihood):
        module = Objective(VAE((6, 5), 2, (5, 6), likelihood=likelihood, sigma=0.8,
                               rng=np.random.default_rng(0), dtype=np.float64), objective)
        names = [name for name, _ in module.named_parameters()]
        x, eps = 0.5 * (1 + np.tanh(fixed_normal((4, 6), 3))), fixed_normal((3, 4, 2), 4)

        def of_parameters(*params):
            return functional_call(module, dict(zip(names, params)), x, eps=eps)
        shapes = tuple(p.shape for _, p in module.named_parameters())
        return OpCase(f"vae_{objective}_{likelihood}", of_parameters, shapes, ("real",) * len(shapes))
    return (case("elbo", "bernoulli"), case("elbo", "gaussian"), case("iwae", "bernoulli"))
