"""Philox4x32-10, the GPU backends' random generator, stated in plain NumPy.

Salmon, Moraes, Dror & Shaw (2011), "Parallel random numbers: as easy as
1, 2, 3", Sec. 3: a counter-based generator. Philox maps a 128-bit counter
(c0, c1, c2, c3) and a 64-bit key (k0, k1) to 128 random bits through ten
rounds of

    (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0,  lo(M1 c2),  hi(M0 c0) ^ c3 ^ k1,  lo(M0 c0))

where hi and lo are the two 32-bit halves of a 64-bit product, the key
bumped by (W0, W1) mod 2^32 before every round after the first. Each
counter's output stands on its own, so GPU thread t computes the output of
counter + t directly, and the generator's whole state is six 32-bit words:
the key (from the seed) and the counter (the calls drawn so far).

A draw of n normals makes ceil(n / PER_CALL) calls; call t uses counter + t,
and its four words become uniforms in (0, 1], exact in their dtype:

- float32: u = 1 - (x >> 8) 2^-24 from each word: two pairs, four normals;
- float64: u = 1 - ((x_a << 21) | (x_b >> 11)) 2^-53 from each pair of
  words: one pair, two normals;

and each pair (u0, u1) two normals by Box & Muller (1958):
z0 = r cos(2 pi u1), z1 = r sin(2 pi u1), r = sqrt(-2 ln u0). The counter
then moves on by the calls made; a last call's spare outputs are dropped.

This module is the statement the kernels are tested against: the numba-cuda
ones (``numba_cuda_random``) and the CUDA C ones for CuPy (``philox.cuh``,
``random.cu``), bit for bit for the words, closely for the normals (their
log, cos and sin round differently). It also holds the host side both kernel
sets share: the seeding, the state as JSON values, and its check on restore.
NumPy's own generators (the numpy and numba backends) draw other numbers.
"""
from dataclasses import dataclass

import numpy as np

from minivae.errors import MinivaeError

GENERATOR = "Philox4x32-10"
ROUNDS = 10
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # the round multipliers
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)  # the key bumps: the golden ratio and sqrt(3) - 1, as 0.32 fixed point
MASK32, SHIFT32 = np.uint64(0xFFFFFFFF), np.uint64(32)
PER_CALL = {np.dtype(np.float32): 4, np.dtype(np.float64): 2}  # normals from one call's four words
KEY, COUNTER = slice(0, 2), slice(2, 6)  # the state's words: key0, key1, counter0 (lowest) .. counter3


# ----- The generator -----

def philox4x32_10(counters, key):
    """The four output words of each counter: counters (n, 4) and key (2,) as uint32 -> (n, 4) uint32.

    Every 32-bit word is held in uint64, where the round's product fits.
    """
    counters = np.asarray(counters, np.uint64)
    c0, c1, c2, c3 = counters[:, 0], counters[:, 1], counters[:, 2], counters[:, 3]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for round_ in range(ROUNDS):
        if round_:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> SHIFT32) ^ c1 ^ k0, p1 & MASK32, (p0 >> SHIFT32) ^ c3 ^ k1, p0 & MASK32
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def counters_at(counter, offsets):
    """counter + t for each t of ``offsets`` (uint64), as (len, 4) uint32 words: a 128-bit sum, low word first."""
    offsets = np.asarray(offsets, np.uint64)
    carry = np.zeros(offsets.shape, np.uint64)
    words = []
    for word, addend in zip(counter, (offsets & MASK32, offsets >> SHIFT32, 0, 0)):
        total = np.uint64(word) + addend + carry
        words.append(total & MASK32)
        carry = total >> SHIFT32
    return np.stack(words, axis=1).astype(np.uint32)


