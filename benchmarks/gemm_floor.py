"""The GEMM floor: the matrix products of one VAE training step, and nothing else.

The 784-400-20 VAE step does 11 products: 4 forward, 4 weight gradients, 3
input gradients (the data needs no gradient), the mu and logvar heads fused
into one 400x40 layer as minivae's encoder has them. The peers here, like
pytorch/examples (fc21, fc22), keep the heads apart, giving 5 + 5 + 4 = 14
products of the same total work; the floor takes the fused 11, the fewer and
larger calls, so it is the lower bound. Either way that is 3.28 MFLOP per
example (2 FLOP per multiply-add).

Weights are stored (in, out) and every operand has the layout the step uses:
``x @ W`` forward, ``x.T @ grad`` for a weight, ``grad @ W.T`` for an input.
No step can be faster than these products, so step times are reported as
multiples of this floor. ``peak_gflops`` measures the ceiling of the cores a run may use.
"""
import time
from typing import NamedTuple

import numpy as np

from minivae.app.threads import usable_cores

from .harness import measure

X, HIDDEN, LATENT = 784, 400, 20


class Product(NamedTuple):
    """``(m x k) @ (k x n)``; a transposed operand is stored the other way round."""

    name: str
    m: int
    k: int
    n: int
    transpose_a: bool = False
    transpose_b: bool = False

    @property
    def flops(self):
        return 2 * self.m * self.k * self.n


def products(batch_size):
    """The 11 products of one step at ``batch_size``, in the order the step runs them."""
    b, heads = batch_size, 2 * LATENT
    return [
        Product("encoder x @ W1", b, X, HIDDEN),
        Product("heads h @ W2 (mu|logvar)", b, HIDDEN, heads),
        Product("decoder z @ W3", b, LATENT, HIDDEN),
        Product("decoder h3 @ W4 (logits)", b, HIDDEN, X),
        Product("dW4 = h3.T @ dlogits", HIDDEN, b, X, transpose_a=True),
        Product("dh3 = dlogits @ W4.T", b, X, HIDDEN, transpose_b=True),
        Product("dW3 = z.T @ dh3", LATENT, b, HIDDEN, transpose_a=True),
        Product("dz = dh3 @ W3.T", b, HIDDEN, LATENT, transpose_b=True),
        Product("dW2 = h.T @ dheads", HIDDEN, b, heads, transpose_a=True),
        Product("dh = dheads @ W2.T", b, heads, HIDDEN, transpose_b=True),
        Product("dW1 = x.T @ dh", X, b, HIDDEN, transpose_a=True),
    ]


def flops_per_example():
    """FLOP of one step's products per example (they are all linear in the batch)."""
    return sum(product.flops for product in products(1))


def iw_flops(examples, k):
    """FLOP of the products of an importance-weighted evaluation: encode each example once, decode K samples."""
    encoder, heads, decoder, logits = products(1)[:4]
    return examples * (encoder.flops + heads.flops + k * (decoder.flops + logits.flops))


def stored_operands(product, rng):
    """Random float32 (a, b) stored as the step stores them: a transposed operand the other way round.

    ``a`` is (k, m) when ``transpose_a`` (an activation, for a weight's
    gradient), else (m, k); ``b`` is (n, k) when ``transpose_b`` (a weight, for
    an input's gradient), else (k, n); both C-contiguous, ``a`` drawn first.
    """
    a_shape = (product.k, product.m) if product.transpose_a else (product.m, product.k)
    b_shape = (product.n, product.k) if product.transpose_b else (product.k, product.n)
    return rng.standard_normal(a_shape, dtype=np.float32), rng.standard_normal(b_shape, dtype=np.float32)


def _operands(product, rng):
    """The product's operands as NumPy views of the stored ones (``a.T`` where transposed), and the output buffer."""
    a, b = stored_operands(product, rng)
    return (a.T if product.transpose_a else a, b.T if product.transpose_b else b,
            np.empty((product.m, product.n), np.float32))


def make_floor(batch_size, seed=0):
    """A callable running the step's 11 products at ``batch_size`` into preallocated outputs."""
    rng = np.random.default_rng(seed)
    operands = [_operands(product, rng) for product in products(batch_size)]

    def floor():
        for a, b, out in operands:
            np.matmul(a, b, out=out)
    return floor


def core_gflops(size=2048, repeat=3):
    """One core's float32 GEMM rate: the best of ``repeat`` ``size``-cubed products on one BLAS thread.

    Timed by the calling thread's CPU time, which a spell descheduled by
    other work on a shared machine does not count: the rate the core reaches
    while it runs, not the share of it this process got.
    """
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    with threadpool_limits(1):
        best = min(measure(lambda: np.matmul(a, b, out=out), warmup=1, repeat=repeat, clock=time.thread_time))
    return 2 * size**3 / best / 1e9


def peak_gflops(cores=None, size=2048, repeat=3):
    """The ceiling of ``cores`` cores (default: every core this process may use): ``cores`` x ``core_gflops``.

    No implementation's products run faster on those cores; one core alone
    may clock higher than all of them together, so this errs high, never low.
    """
    cores = usable_cores() if cores is None else cores
    return cores * core_gflops(size, repeat)
