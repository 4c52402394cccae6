"""`implicit`: SVD++-like implicit feedback, the set N(k) of items a key interacted with.

For each row, the items of its key (e.g. the user's rated movies), normalised 1/sqrt(|N|):

- `source: causal` — the items seen for this key *earlier in the stream* (never the current or a
  later event). At most `max_items` per key: when the bound is hit, `keep_latest` forgets the
  oldest item, `keep_first` stops adding. Memory follows the items stored: each key's items live
  in one shared arena (int32) in a region that doubles when full (up to max_items), ~20 bytes
  per key besides.
- `source: table` — all items of the key from a side table (key column, items column: a list or
  one item per row), read once and saved with the model.

"Flipped" (items described by the users who rated them): `key: item, items: user`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field, model_validator

from streamfm.config import SourceConfig
from streamfm.csr import gather
from streamfm.errors import DataError
from streamfm.features.arrow import (
    as_string_keys,
    column,
    flatten_list,
    ragged_block_parts,
)
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.features.keyindex import KeyIndex
from streamfm.growth import grow_attribute
from streamfm.numpy_arrow import from_numpy


class ImplicitParams(BuilderParams):
    key: str = Field(description="column whose history is built (e.g. user)")
    items: str = Field(description="column of the interacted items (e.g. item)")
    source: Literal["causal", "table"] = "causal"
    table: SourceConfig | None = Field(None, description="source: table — the side table")
    table_key: str | None = Field(None, description="key column of the side table (default: key)")
    table_items: str | None = Field(
        None, description="items column of the side table (default: items)"
    )
    max_items: int = Field(200, ge=1, description="causal: bound on remembered items per key")
    when_full: Literal["keep_latest", "keep_first"] = "keep_latest"
    normalize: Literal["none", "mean", "sqrt"] = "sqrt"

    @model_validator(mode="after")
    def _table(self) -> ImplicitParams:
        if self.source == "table" and self.table is None:
            raise ValueError("source 'table' needs a 'table' (a source config of the side table)")
        return self


class Vocabulary:
    """Dense int index 0..n-1 of keys, filled in order of first sight (a KeyIndex)."""

    def __init__(self, keys: list[str] | None = None) -> None:
        keys = list(keys or [])
        self.index = KeyIndex.from_keys(keys, list(range(len(keys))))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def keys(self) -> list:
        return self.index.keys

    def key(self, i: int) -> Any:
        return self.index.key(i)

    def lookup(self, values: pa.Array, grow: bool) -> np.ndarray:
        """int64 index of every value (-1 for nulls, and for new values when not growing)."""
        return self.index.lookup_or_add(values, len(self.index), grow=grow)

    def state(self) -> dict[str, Any]:
        """The keys as arrays (`KeyIndex.key_state`; views of the live ones)."""
        return self.index.key_state()

    @classmethod
    def from_state(cls, state: Any) -> Vocabulary:
        """The vocabulary `state` describes (or, from older files, a list of its keys)."""
        vocabulary = cls()
        vocabulary.index = KeyIndex.from_key_state(state)
        return vocabulary


@njit(cache=True, nogil=True)
def _needed_capacity(key_idx, item_idx, counts, cap, max_items, keep_latest):
    """(keys whose region must grow before this batch is learnt, their new capacities): a key
    needs room for min(max_items, items it will have stored), and grows to at least twice its
    capacity."""
    n_keys = counts.shape[0]
    will = counts.copy()
    for r in range(key_idx.shape[0]):
        k = key_idx[r]
        if k >= 0 and item_idx[r] >= 0 and (keep_latest or will[k] < max_items):
            will[k] += 1
    grow = np.zeros(n_keys, dtype=np.bool_)
    count = 0
    for r in range(key_idx.shape[0]):
        k = key_idx[r]
        if k >= 0 and not grow[k] and min(will[k], max_items) > cap[k]:
            grow[k] = True
            count += 1
    keys = np.empty(count, dtype=np.int64)
    new_cap = np.empty(count, dtype=np.int64)
    j = 0
    for r in range(key_idx.shape[0]):  # in order of first sight in the batch
        k = key_idx[r]
        if k >= 0 and grow[k]:
            grow[k] = False
            keys[j] = k
            new_cap[j] = min(max_items, max(min(will[k], max_items), 2 * cap[k]))
            j += 1
    return keys, new_cap


@njit(cache=True, nogil=True)
def _relocate(arena, start, cap, counts, keys, new_cap, base):
    """Move each key of `keys` to a region of new_cap[j] slots from arena[base] on (its stored
    items are linear: a key grows only before its region is full)."""
    at = base
    for j in range(keys.shape[0]):
        k = keys[j]
        stored = min(counts[k], cap[k])
        for i in range(stored):
            arena[at + i] = arena[start[k] + i]
        start[k] = at
        cap[k] = new_cap[j]
        at += new_cap[j]
    return at


@njit(cache=True, nogil=True)
def _causal_history(key_idx, item_idx, arena, start, counts, max_items, keep_latest, learn):
    """Per row, the items its key had before it (oldest first); then, if `learn`, remember the
    row's item. Key k's items are arena[start[k] + (i % max_items)] for its i-th item (a ring
    once max_items are stored; regions are large enough: `_needed_capacity`); counts: items
    appended per key."""
    n = key_idx.shape[0]
    lengths = np.zeros(n, dtype=np.int64)
    appended = np.zeros(n, dtype=np.bool_)
    for r in range(n):  # pass 1: output sizes; counts are put back afterwards
        k = key_idx[r]
        if k < 0:
            continue
        lengths[r] = min(counts[k], max_items)
        if learn and item_idx[r] >= 0 and (keep_latest or counts[k] < max_items):
            counts[k] += 1
            appended[r] = True
    for r in range(n):
        if appended[r]:
            counts[key_idx[r]] -= 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    for r in range(n):
        indptr[r + 1] = indptr[r] + lengths[r]
    out = np.empty(indptr[n], dtype=np.int64)
    for r in range(n):  # pass 2: emit, then append
        k = key_idx[r]
        if k < 0:
            continue
        c = counts[k]
        length = lengths[r]
        first = c - length
        base = start[k]
        for j in range(length):
            out[indptr[r] + j] = arena[base + (first + j) % max_items]
        if learn and item_idx[r] >= 0:
            if keep_latest:
                arena[base + c % max_items] = item_idx[r]
                counts[k] = c + 1
            elif c < max_items:
                arena[base + c] = item_idx[r]
                counts[k] = c + 1
    return indptr, out


@njit(cache=True, nogil=True)
def _export(arena, start, counts, max_items):
    """(indptr, items): every key's stored items oldest first (the state of the histories,
    independent of where they are in the arena)."""
    n = counts.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(n):
        indptr[k + 1] = indptr[k] + min(counts[k], max_items)
    items = np.empty(indptr[n], dtype=np.int32)
    for k in range(n):
        length = indptr[k + 1] - indptr[k]
        first = counts[k] - length
        for j in range(length):
            items[indptr[k] + j] = arena[start[k] + (first + j) % max_items]
    return indptr, items


@njit(cache=True, nogil=True)
def _import(items, indptr, counts, max_items, arena, start, cap, keep_cap):
    """Lay out histories (`_export`'s) in a compact arena, each item at the ring position it
    had: regions of the capacities in `cap` (keep_cap) or of exactly their items (a full ring
    for keys that reached max_items)."""
    at = 0
    for k in range(counts.shape[0]):
        length = indptr[k + 1] - indptr[k]
        first = counts[k] - length
        start[k] = at
        if not keep_cap:
            cap[k] = max_items if counts[k] >= max_items else length
        for j in range(length):
            arena[at + (first + j) % max_items] = items[indptr[k] + j]
        at += cap[k]
    return at


class ImplicitBuilder(FeatureBuilder):
    kind = "implicit"
    Params = ImplicitParams
    params: ImplicitParams

    def __init__(self, name: str, params: ImplicitParams) -> None:
        super().__init__(name, params)
        self.keys = Vocabulary()
        self.items = Vocabulary()
        self._reset_histories(0)
        self._table: tuple[np.ndarray, np.ndarray] | None = None  # table mode: (indptr, items)

    def _reset_histories(self, n_keys: int, arena_size: int = 0) -> None:
        """Empty causal histories for `n_keys` keys: per key its region in the arena (start,
        capacity) and the number of items appended (counts)."""
        self.arena = np.zeros(arena_size, dtype=np.int32)
        self.used = 0  # arena slots handed out
        self.garbage = 0  # slots of regions left behind when keys moved to bigger ones
        self.start = np.zeros(n_keys, dtype=np.int64)
        # A region holds at most max_items: int32 unless max_items does not fit one.
        small = self.params.max_items < np.iinfo(np.int32).max
        self.cap = np.zeros(n_keys, dtype=np.int32 if small else np.int64)
        self.counts = np.zeros(n_keys, dtype=np.int64)

    def columns(self) -> list[str]:
        p = self.params
        return [p.key] if p.source == "table" else [p.key, p.items]

    def key_name(self, key: Any) -> str:
        return str(self.items.key(int(key)))

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        p = self.params
        if p.source == "table":
            return self._from_table(batch)
        key_idx = self.keys.lookup(as_string_keys(column(batch, p.key, self.name)), grow=training)
        item_idx = self.items.lookup(
            as_string_keys(column(batch, p.items, self.name)), grow=training
        )
        if training:
            self._make_room(key_idx, item_idx)
        indptr, items = _causal_history(
            key_idx,
            item_idx,
            self.arena,
            self.start,
            self.counts,
            p.max_items,
            p.when_full == "keep_latest",
            training,
        )
        return self._block(indptr, items)

    def _make_room(self, key_idx: np.ndarray, item_idx: np.ndarray) -> None:
        """Regions large enough for every item this batch will store (new keys included)."""
        p = self.params
        n_keys = len(self.keys)
        if n_keys > len(self.counts):
            for name in ("start", "cap", "counts"):
                grow_attribute(self, name, n_keys)
        keys, new_cap = _needed_capacity(
            key_idx, item_idx, self.counts, self.cap, p.max_items, p.when_full == "keep_latest"
        )
        if not len(keys):
            return
        need = int(new_cap.sum())
        if self.garbage > self.used // 2 and self.garbage > need:
            self._compact()
        self.garbage += int(self.cap[keys].sum())  # the regions these keys leave
        grow_attribute(self, "arena", self.used + need)
        self.used = int(
            _relocate(self.arena, self.start, self.cap, self.counts, keys, new_cap, self.used)
        )

    def _compact(self) -> None:
        """Drop the regions keys left behind: a new arena of the live regions (capacities kept),
        in key order."""
        n = len(self.keys)
        indptr, items = _export(self.arena, self.start[:n], self.counts[:n], self.params.max_items)
        self.arena = None
        self.arena = np.zeros(int(self.cap[:n].sum()), dtype=np.int32)
        self.used = int(
            _import(
                items,
                indptr,
                self.counts[:n],
                self.params.max_items,
                self.arena,
                self.start,
                self.cap,
                True,
            )
        )
        self.garbage = 0

    def _block(self, indptr: np.ndarray, items: np.ndarray) -> Block:
        indptr, keys, values = ragged_block_parts(
            indptr, from_numpy(items), None, self.params.normalize
        )
        return Block(indptr, values, keys=keys)

    # --- side table
    def _from_table(self, batch: pa.RecordBatch) -> Block:
        if self._table is None:
            self._load_table()
        t_indptr, t_items = self._table
        rows = self.keys.lookup(
            as_string_keys(column(batch, self.params.key, self.name)), grow=False
        )
        indptr, src = gather(t_indptr, rows)
        return self._block(indptr, t_items[src])

    def _load_table(self) -> None:
        from streamfm.sources import open_source

        p = self.params
        key_col, items_col = p.table_key or p.key, p.table_items or p.items
        source = open_source(p.table)
        key_parts, item_parts = [], []
        for batch, _pos in source.batches(columns=[key_col, items_col]):
            keys = as_string_keys(column(batch, key_col, self.name))
            items = column(batch, items_col, self.name)
            if pa.types.is_list(items.type) or pa.types.is_large_list(items.type):
                indptr, flat = flatten_list(items)
                keys = keys.take(from_numpy(np.repeat(np.arange(len(keys)), np.diff(indptr))))
                items = flat
            key_parts.append(keys)
            item_parts.append(as_string_keys(items))
        if not key_parts:
            raise DataError(
                f"feature builder '{self.name}': the side table is empty", path=str(p.table.path)
            )
        keys = pa.concat_arrays(key_parts)
        items = pa.concat_arrays(item_parts)
        ok = pc.and_(keys.is_valid(), items.is_valid())
        keys, items = keys.filter(ok), items.filter(ok)
        key_idx = self.keys.lookup(keys, grow=True)
        item_idx = self.items.lookup(items, grow=True)
        order = np.argsort(key_idx, kind="stable")  # group by key, table order within a key
        counts = np.bincount(key_idx, minlength=len(self.keys))
        t_indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=t_indptr[1:])
        self._table = (t_indptr, item_idx[order])

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """Vocabularies of keys and items (`KeyIndex.key_state`: append-only, so the views
        returned never change), and the side table or the histories: each key's stored items
        oldest first (`hist_items`, cut by `hist_indptr`) and items appended (`counts`, a view
        of the live counts, as the parameters' state is: copy the state to keep it)."""
        if self.params.source == "table" and self._table is None:
            self._load_table()
        state: dict[str, Any] = {"keys": self.keys.state(), "items": self.items.state()}
        if self.params.source == "table":
            state["table_indptr"], state["table_items"] = (a.copy() for a in self._table)
        else:
            n = len(self.keys)
            indptr, items = _export(
                self.arena, self.start[:n], self.counts[:n], self.params.max_items
            )
            state["hist_indptr"], state["hist_items"] = indptr, items
            state["counts"] = self.counts[:n]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (or the (keys, max_items) matrix `hist` of
        files written before); ValueError if the histories do not fit the vocabularies."""
        self.keys = Vocabulary.from_state(state["keys"])
        self.items = Vocabulary.from_state(state["items"])
        if "table_indptr" in state:
            indptr, items = np.asarray(state["table_indptr"]), np.asarray(state["table_items"])
            if indptr.shape != (len(self.keys) + 1,) or indptr[-1] != len(items):
                raise ValueError(f"feature builder '{self.name}': side table does not fit its keys")
            self._table = (indptr, items)
            return
        p = self.params
        n = len(self.keys)
        counts = np.asarray(state["counts"])
        if counts.shape != (n,) or (n and (counts.dtype.kind not in "iu" or counts.min() < 0)):
            raise ValueError(f"feature builder '{self.name}': histories do not fit {n} keys")
        counts = counts.astype(np.int64)
        stored = np.minimum(counts, p.max_items)
        if "hist" in state:  # the (keys, max_items) ring buffers of files written before
            hist = np.asarray(state["hist"]).reshape(-1, p.max_items)
            if hist.shape[0] != n:
                raise ValueError(f"feature builder '{self.name}': histories do not fit {n} keys")
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(stored, out=indptr[1:])
            slots = (counts - stored).repeat(stored) + (
                np.arange(indptr[-1]) - indptr[:-1].repeat(stored)
            )
            items = hist[np.arange(n).repeat(stored), slots % p.max_items]
        else:
            indptr = np.asarray(state["hist_indptr"]).astype(np.int64)
            items = np.asarray(state["hist_items"])
            if indptr.shape != (n + 1,) or not np.array_equal(np.diff(indptr), stored):
                raise ValueError(f"feature builder '{self.name}': histories do not fit {n} keys")
        items = np.ascontiguousarray(items, dtype=np.int32)
        if len(items) and (items.min() < 0 or items.max() >= len(self.items)):
            raise ValueError(f"feature builder '{self.name}': a history names an unknown item")
        cap = np.where(counts >= p.max_items, p.max_items, stored)
        self._reset_histories(n, int(cap.sum()))
        self.counts[:] = counts
        self.used = int(
            _import(items, indptr, counts, p.max_items, self.arena, self.start, self.cap, False)
        )