def uniforms(words, dtype):
    """Uniforms in (0, 1] from (n, 4) output words: (n, 4) float32 or (n, 2) float64 (see the module's docstring)."""
    words = words.astype(np.uint64)
    if np.dtype(dtype) == np.float32:
        return np.float32(1) - (words >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)
    mantissas = (words[:, 0::2] << np.uint64(21)) | (words[:, 1::2] >> np.uint64(11))
    return 1.0 - mantissas.astype(np.float64) * 2.0**-53


def box_muller(u):
    """Normals from the uniform pairs (u[:, 0], u[:, 1]), (u[:, 2], u[:, 3]), ..., in u's dtype, pair by pair."""
    scalar = u.dtype.type
    r = np.sqrt(scalar(-2) * np.log(u[:, 0::2]))
    theta = scalar(2 * np.pi) * u[:, 1::2]
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=2).reshape(len(u), u.shape[1])


def calls_for(n, dtype):
    """Philox calls a draw of n normals of ``dtype`` makes: ceil(n / PER_CALL), by which it advances the counter."""
    dtype = np.dtype(dtype)
    if dtype not in PER_CALL:
        raise ValueError(f"standard_normal draws float32 or float64, not {dtype}")
    return -(-n // PER_CALL[dtype])


def standard_normal(words, n, dtype):
    """(n normals, the state after the draw) for a generator whose state is ``words``, (6,) uint32."""
    key, counter = words[KEY], words[COUNTER]
    calls = calls_for(n, dtype)
    outputs = philox4x32_10(counters_at(counter, np.arange(calls, dtype=np.uint64)), key)
    normals = box_muller(uniforms(outputs, dtype)).ravel()[:n]
    return normals, np.concatenate([key, counters_at(counter, [calls])[0]])


# ----- The host side the GPU kernel sets share -----

@dataclass
class DeviceRNG:
    """A Philox4x32-10 generator: ``words``, its state (key0, key1, counter0 .. counter3) as a (6,) uint32 array
    on the device (CuPy; NumPy under the CUDA simulator), which every draw's kernels read and advance in place."""
    words: object


def new_rng(seed, xp):
    """A DeviceRNG on xp's device for ``seed``: key = the seed's low and high 32 bits, counter 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise MinivaeError(f"a random seed is an integer from 0 to 2^64 - 1, not {seed!r}")
    seed = int(seed)
    return DeviceRNG(xp.asarray(np.array([seed & 0xFFFFFFFF, seed >> 32, 0, 0, 0, 0], np.uint32)))


def checked(rng, kernel_set):
    """``rng`` itself when it is a DeviceRNG, else a TypeError saying how to make one."""
    if not isinstance(rng, DeviceRNG):
        raise TypeError(f"{kernel_set} standard_normal draws from a philox.DeviceRNG, got {type(rng).__name__}; "
                        "make it with get_backend().kernels.make_rng(seed)")
    return rng


def state_of(host_words):
    """The state as JSON values: the generator's name, the key (2 words) and the counter (4 words, lowest first)."""
    return {"generator": GENERATOR, "key": [int(w) for w in host_words[KEY]],
            "counter": [int(w) for w in host_words[COUNTER]]}


def words_of(state):
    """The (6,) uint32 words of a state ``state_of`` wrote; a one-line MinivaeError for anything else."""
    state = state if isinstance(state, dict) else {}
    if state.get("generator") != GENERATOR:
        found = state.get("generator", state.get("bit_generator"))
        raise MinivaeError(f"random state is from generator {found!r}, not {GENERATOR}, the GPU backends' generator")
    key, counter = state.get("key"), state.get("counter")
    if not (_words(key, 2) and _words(counter, 4)):
        raise MinivaeError(f"random state of {GENERATOR} needs a key of 2 and a counter of 4 integers in "
                           f"[0, 2^32), got key={key!r}, counter={counter!r}; it is damaged, resume from another "
                           "checkpoint")
    return np.array([*key, *counter], np.uint32)


def _words(value, count):
    """Is ``value`` a list of ``count`` 32-bit unsigned integers?"""
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w < 2**32 for w in value))
