"""minivae's own training step, as ``minivae train`` runs it, for the step part of ``minivae bench``.

``make_step(batch_size, seed, backend="numpy")`` builds the 784-400-20
Bernoulli VAE (``VAE((784, 400), 20, (400, 784))``, float32, PyTorch's
initialisation) with Adam (lr 1e-3) on the fixed random binary batch the
peers use (``benchmarks.peers.binary_batch``), and returns a zero-argument
callable doing one full step: zero_grad, ``elbo(samples=1)``, backward of the
negative mean ELBO, Adam. It is the step ``minivae train`` runs on that
backend: on numba (``RECORDED``) the first call records it and every later
call replays the recording (``app/static_step.StaticStep``, which also copies
the batch into its buffer and adds up the ELBO's terms); elsewhere the eager
step. ``benchmarks.suite.step_factories`` times it on each backend beside
the GEMM floor and the peer frameworks (``minivae bench --only step``).

The backend is process-wide state, so each step switches to its own backend
first (a no-op when it is already active): steps of different backends can
then be interleaved in one ``harness.compare``.
"""
import numpy as np

from minivae.backend import BackendUnavailable, get_backend, load_backend, set_backend

from . import gemm_floor, harness, peers
from .micro import GPU_RUNTIMES

RECORDED = ("numba",)  # backends whose training step is recorded once and replayed (on cupy: gpu_step)


def make_step(batch_size, seed, backend="numpy"):
    """One minivae training step per call, on ``backend``, as ``minivae train`` runs it there (recorded and
    replayed on numba, else eager), returning once the device is done; ``harness.Unavailable`` if it cannot
    run here."""
    if backend in RECORDED:
        activate(backend)
        return make_static_step(batch_size, seed, capture=True)
    step = make_eager_step(batch_size, seed, backend)
    return harness.synchronized(step, GPU_RUNTIMES[backend]) if backend in GPU_RUNTIMES else step


def make_eager_step(batch_size, seed, backend="numpy"):
    """One eager training step per call (the engine's tensors, graph and backward walk), on ``backend``."""
    from minivae.optim import Adam
    from minivae.tensor import Tensor
    from minivae.vae import VAE

    kernels = activate(backend).kernels
    model = VAE((gemm_floor.X, gemm_floor.HIDDEN), gemm_floor.LATENT, (gemm_floor.HIDDEN, gemm_floor.X),
                rng=np.random.default_rng(seed))
    optimizer = Adam(model.parameters(), lr=peers.LEARNING_RATE)
    x = Tensor(peers.binary_batch(batch_size, seed))
    rng = kernels.make_rng(seed)

    def step():
        optimizer.zero_grad()
        loss = -model.elbo(x, samples=1, rng=rng).elbo.mean()
        loss.backward()
        optimizer.step()
    return on_backend(backend, step)


def activate(backend, switch=True):
    """``set_backend(backend)`` (only ``load_backend`` when not ``switch``), or ``harness.Unavailable`` saying
    why it cannot run here."""
    try:
        return set_backend(backend) if switch else load_backend(backend)
    except BackendUnavailable as why:
        raise harness.Unavailable(str(why)) from None


def on_backend(name, fn):
    """``fn`` made to run on backend ``name``: the backend is process-wide, so switch to it first."""
    def run():
        if get_backend().name != name:
            set_backend(name)
        return fn()
    return run


def make_static_step(batch_size, seed, capture):
    """``static_step.StaticStep`` of the same model and batch on the active backend (recorded if ``capture``)."""
    from minivae.app.runconfig import Run, TrainConfig, build_model, build_optimizer
    from minivae.app.static_step import StaticStep

    backend = get_backend()
    config = TrainConfig(hidden=(gemm_floor.HIDDEN,), latent_dim=gemm_floor.LATENT, batch_size=batch_size,
                         lr=peers.LEARNING_RATE, seed=seed)
    model = build_model(config, gemm_floor.X)
    run = Run(config, None, model, build_optimizer(config, model), {"sample": backend.kernels.make_rng(seed)})
    step, x = StaticStep(run, capture=capture), peers.binary_batch(batch_size, seed)
    return on_backend(backend.name, lambda: step(x))

