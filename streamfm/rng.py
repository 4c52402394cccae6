"""Counter-based random numbers: a value depends only on (seed, id, column), never on call order.

This is what makes a model independent of chunk boundaries and of when a feature first appeared:
feature i's initial factors are the same whether the parameter arrays grew once or ten times.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied element-wise to uint64 counters (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _uniform_open(bits: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in the open interval (0, 1)."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def normal_by_id(seed: int, ids: np.ndarray, k: int, stream: int = 0) -> np.ndarray:
    """Standard normal values of shape (len(ids), k), float64; entry (r, f) depends only on (seed, stream, ids[r], f).

    Box-Muller over two independent counter hashes.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    key = splitmix64(np.array([seed], dtype=np.uint64) ^ (np.uint64(stream) << np.uint64(56)))[0]
    with np.errstate(over="ignore"):
        cell = ids[:, None] * np.uint64(2 * k + 1) + np.arange(k, dtype=np.uint64)[
            None, :
        ] * np.uint64(2)
        a = splitmix64(splitmix64(cell ^ key))
        b = splitmix64(splitmix64((cell + np.uint64(1)) ^ key))
    u1, u2 = _uniform_open(a), _uniform_open(b)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """A random permutation of range(n) (int64) determined by (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch, 0x5F]).permutation(n).astype(np.int64)
