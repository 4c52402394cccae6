"""KeyIndex: an exact map from keys (strings or integers) to ids, looked up per row in numba.

Each key is hashed twice (two independent 64-bit hashes over the Arrow buffers: no Python object
per row or per distinct key); the open-addressing table matches on *both* hashes, so two keys are
confused only if 128 bits collide (about n²/2^129: never, in practice). Integer and string keys
hash in different domains, so 3 and "3" are different keys.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

_EMPTY = -1
_INT_DOMAIN = np.uint64(0x2545F4914F6CDD1D)


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _hash_bytes(offsets, data, h1, h2):
    """Two 64-bit hashes of every string data[offsets[i]:offsets[i+1]]."""
    for i in range(offsets.shape[0] - 1):
        a = np.uint64(0xCBF29CE484222325)  # FNV-1a
        b = np.uint64(0x9E3779B97F4A7C15)
        for p in range(offsets[i], offsets[i + 1]):
            c = np.uint64(data[p])
            a = (a ^ c) * np.uint64(0x100000001B3)
            b = (b + c) * np.uint64(0xFF51AFD7ED558CCD)
            b ^= b >> np.uint64(29)
        n = np.uint64(offsets[i + 1] - offsets[i])
        h1[i] = _mix(a ^ n)
        h2[i] = _mix(b + n * np.uint64(0xC2B2AE3D27D4EB4F))


@njit(cache=True, nogil=True)
def _hash_ints(values, h1, h2):
    for i in range(values.shape[0]):
        v = np.uint64(values[i])
        h1[i] = _mix(v ^ _INT_DOMAIN)
        h2[i] = _mix((v + np.uint64(0x632BE59BD9B4E019)) * np.uint64(0x9E3779B97F4A7C15))


@njit(cache=True, nogil=True)
def _lookup(t1, t2, tv, h1, h2, valid, out):
    """out[i] = id of key i, -1 if unknown, -2 if null."""
    mask = np.uint64(t1.shape[0] - 1)
    for i in range(h1.shape[0]):
        if not valid[i]:
            out[i] = -2
            continue
        s = h1[i] & mask
        out[i] = -1
        while tv[s] != -1:
            if t1[s] == h1[i] and t2[s] == h2[i]:
                out[i] = tv[s]
                break
            s = (s + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _insert(t1, t2, tv, h1, h2, ids):
    mask = np.uint64(t1.shape[0] - 1)
    for i in range(h1.shape[0]):
        s = h1[i] & mask
        while tv[s] != -1:
            s = (s + np.uint64(1)) & mask
        t1[s] = h1[i]
        t2[s] = h2[i]
        tv[s] = ids[i]


@njit(cache=True, nogil=True)
def _distinct_new(h1, h2, found):
    """Among rows with found == -1: the first row of each distinct key (in order of first
    appearance) and, per row, the number of its key in that list (-1 for other rows)."""
    n = h1.shape[0]
    cap = 16
    while cap < 2 * n:
        cap *= 2
    mask = np.uint64(cap - 1)
    s1 = np.zeros(cap, dtype=np.uint64)
    s2 = np.zeros(cap, dtype=np.uint64)
    sv = np.full(cap, -1, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    label = np.full(n, -1, dtype=np.int64)
    count = 0
    for i in range(n):
        if found[i] != -1:
            continue
        s = h1[i] & mask
        while sv[s] != -1 and not (s1[s] == h1[i] and s2[s] == h2[i]):
            s = (s + np.uint64(1)) & mask
        if sv[s] == -1:
            s1[s], s2[s], sv[s] = h1[i], h2[i], count
            first[count] = i
            count += 1
        label[i] = sv[s]
    return first[:count], label


def key_hashes(keys: pa.Array | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h1, h2, valid) of every key: strings by their UTF-8 bytes, integers by value."""
    if isinstance(keys, np.ndarray):
        keys = pa.array(keys)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    n = len(keys)
    h1 = np.empty(n, dtype=np.uint64)
    h2 = np.empty(n, dtype=np.uint64)
    valid = (
        np.ones(n, dtype=bool)
        if keys.null_count == 0
        else keys.is_valid().to_numpy(zero_copy_only=False)
    )
    t = keys.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        values = pc.fill_null(pc.cast(keys, pa.int64()), 0).to_numpy(zero_copy_only=False)
        _hash_ints(values, h1, h2)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        _validity, offsets_buf, data_buf = keys.buffers()
        width = np.int64 if pa.types.is_large_string(t) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=width)[keys.offset : keys.offset + n + 1].astype(
            np.int64
        )
        data = (
            np.frombuffer(data_buf, dtype=np.uint8)
            if data_buf is not None
            else np.zeros(0, np.uint8)
        )
        _hash_bytes(offsets, data, h1, h2)
    else:
        return key_hashes(pc.cast(keys, pa.string()))
    return h1, h2, valid


