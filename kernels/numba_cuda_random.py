"""The numba-cuda Philox4x32-10 generator: ``philox``'s NumPy statement as device code.

A draw is two launches on one stream (``numba_cuda.standard_normal``):
``normals_kernel`` reads the key and the counter from the state on the device
and fills the output, one thread per Philox call; ``advance_kernel`` then adds
the calls made to the counter. Their arguments are the same at every draw of
a shape, so a CUDA graph recording them draws new numbers at each replay. One
kernel could not do both: its blocks run in no set order, so one block could
read the counter after another had advanced it.

Every 32-bit word is held in uint64, with uint64 constants: the round's
product needs 64 bits, numba would type uint32 + int64 as float64, and under
the simulator NumPy's uint32 would warn when it wraps.
"""
import math

import numpy as np
from numba import cuda

from minivae.kernels.philox import M0, M1, MASK32, ROUNDS, SHIFT32, W0, W1

SHIFT8, SHIFT21, SHIFT11 = np.uint64(8), np.uint64(21), np.uint64(11)
NEG_TWO_F32, TWO_PI_F32 = np.float32(-2), np.float32(2 * math.pi)  # float32 constants keep float32 math float32
TWO_M24_F32, ONE_F32 = np.float32(2.0**-24), np.float32(1)


@cuda.jit(device=True)
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten rounds of (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
    the key bumped by (W0, W1) mod 2^32 before every round after the first; words and key as uint64."""
    for round_ in range(ROUNDS):
        if round_ > 0:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = (p1 >> SHIFT32) ^ c1 ^ k0, p1 & MASK32, (p0 >> SHIFT32) ^ c3 ^ k1, p0 & MASK32
    return c0, c1, c2, c3


@cuda.jit(device=True)
def counter_plus(state, t):
    """The state's counter (words 2..5, lowest first) + t, a 128-bit sum, as four uint64 words."""
    total = np.uint64(state[2]) + (t & MASK32)
    c0 = total & MASK32
    total = np.uint64(state[3]) + (t >> SHIFT32) + (total >> SHIFT32)
    c1 = total & MASK32
    total = np.uint64(state[4]) + (total >> SHIFT32)
    c2 = total & MASK32
    total = np.uint64(state[5]) + (total >> SHIFT32)
    return c0, c1, c2, total & MASK32


@cuda.jit(device=True)
def _uniform_f32(x):
    """1 - (x >> 8) 2^-24 in (0, 1], exact in float32."""
    return ONE_F32 - np.float32(x >> SHIFT8) * TWO_M24_F32


@cuda.jit(device=True)
def _uniform_f64(a, b):
    """1 - ((a << 21) | (b >> 11)) 2^-53 in (0, 1], exact in float64."""
    return 1.0 - np.float64((a << SHIFT21) | (b >> SHIFT11)) * 2.0**-53


@cuda.jit(device=True)
def _box_muller(u0, u1, neg_two, two_pi, out, i):
    """out[i] = r cos(2 pi u1), out[i + 1] = r sin(2 pi u1), r = sqrt(-2 ln u0); only inside out."""
    r = math.sqrt(neg_two * math.log(u0))
    theta = two_pi * u1
    out[i] = r * math.cos(theta)
    if i + 1 < out.size:
        out[i + 1] = r * math.sin(theta)


@cuda.jit(cache=True)
def normals_kernel(state, out, per_call):
    """for t: x = philox4x32_10(counter + t, key); out[P t : P t + P] = the normals of x's uniforms

    P = per_call: 4 for float32 (uniforms x0, x1, x2, x3: two Box-Muller pairs), 2 for float64 (uniforms
    (x0, x1), (x2, x3): one pair). Launch: ceil(calls / THREADS) blocks of THREADS, one thread per call;
    the state (key, counter) is only read.
    """
    t = cuda.grid(1)
    i = t * per_call
    if i < out.size:
        c0, c1, c2, c3 = counter_plus(state, np.uint64(t))
        x0, x1, x2, x3 = philox4x32_10(c0, c1, c2, c3, np.uint64(state[0]), np.uint64(state[1]))
        if per_call == 4:
            _box_muller(_uniform_f32(x0), _uniform_f32(x1), NEG_TWO_F32, TWO_PI_F32, out, i)
            if i + 2 < out.size:
                _box_muller(_uniform_f32(x2), _uniform_f32(x3), NEG_TWO_F32, TWO_PI_F32, out, i + 2)
        else:
            _box_muller(_uniform_f64(x0, x1), _uniform_f64(x2, x3), -2.0, 2 * math.pi, out, i)


@cuda.jit(cache=True)
def advance_kernel(state, calls):
    """counter += calls. Launch: one block of one thread, after the draw."""
    c0, c1, c2, c3 = counter_plus(state, np.uint64(calls))
    state[2], state[3], state[4], state[5] = c0, c1, c2, c3
