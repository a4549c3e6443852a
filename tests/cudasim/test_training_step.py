"""One full training step of a tiny VAE on the numba-cuda backend, under the CUDA simulator.

The step (forward, backward, Adam) runs every hot path through the
hand-written CUDA kernels; with the same eps it must move the parameters
exactly as the numpy backend does, up to float32 rounding; so must a step on
the importance-weighted bound L_K with a KL weight of 0.5 (its log-sum-exp over
the samples runs on the backend's array module). The ELBO is also drawn with
the on-device generator, to run the sampling kernel in a step.
"""
import numpy as np
import pytest

from minivae import set_backend
from minivae.optim import Adam
from minivae.tensor import Tensor
from minivae.vae import VAE
from step_cases import assert_same_steps, eager_steps, static_steps


OBJECTIVES = {"elbo": lambda model, x, eps: model.elbo(x, eps=eps).elbo,
              "iwae": lambda model, x, eps: model.iwae(x, eps=eps, beta=0.5).bound}


def one_step(backend, x, eps, objective="elbo"):
    """Parameters after one Adam step on -mean objective with fixed eps, and the objective before it."""
    set_backend(backend)
    try:
        model = VAE((6, 8), 2, (8, 6), rng=np.random.default_rng(0))
        optimizer = Adam(model.parameters(), lr=1e-2)
        optimizer.zero_grad()
        value = OBJECTIVES[objective](model, Tensor(x), eps).mean()
        (-value).backward()
        optimizer.step()
        return value.item(), {name: p.numpy().copy() for name, p in model.named_parameters()}
    finally:
        set_backend("numpy")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_training_step_matches_numpy_backend(objective):
    rng = np.random.default_rng(1)
    x = (rng.random((5, 6)) < 0.5).astype(np.float32)
    eps = rng.standard_normal((2, 5, 2)).astype(np.float32)
    gpu_elbo, gpu_params = one_step("numba-cuda", x, eps, objective)
    cpu_elbo, cpu_params = one_step("numpy", x, eps, objective)
    assert gpu_elbo == pytest.approx(cpu_elbo, rel=1e-5)
    for name, value in cpu_params.items():
        np.testing.assert_allclose(gpu_params[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_elbo_with_on_device_noise_is_finite_and_trains():
    set_backend("numba-cuda")
    try:
        from minivae.backend import get_backend
        model = VAE((6, 8), 2, (8, 6), rng=np.random.default_rng(0))
        optimizer = Adam(model.parameters(), lr=5e-2)
        x = Tensor((np.random.default_rng(2).random((4, 6)) < 0.5).astype(np.float32))
        noise = get_backend().kernels.make_rng(3)
        elbos = []
        for _ in range(5):
            optimizer.zero_grad()
            elbo = model.elbo(x, samples=2, rng=noise).elbo.mean()
            (-elbo).backward()
            optimizer.step()
            elbos.append(elbo.item())
    finally:
        set_backend("numpy")
    assert np.all(np.isfinite(elbos)) and elbos[-1] > elbos[0]


def test_the_static_step_equals_the_eager_step():
    """Two steps of the static step, run eagerly through the numba-cuda kernels with Adam's t and learning rate
    read from 0-d arrays (NumPy arrays under the simulator), and the KL weight and the rate changed between
    them: the eager step's parameters, Adam moments and sums, bit for bit. Training itself builds a static step
    on numba and cupy only (``training.make_step``)."""
    schedule = ("elbo", 1, [0.5, 1.0], [1e-2, 3e-3])
    set_backend("numba-cuda")
    try:
        assert_same_steps(static_steps(*schedule, sizes=((6, 8), (8, 6))),
                          eager_steps(*schedule, sizes=((6, 8), (8, 6))), scale_tolerance=0)
    finally:
        set_backend("numpy")
