"""Counter-based random draws for the MCMC learner, as numba functions: no hidden state.

Every value is a pure function of a 64-bit *slot* (itself a hash of seed, iteration, what is
drawn and which one) and of the index of the uniform number within that slot. So an MCMC run
killed and resumed at an iteration boundary draws the same samples bit for bit, whatever
happened before, and no generator state has to be checkpointed.

Keys (all arithmetic on uint64, wrapping)::

    key  = iteration_key(seed, iteration, stream)      # one per (seed, iteration, kind of draw)
    slot = slot_key(key, index)                         # one per parameter / row / group
    u_c  = uniform(slot, c)                             # c = 0, 1, 2, ...: the c-th uniform

``slot_key`` can be nested (``slot_key(slot_key(key, f), i)`` for v_if). ``uniform(slot, c)`` is
the (c+1)-th output of a SplitMix64 generator started at ``slot``; ``slot_key`` and
``iteration_key`` chain SplitMix64 finalisers (the hash of ``streamfm/rng.py``, here jitted for
scalars). Each slot is used for exactly one distribution draw, which consumes uniforms 0, 1, ...;
rejection loops take the attempt number into c, so the number of attempts never shifts another
draw.

Distributions (standard forms; scale and shift are the caller's):

- ``normal``: Box-Muller (cosine branch), uniforms 0 and 1.
- ``gamma(shape)`` with rate 1: Marsaglia & Tsang (2000); attempt t uses uniforms 3t+1, 3t+2
  (its normal) and 3t+3 (its acceptance test); for shape < 1 uniform 0 is the boost
  Gamma(shape+1)·U^(1/shape) (for shape >= 1 uniform 0 is unused).
- ``truncated_normal_left(a)``: N(0, 1) conditioned on > a. For a <= 0 plain rejection from
  N(0, 1) (acceptance >= 1/2; attempt t uses uniforms 2t, 2t+1); for a > 0 Robert's (1995)
  exponential proposal with the optimal rate (acceptance >= about 0.76 at any a; attempt t uses
  uniforms 2t, 2t+1). This is the scheme libFM uses (src/util/random.h), with counter-based
  uniforms instead of rand().
- ``normal_cdf``: Phi(x) = erfc(-x/sqrt 2)/2 (accurate in both tails, unlike 1 - Phi(-x)).

No fastmath; every operation is in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# What is drawn: the "stream" part of an iteration key.
STREAM_W0 = 1
STREAM_W = 2
STREAM_V = 3
STREAM_ALPHA = 4
STREAM_W_MU = 5
STREAM_W_LAMBDA = 6
STREAM_V_MU = 7
STREAM_V_LAMBDA = 8
STREAM_LATENT = 9
STREAM_TEST = 10  # free for callers (e.g. tests of the distributions)
STREAM_NEGATIVES = 11  # ranking: negative items, slot = (global event number, negative)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0
_SQRT1_2 = math.sqrt(0.5)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def splitmix64(x):
    """SplitMix64 finaliser of x + golden gamma (uint64, wrapping), as streamfm.rng.splitmix64."""
    z = np.uint64(x) + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def slot_key(key, index):
    """Key of draw `index` (any integer >= 0, e.g. a feature id or a global row number) under `key`."""
    return splitmix64(np.uint64(key) ^ splitmix64(np.uint64(index)))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def iteration_key(seed, iteration, stream):
    """Key of the draws of one kind (`stream`, a STREAM_* constant) in one iteration."""
    return slot_key(slot_key(splitmix64(np.uint64(seed)), iteration), stream)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def uniform(slot, c):
    """The c-th uniform of `slot`, float64 in the open interval (0, 1)."""
    bits = splitmix64(np.uint64(slot) + np.uint64(c) * _GOLDEN)
    return (float(bits >> _S11) + 0.5) * _INV_2_53


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _box_muller(slot, c):
    u1 = uniform(slot, c)
    u2 = uniform(slot, c + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def normal(slot):
    """Standard normal draw of `slot`."""
    return _box_muller(slot, 0)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def gamma(shape, slot):
    """Gamma(shape, rate 1) draw of `slot` (shape > 0); divide by the rate for Gamma(shape, rate)."""
    boost = 1.0
    a = shape
    if shape < 1.0:
        boost = uniform(slot, 0) ** (1.0 / shape)
        a = shape + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    t = 0
    while True:
        x = _box_muller(slot, 3 * t + 1)
        u = uniform(slot, 3 * t + 3)
        t += 1
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2 or math.log(u) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
            return d * v * boost


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def truncated_normal_left(a, slot):
    """Draw of `slot` from N(0, 1) conditioned on being > a."""
    t = 0
    if a <= 0.0:
        while True:
            z = _box_muller(slot, 2 * t)
            t += 1
            if z > a:
                return z
    rate = 0.5 * (a + math.sqrt(a * a + 4.0))
    while True:
        z = a - math.log(uniform(slot, 2 * t)) / rate
        u = uniform(slot, 2 * t + 1)
        t += 1
        d = z - rate
        if u <= math.exp(-0.5 * d * d):
            return z


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def normal_cdf(x):
    """Phi(x), the standard normal distribution function."""
    return 0.5 * math.erfc(-x * _SQRT1_2)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def mills_ratio(a):
    """phi(a) / (1 - Phi(a)): the mean of N(0, 1) conditioned on > a. Stable for any a."""
    if a < 30.0:
        return math.exp(-0.5 * a * a) / (math.sqrt(0.5 * math.pi) * math.erfc(a * _SQRT1_2))
    # Asymptotic series of the tail: 1 - Phi(a) = phi(a)/a (1 - 1/a² + 3/a⁴ - 15/a⁶ + ...).
    r = 1.0 / (a * a)
    return a / (1.0 - r + 3.0 * r * r - 15.0 * r * r * r)


# --- vectorised draws, for tests and diagnostics -------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def normal_draws(key, n):
    """(n,) float64: normal(slot_key(key, j)) for j in 0..n-1."""
    out = np.empty(n, dtype=np.float64)
    for j in range(n):
        out[j] = normal(slot_key(key, j))
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def gamma_draws(shape, key, n):
    """(n,) float64: gamma(shape, slot_key(key, j)) for j in 0..n-1 (rate 1)."""
    out = np.empty(n, dtype=np.float64)
    for j in range(n):
        out[j] = gamma(shape, slot_key(key, j))
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def truncated_normal_draws(a, key, n):
    """(n,) float64: truncated_normal_left(a, slot_key(key, j)) for j in 0..n-1."""
    out = np.empty(n, dtype=np.float64)
    for j in range(n):
        out[j] = truncated_normal_left(a, slot_key(key, j))
    return out