class Lookup(NamedTuple):
    """Result of KeyIndex.lookup: per-key ids (-1 unknown, -2 null), the first row of each
    distinct unknown key in order of first appearance, per-row number of its unknown key (or -1),
    and the keys' hashes (reused by `add`)."""

    ids: np.ndarray
    first: np.ndarray
    label: np.ndarray
    h1: np.ndarray
    h2: np.ndarray


class KeyIndex:
    """Keys -> ids (non-negative ints chosen by the caller); keeps the keys for names and state."""

    def __init__(self) -> None:
        self.t1 = np.zeros(64, dtype=np.uint64)
        self.t2 = np.zeros(64, dtype=np.uint64)
        self.tv = np.full(64, _EMPTY, dtype=np.int64)
        self.keys: list[Any] = []
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: pa.Array | np.ndarray) -> Lookup:
        """Look every key up (see Lookup)."""
        h1, h2, valid = key_hashes(keys)
        out = np.empty(len(h1), dtype=np.int64)
        _lookup(self.t1, self.t2, self.tv, h1, h2, valid, out)
        if (out == -1).any():
            first, label = _distinct_new(h1, h2, out)
        else:
            first, label = np.zeros(0, dtype=np.int64), np.full(len(h1), -1, dtype=np.int64)
        return Lookup(out, first, label, h1, h2)

    def add(self, keys: pa.Array | np.ndarray, found: Lookup, ids: np.ndarray) -> np.ndarray:
        """Insert the unknown keys of `found` (a lookup of `keys`) with `ids` (one per distinct
        unknown key, in found.first order); returns every key's id."""
        rows = found.first
        ids = np.asarray(ids, dtype=np.int64)
        self._grow(len(self.keys) + len(rows))
        _insert(self.t1, self.t2, self.tv, found.h1[rows], found.h2[rows], ids)
        taken = keys.take(pa.array(rows)) if isinstance(keys, pa.Array) else keys[rows]
        self.keys.extend(taken.to_pylist() if isinstance(taken, pa.Array) else taken.tolist())
        self.ids.extend(ids.tolist())
        out = found.ids.copy()
        miss = found.label >= 0
        out[miss] = ids[found.label[miss]]
        return out

    def _grow(self, n: int) -> None:
        if 2 * n <= len(self.tv):
            return
        cap = len(self.tv)
        while 2 * n > cap:
            cap *= 2
        used = self.tv != _EMPTY
        h1, h2, v = self.t1[used], self.t2[used], self.tv[used]
        self.t1 = np.zeros(cap, dtype=np.uint64)
        self.t2 = np.zeros(cap, dtype=np.uint64)
        self.tv = np.full(cap, _EMPTY, dtype=np.int64)
        _insert(self.t1, self.t2, self.tv, h1, h2, v)

    def lookup_or_add(self, keys: pa.Array, next_id: int, grow: bool = True) -> np.ndarray:
        """Ids of `keys` (-1 for nulls, and for unknown keys when not growing); with `grow`,
        unknown keys get next_id, next_id+1, ... in order of first appearance."""
        found = self.lookup(keys)
        out = (
            self.add(keys, found, next_id + np.arange(len(found.first)))
            if grow and len(found.first)
            else found.ids
        )
        return np.where(out < 0, -1, out)

    @classmethod
    def from_keys(cls, keys: list[Any], ids: list[int]) -> KeyIndex:
        """Rebuild an index from saved keys and ids."""
        index = cls()
        if keys:
            arr = pa.array(keys)
            index.add(arr, index.lookup(arr), np.asarray(ids, dtype=np.int64))
        return index
