"""One step on the importance-weighted bound with a KL weight, on the numba-cuda backend under the CUDA simulator.

L_K's log-sum-exp over the samples runs on the backend's array module; with the
same eps the step must move the parameters as the numpy backend does, up to
float32 rounding.
"""
import numpy as np
import pytest

from minivae import set_backend
from minivae.optim import Adam
from minivae.tensor import Tensor
from minivae.vae import VAE

pytestmark = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning",
                                        "ignore:overflow encountered:RuntimeWarning")


def one_iwae_step(backend, x, eps):
    """Parameters after one Adam step on -mean L_K (beta 0.5) with fixed eps, and the bound before it."""
    set_backend(backend)
    try:
        model = VAE((6, 8), 2, (8, 6), rng=np.random.default_rng(0))
        optimizer = Adam(model.parameters(), lr=1e-2)
        optimizer.zero_grad()
        bound = model.iwae(Tensor(x), eps=eps, beta=0.5).bound.mean()
        (-bound).backward()
        optimizer.step()
        return bound.item(), {name: p.numpy().copy() for name, p in model.named_parameters()}
    finally:
        set_backend("numpy")


def test_iwae_step_matches_numpy_backend():
    rng = np.random.default_rng(1)
    x = (rng.random((5, 6)) < 0.5).astype(np.float32)
    eps = rng.standard_normal((3, 5, 2)).astype(np.float32)
    gpu_bound, gpu_params = one_iwae_step("numba-cuda", x, eps)
    cpu_bound, cpu_params = one_iwae_step("numpy", x, eps)
    assert gpu_bound == pytest.approx(cpu_bound, rel=1e-5)
    for name, value in cpu_params.items():
        np.testing.assert_allclose(gpu_params[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
