"""KeyIndex: an exact map from keys (strings or integers) to ids, looked up per row in numba.

Keys are stored in flat arrays (UTF-8 bytes with offsets, or int64 values) and hashed over the
Arrow buffers: no Python object per row or per distinct key. The open-addressing table holds the
number of each key (its ordinal, int32); a probe matches a slot by comparing the key itself, so
no two keys are ever confused. New keys of one batch are told apart by two independent 64-bit
hashes (a confusion needs a 128-bit collision). Integer and string keys are of different kinds,
so 3 and "3" are different keys; hashes (`key_hashes`, also used by hashed features) are pinned.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from streamfm.growth import grow_attribute
from streamfm.numpy_arrow import from_numpy, to_numpy

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
def _lookup_str(table, offsets, data, p_offsets, p_data, h1, valid, out):
    """out[i] = ordinal of probe key i (text p_data[p_offsets[i]:p_offsets[i+1]]), -1 if not
    stored, -2 if null. Stored key o is data[offsets[o]:offsets[o+1]]."""
    mask = np.uint64(table.shape[0] - 1)
    for i in range(h1.shape[0]):
        if not valid[i]:
            out[i] = -2
            continue
        a = p_offsets[i]
        length = p_offsets[i + 1] - a
        s = h1[i] & mask
        out[i] = -1
        while table[s] != _EMPTY:
            o = table[s]
            b = offsets[o]
            if offsets[o + 1] - b == length:
                same = True
                for j in range(length):
                    if data[b + j] != p_data[a + j]:
                        same = False
                        break
                if same:
                    out[i] = o
                    break
            s = (s + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _lookup_int(table, values, p_values, h1, valid, out):
    """As `_lookup_str` for integer keys."""
    mask = np.uint64(table.shape[0] - 1)
    for i in range(h1.shape[0]):
        if not valid[i]:
            out[i] = -2
            continue
        s = h1[i] & mask
        out[i] = -1
        while table[s] != _EMPTY:
            o = table[s]
            if values[o] == p_values[i]:
                out[i] = o
                break
            s = (s + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _insert(table, h1, first):
    """Put ordinals first, first+1, ... (keys hashed h1[0], h1[1], ...) in the table."""
    mask = np.uint64(table.shape[0] - 1)
    for i in range(h1.shape[0]):
        s = h1[i] & mask
        while table[s] != _EMPTY:
            s = (s + np.uint64(1)) & mask
        table[s] = first + i


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
        keys = from_numpy(keys)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    n = len(keys)
    h1 = np.empty(n, dtype=np.uint64)
    h2 = np.empty(n, dtype=np.uint64)
    valid = np.ones(n, dtype=bool) if keys.null_count == 0 else to_numpy(keys.is_valid())
    t = keys.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        values = to_numpy(pc.fill_null(pc.cast(keys, pa.int64()), 0))
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


def _probe_parts(keys: pa.Array) -> tuple[str, np.ndarray, np.ndarray | None]:
    """("int", int64 values, None) or ("str", int64 offsets, uint8 bytes) of probe keys (views
    of the Arrow buffers where possible), as `key_hashes` reads them."""
    t = keys.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return (
            "int",
            to_numpy(pc.fill_null(pc.cast(keys, pa.int64()), 0)),
            None,
        )
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)):
        keys = pc.cast(keys, pa.string())
        t = keys.type
    _validity, offsets_buf, data_buf = keys.buffers()
    width = np.int64 if pa.types.is_large_string(t) else np.int32
    n = len(keys)
    offsets = np.frombuffer(offsets_buf, dtype=width)[keys.offset : keys.offset + n + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return "str", offsets.astype(np.int64), data


class Lookup(NamedTuple):
    """Result of KeyIndex.lookup: per-key ids (-1 unknown, -2 null), the first row of each
    distinct unknown key in order of first appearance, per-row number of its unknown key (or -1),
    and the keys' hashes (reused by `add`)."""

    ids: np.ndarray
    first: np.ndarray
    label: np.ndarray
    h1: np.ndarray
    h2: np.ndarray


# Keys hashed at a time when the table is rebuilt (bounds the temporary hash arrays).
_REHASH_BLOCK = 1 << 20


