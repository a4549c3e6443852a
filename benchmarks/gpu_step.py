"""The step part's GPU rows beyond each backend's eager step: a cuBLAS floor, the captured CuPy step, JAX on the GPU.

- ``cuBLAS floor``: the step's 11 products (``gemm_floor.products``) by
  ``cupy.matmul`` into preallocated outputs: the GPU's lower bound for a step,
  as the GEMM floor is the CPU's;
- ``minivae cupy captured``: ``static_step.StaticStep`` captured once as a CUDA
  graph, one replay per call (what ``minivae train --backend cupy`` runs);
- ``jax jit GPU``: the JAX peer with its arrays on the first CUDA device.

Each factory raises ``harness.Unavailable`` where it cannot run, and is
registered with ``gpu=True``, so its rows say "no GPU" where there is none.
"""
import numpy as np

from . import gemm_floor, harness, peers
from .bench_engine_step import activate, make_static_step


def _cupy():
    try:
        import cupy
    except ImportError:
        raise harness.Unavailable("cupy not installed: pip install minivae[gpu]") from None
    return cupy


def _products_on_device(batch_size, seed):
    """(name, a, b, out) on the GPU for each of the step's products, laid out as the step has them."""
    cupy = _cupy()
    rng = np.random.default_rng(seed)
    operands = []
    for product in gemm_floor.products(batch_size):
        a_shape = (product.k, product.m) if product.transpose_a else (product.m, product.k)
        b_shape = (product.n, product.k) if product.transpose_b else (product.k, product.n)
        a, b = (cupy.asarray(rng.standard_normal(shape, dtype=np.float32)) for shape in (a_shape, b_shape))
        operands.append((product.name, a.T if product.transpose_a else a, b.T if product.transpose_b else b,
                         cupy.empty((product.m, product.n), np.float32)))
    return operands


def make_cublas_floor(batch_size, seed):
    """The step's 11 products by cuBLAS, waiting for the device at the end."""
    cupy = _cupy()
    operands = _products_on_device(batch_size, seed)

    def floor():
        for _, a, b, out in operands:
            cupy.matmul(a, b, out=out)
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
    with jax.default_device(device):
        return peers.make_step("jax jit", batch_size, seed)


FACTORIES = {"cuBLAS floor": make_cublas_floor, "minivae cupy captured": make_captured_step,
             "jax jit GPU": make_jax_gpu_step}
