"""The step part's GPU rows beyond each backend's eager step: a cuBLAS floor, the captured CuPy step, JAX on the GPU.

- ``cuBLAS floor``: the step's 11 products (``gemm_floor.products``) by the
  cupy backend's cuBLAS GEMM (``cupy_gemm``), as its step runs them: the GPU's
  lower bound for a step that issues each product as its own call (an eager
  one), as the GEMM floor is the CPU's (``verdicts.judge_rows``);
- ``minivae cupy captured``: ``static_step.StaticStep`` captured once as a CUDA
  graph, one replay per call (what ``minivae train --backend cupy --cuda-graph`` runs);
- ``jax jit GPU``: the JAX peer with its arrays on the first CUDA device.

Each factory raises ``harness.Unavailable`` where it cannot run, and is
registered with ``gpu=True``, so its rows say "no GPU" where there is none.
"""
import numpy as np

from . import bench_step, gemm_floor, harness, peers
from .bench_engine_step import activate, make_static_step


def make_cublas_floor(batch_size, seed):
    """The step's 11 products as the cupy backend runs them (cuBLAS GEMM, ``cupy_gemm``), then a device sync."""
    cupy = activate("cupy", switch=False)
    rng = np.random.default_rng(seed)
    operands = []
    for product in gemm_floor.products(batch_size):
        a, b = (cupy.xp.asarray(stored) for stored in gemm_floor.stored_operands(product, rng))
        operands.append((a, b, product.transpose_a, product.transpose_b))

    def floor():
        for a, b, trans_a, trans_b in operands:
            cupy.kernels.matmul(a, b, trans_a, trans_b)
    return harness.synchronized(floor, "cupy")


def make_captured_step(batch_size, seed):
    """The 784-400-20 VAE's training step captured as a CUDA graph on cupy; one replay per call."""
    activate("cupy")
    step = make_static_step(batch_size, seed, capture=True)
    step()  # the eager first step, then the capture
    return harness.synchronized(step, "cupy")


def make_jax_gpu_step(batch_size, seed):
    """The JAX peer's jitted step with its arrays on the first CUDA device."""
    reason = peers.available("jax jit")
    if reason:
        raise harness.Unavailable(reason)
    import jax
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        raise harness.Unavailable("jax has no CUDA backend here: pip install 'jax[cuda12]'") from None
    return peers.make_step("jax jit", batch_size, seed, device=device)


FACTORIES = {bench_step.GPU_FLOOR: make_cublas_floor, "minivae cupy captured": make_captured_step,
             "jax jit GPU": make_jax_gpu_step}
