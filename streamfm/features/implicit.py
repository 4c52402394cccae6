"""`implicit`: SVD++-like implicit feedback, the set N(k) of items a key interacted with.

For each row, the items of its key (e.g. the user's rated movies), normalised 1/sqrt(|N|):

- `source: causal` — the items seen for this key *earlier in the stream* (never the current or a
  later event). At most `max_items` per key: when the bound is hit, `keep_latest` forgets the
  oldest item, `keep_first` stops adding. Memory: keys × max_items int32.
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

    @property
    def keys(self) -> list:
        return self.index.keys

    def lookup(self, values: pa.Array, grow: bool) -> np.ndarray:
        """int64 index of every value (-1 for nulls, and for new values when not growing)."""
        return self.index.lookup_or_add(values, len(self.index), grow=grow)


@njit(cache=True, nogil=True)
def _causal_history(key_idx, item_idx, hist, counts, max_items, keep_latest, learn):
    """Per row, the items its key had before it (oldest first); then, if `learn`, remember the
    row's item. hist: (n_keys, max_items) ring buffers; counts: items appended per key."""
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
        start = c - length
        for j in range(length):
            out[indptr[r] + j] = hist[k, (start + j) % max_items]
        if learn and item_idx[r] >= 0:
            if keep_latest:
                hist[k, c % max_items] = item_idx[r]
                counts[k] = c + 1
            elif c < max_items:
                hist[k, c] = item_idx[r]
                counts[k] = c + 1
    return indptr, out


class ImplicitBuilder(FeatureBuilder):
    kind = "implicit"
    Params = ImplicitParams
    params: ImplicitParams

    def __init__(self, name: str, params: ImplicitParams) -> None:
        super().__init__(name, params)
        self.keys = Vocabulary()
        self.items = Vocabulary()
        self.hist = np.zeros((0, params.max_items), dtype=np.int32)
        self.counts = np.zeros(0, dtype=np.int64)
        self._table: tuple[np.ndarray, np.ndarray] | None = None  # table mode: (indptr, items)

    def columns(self) -> list[str]:
        p = self.params
        return [p.key] if p.source == "table" else [p.key, p.items]

    def key_name(self, key: Any) -> str:
        return self.items.keys[int(key)]

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        p = self.params
        if p.source == "table":
            return self._from_table(batch)
        key_idx = self.keys.lookup(as_string_keys(column(batch, p.key, self.name)), grow=training)
        item_idx = self.items.lookup(
            as_string_keys(column(batch, p.items, self.name)), grow=training
        )
        if training and len(self.keys.keys) > len(self.counts):
            self._grow(len(self.keys.keys))
        indptr, items = _causal_history(
            key_idx,
            item_idx,
            self.hist,
            self.counts,
            p.max_items,
            p.when_full == "keep_latest",
            training,
        )
        return self._block(indptr, items)

    def _grow(self, n_keys: int) -> None:
        cap = max(n_keys, 2 * len(self.counts), 64)
        hist = np.zeros((cap, self.params.max_items), dtype=np.int32)
        hist[: len(self.counts)] = self.hist
        counts = np.zeros(cap, dtype=np.int64)
        counts[: len(self.counts)] = self.counts
        self.hist, self.counts = hist, counts

    def _block(self, indptr: np.ndarray, items: np.ndarray) -> Block:
        indptr, keys, values = ragged_block_parts(
            indptr, pa.array(items), None, self.params.normalize
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
                keys = keys.take(pa.array(np.repeat(np.arange(len(keys)), np.diff(indptr))))
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
        counts = np.bincount(key_idx, minlength=len(self.keys.keys))
        t_indptr = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=t_indptr[1:])
        self._table = (t_indptr, item_idx[order])

    # --- state
    def state_dict(self) -> dict[str, Any]:
        if self.params.source == "table" and self._table is None:
            self._load_table()
        state: dict[str, Any] = {"keys": list(self.keys.keys), "items": list(self.items.keys)}
        if self.params.source == "table":
            state["table_indptr"], state["table_items"] = (a.copy() for a in self._table)
        else:
            n = len(self.keys.keys)
            state["hist"], state["counts"] = self.hist[:n].copy(), self.counts[:n].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keys = Vocabulary(state["keys"])
        self.items = Vocabulary(state["items"])
        if "table_indptr" in state:
            self._table = (np.asarray(state["table_indptr"]), np.asarray(state["table_items"]))
        else:
            self.hist = (
                np.asarray(state["hist"], dtype=np.int32).reshape(-1, self.params.max_items).copy()
            )
            self.counts = np.asarray(state["counts"], dtype=np.int64).copy()