class KeyIndex:
    """Keys -> ids (non-negative ints below 2**31 chosen by the caller); keeps the keys for
    names and state.

    Everything lives in flat numpy arrays, in order of insertion (the key's *ordinal*): the
    keys (int64 values, or UTF-8 bytes with int64 offsets) and their ids (int32); the table
    holds ordinals (int32, load <= 1/2). No Python object per key: ~20 bytes per string key
    plus its text, and 8 to 16 bytes of table. An index holds integer keys or text keys, fixed
    by the first keys added; keys of any other type are stored as their text (as hashed).
    """

    def __init__(self) -> None:
        self.key_type: str | None = None  # "int" or "str", set by the first keys added
        self._n = 0
        self._table = np.full(64, _EMPTY, dtype=np.int32)
        self._ids = np.zeros(0, dtype=np.int32)
        self._values = np.zeros(0, dtype=np.int64)  # int keys
        self._bytes = np.zeros(0, dtype=np.uint8)  # str keys: UTF-8 text ...
        self._offsets = np.zeros(
            1, dtype=np.int64
        )  # ... key o is _bytes[_offsets[o]:_offsets[o+1]]

    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        """The id of every key, in insertion order (a view: copy to keep it)."""
        return self._ids[: self._n]

    @property
    def keys(self) -> list[Any]:
        """Every key as a Python object, in insertion order (a list: for small indexes)."""
        return self.key_array().to_pylist()

    def key(self, ordinal: int) -> Any:
        """The key inserted as number `ordinal` (0-based)."""
        if not 0 <= ordinal < self._n:
            raise IndexError(f"key number {ordinal} of {self._n}")
        if self.key_type == "int":
            return int(self._values[ordinal])
        a, b = self._offsets[ordinal], self._offsets[ordinal + 1]
        return self._bytes[a:b].tobytes().decode("utf-8", "replace")

    def key_array(self) -> pa.Array:
        """The keys as an Arrow array (int64, or large_string over the index's own bytes)."""
        n = self._n
        if self.key_type == "int":
            return from_numpy(self._values[:n])
        if self.key_type is None:
            return pa.array([], pa.string())
        return pa.Array.from_buffers(
            pa.large_string(),
            n,
            [None, pa.py_buffer(self._offsets[: n + 1]), pa.py_buffer(self._bytes)],
        )

    def _ordinals(self, keys: pa.Array, h1: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.empty(len(h1), dtype=np.int64)
        kind, a, b = _probe_parts(keys)
        if self._n == 0 or kind != self.key_type:
            out[:] = np.where(valid, -1, -2)  # nothing of this kind is stored
        elif kind == "int":
            _lookup_int(self._table, self._values, a, h1, valid, out)
        else:
            _lookup_str(self._table, self._offsets, self._bytes, a, b, h1, valid, out)
        return out

    def lookup(self, keys: pa.Array | np.ndarray) -> Lookup:
        """Look every key up (see Lookup)."""
        if isinstance(keys, np.ndarray):
            keys = from_numpy(keys)
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        h1, h2, valid = key_hashes(keys)
        out = self._ordinals(keys, h1, valid)
        if (out == -1).any():
            first, label = _distinct_new(h1, h2, out)
        else:
            first, label = np.zeros(0, dtype=np.int64), np.full(len(h1), -1, dtype=np.int64)
        ids = out.copy()
        found = out >= 0
        ids[found] = self._ids[out[found]]
        return Lookup(ids, first, label, h1, h2)

    def add(self, keys: pa.Array | np.ndarray, found: Lookup, ids: np.ndarray) -> np.ndarray:
        """Insert the unknown keys of `found` (a lookup of `keys`) with `ids` (one per distinct
        unknown key, in found.first order); returns every key's id."""
        rows = found.first
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(rows):
            raise ValueError(f"{len(rows)} new keys but {len(ids)} ids")
        if len(rows):
            if ids.min() < 0 or ids.max() > np.iinfo(np.int32).max:
                raise ValueError("key ids must lie in [0, 2**31)")
            if isinstance(keys, np.ndarray):
                keys = from_numpy(keys)
            if isinstance(keys, pa.ChunkedArray):
                keys = keys.combine_chunks()
            self._append(keys.take(from_numpy(rows)), found.h1[rows], ids)
        out = found.ids.copy()
        miss = found.label >= 0
        out[miss] = ids[found.label[miss]]
        return out

    def _append(self, new: pa.Array, h1: np.ndarray, ids: np.ndarray) -> None:
        """Store keys `new` (distinct, not stored yet, no nulls) with their first hashes and ids."""
        kind, a, b = _probe_parts(new)
        if self.key_type is None:
            self.key_type = kind
        elif kind != self.key_type:
            raise ValueError(
                f"keys of type {new.type} added to an index of {self.key_type} keys: a builder "
                "must emit either integer keys or text keys"
            )
        n, m = self._n, len(new)
        if kind == "int":
            grow_attribute(self, "_values", n + m)[n : n + m] = a
        else:
            used = int(self._offsets[n])
            size = int(a[-1] - a[0])
            grow_attribute(self, "_bytes", used + size)[used : used + size] = b[a[0] : a[-1]]
            grow_attribute(self, "_offsets", n + m + 1)[n + 1 : n + m + 1] = a[1:] - a[0] + used
        grow_attribute(self, "_ids", n + m)[n : n + m] = ids
        self._n = n + m
        if 2 * self._n <= len(self._table):
            _insert(self._table, h1, n)
            return
        cap = len(self._table)
        while 2 * self._n > cap:
            cap *= 2
        self._table = None  # free the old table before the new one is made
        self._table = np.full(cap, _EMPTY, dtype=np.int32)
        stored = self.key_array()
        for start in range(0, self._n, _REHASH_BLOCK):
            part = stored.slice(start, _REHASH_BLOCK)
            _insert(self._table, key_hashes(part)[0], start)

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

    # --- state
    def key_state(self) -> dict[str, Any]:
        """The keys as arrays (views: write them out before the index changes): {"type": "int",
        "values": int64} or {"type": "str", "bytes": uint8 UTF-8 text, "offsets": int64 (n+1)}."""
        n = self._n
        if self.key_type == "int":
            return {"type": "int", "values": self._values[:n]}
        return {
            "type": "str",
            "bytes": self._bytes[: int(self._offsets[n])],
            "offsets": self._offsets[: n + 1],
        }

    @classmethod
    def from_key_state(cls, state: Any, ids: np.ndarray | list[int] | None = None) -> KeyIndex:
        """An index of the keys `key_state` returned (or, from older files, a list or array of
        keys) with their `ids` (default: 0, 1, ...); ValueError when they do not fit together
        (ids and keys of other lengths, a key twice or missing, text that is not UTF-8)."""
        if isinstance(state, dict) and state.get("type") == "int":
            keys: pa.Array = from_numpy(np.asarray(state["values"]).astype(np.int64, copy=False))
        elif isinstance(state, dict) and state.get("type") == "str":
            offsets = np.asarray(state["offsets"])
            data = np.asarray(state["bytes"])
            if offsets.dtype.kind not in "iu" or data.dtype != np.uint8:
                raise ValueError("key offsets must be integers and key text bytes")
            offsets = np.ascontiguousarray(offsets, dtype=np.int64)
            if (
                offsets.ndim != 1
                or len(offsets) < 1
                or offsets[0] != 0
                or (np.diff(offsets) < 0).any()
                or offsets[-1] != data.size
            ):
                raise ValueError("key offsets do not describe the key text")
            keys = pa.Array.from_buffers(
                pa.large_string(),
                len(offsets) - 1,
                [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))],
            )
            try:
                keys.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"key text is not UTF-8 ({exc})") from None
        else:
            raw = state.tolist() if isinstance(state, np.ndarray) else list(state)
            try:
                keys = from_numpy(raw) if raw else pa.array([], pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ValueError(f"keys of mixed or unknown types ({exc})") from None
        n = len(keys)
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
        if ids.shape != (n,) or (n and ids.dtype.kind not in "iu"):
            raise ValueError(f"{n} keys but ids of shape {ids.shape} ({ids.dtype})")
        index = cls()
        if n:
            if keys.null_count:
                raise ValueError("a saved key is missing (null)")
            found = index.lookup(keys)
            if len(found.first) != n:
                raise ValueError("a saved key appears twice")
            index.add(keys, found, ids.astype(np.int64))
        return index

    @classmethod
    def from_keys(cls, keys: list[Any] | pa.Array, ids: np.ndarray | list[int]) -> KeyIndex:
        """Rebuild an index from saved keys and ids."""
        return cls.from_key_state(keys.to_pylist() if isinstance(keys, pa.Array) else keys, ids)
