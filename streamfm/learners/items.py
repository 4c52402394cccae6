"""ItemCatalogue: the items a ranking model has seen, with their item-side features (causal).

Task `ranking` learns from events "this context chose this item". Negatives and all-items scoring
need, for every item seen so far, the feature entries that describe the item alone (its id and
every builder keyed by the item, e.g. a `join` on the item table: the spec's `ranking.item` and
`ranking.item_features`). The catalogue keeps them, growing as items appear in training rows.

Public interface (what `streamfm recommend` and the ranking metrics use)::

    cat.n_items                 # int: items seen
    cat.item_fid                # int32 (n_items,): global feature id of each item's id feature
                                #   (the `ranking.item` builder's feature of the item)
    cat.indptr, cat.indices, cat.values
                                # CSR (int64 n_items+1, int32, float32) of item-side entries:
                                #   row i = the item-side entries of item i's FIRST training event,
                                #   as the builders produced them then (later events of the item
                                #   do not change them)
    cat.counts                  # int64 (n_items,): positive events of each item (popularity)
    cat.item_index(fids)        # int32: item index of global feature ids (-1: not an item seen)
    cat.item_keys(pipeline)     # pyarrow Array: the original item values, in item order
    cat.state_dict() / cat.load_state_dict(state)

Items are numbered 0, 1, ... in order of first sight in the training stream (so independent of
batch sizes). The catalogue is part of the ranking learner's state (`learner.state_dict()
["catalogue"]`), hence of every checkpoint and of the model file (state member
``learner/catalogue/...``, see docs/model-file.md).

Memory: 4 + 8 bytes per item, plus 8 bytes per item-side entry, plus 4 bytes per feature id
(the id -> item look-up); arrays grow by half at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

_MIN = 64


def _grown(arr: np.ndarray, n: int, fill=0) -> np.ndarray:
    """`arr` with at least n rows (by half at a time), new rows `fill`."""
    if arr.shape[0] >= n:
        return arr
    cap = max(_MIN, arr.shape[0])
    while cap < n:
        cap += cap // 2
    out = np.full((cap, *arr.shape[1:]), fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class ItemCatalogue:
    """Items seen in training and their item-side feature entries (see the module docstring).

    The ranking kernel appends to the arrays in place (`arrays()`), after `reserve` made room;
    `sizes` = [n_items, n_entries] is updated by the kernel.
    """

    def __init__(self) -> None:
        self.sizes = np.zeros(2, dtype=np.int64)  # n_items, n_entries (kernel-updated)
        self._fid = np.zeros(0, dtype=np.int32)
        self._counts = np.zeros(0, dtype=np.int64)
        self._indptr = np.zeros(1, dtype=np.int64)
        self._indices = np.zeros(0, dtype=np.int32)
        self._values = np.zeros(0, dtype=np.float32)
        self._index_of = np.zeros(0, dtype=np.int32)  # feature id -> item index, -1

    # --- the public views
    @property
    def n_items(self) -> int:
        return int(self.sizes[0])

    @property
    def item_fid(self) -> np.ndarray:
        return self._fid[: self.n_items]

    @property
    def counts(self) -> np.ndarray:
        return self._counts[: self.n_items]

    @property
    def indptr(self) -> np.ndarray:
        return self._indptr[: self.n_items + 1]

    @property
    def indices(self) -> np.ndarray:
        return self._indices[: int(self.sizes[1])]

    @property
    def values(self) -> np.ndarray:
        return self._values[: int(self.sizes[1])]

    def item_index(self, fids: np.ndarray) -> np.ndarray:
        """Item index (int32) of each global feature id; -1 for ids that are no item seen."""
        fids = np.asarray(fids, dtype=np.int64)
        out = np.full(fids.shape, -1, dtype=np.int32)
        ok = (fids >= 0) & (fids < self._index_of.shape[0])
        out[ok] = self._index_of[fids[ok]]
        return out

    def item_keys(self, pipeline, item_group: int) -> pa.Array:
        """The original item values (the `ranking.item` builder's keys), in item order."""
        ids, keys = pipeline.space.vocabulary(item_group)
        pos = np.searchsorted(ids, self.item_fid.astype(np.int64))
        if len(pos) and (pos.max() >= len(ids) or not np.array_equal(ids[pos], self.item_fid)):
            raise ValueError("the catalogue names item features the feature space does not hold")
        return keys.take(pa.array(pos, type=pa.int64()))

    # --- growth, used by the kernel's caller
    def reserve(self, n_features: int, more_items: int, more_entries: int) -> None:
        """Room for `more_items` new items with `more_entries` entries, and for feature ids
        below `n_features` in the id -> item look-up."""
        n, e = self.n_items, int(self.sizes[1])
        # An item is a feature id, so there are never more than n_features items: the bound
        # keeps the arrays (and the popularity tree sized to them) from growing with each chunk.
        items = min(n + more_items, n_features)
        self._fid = _grown(self._fid, items)
        self._counts = _grown(self._counts, items)
        self._indptr = _grown(self._indptr, items + 1)
        self._indices = _grown(self._indices, e + more_entries)
        self._values = _grown(self._values, e + more_entries)
        self._index_of = _grown(self._index_of, n_features, fill=-1)

    def arrays(self) -> tuple:
        """(sizes, fid, counts, indptr, indices, values, index_of): the live arrays the kernel
        appends to (capacity as reserved)."""
        return (
            self.sizes,
            self._fid,
            self._counts,
            self._indptr,
            self._indices,
            self._values,
            self._index_of,
        )

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """The seen part of every array (views of the live arrays)."""
        return {
            "n_items": self.n_items,
            "item_fid": self.item_fid,
            "counts": self.counts,
            "indptr": self.indptr,
            "indices": self.indices,
            "values": self.values,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError if the arrays are inconsistent."""
        n = state["n_items"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"catalogue: n_items must be a non-negative integer, got {n!r}")
        fid = np.asarray(state["item_fid"])
        counts = np.asarray(state["counts"])
        indptr = np.asarray(state["indptr"])
        indices = np.asarray(state["indices"])
        values = np.asarray(state["values"])
        if fid.shape != (n,) or counts.shape != (n,) or indptr.shape != (n + 1,):
            raise ValueError("catalogue: arrays do not match n_items")
        if fid.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            raise ValueError("catalogue: item ids and offsets must be integers")
        e = int(indptr[-1]) if n else int(indptr[0])
        if (
            indptr[0] != 0
            or np.any(np.diff(indptr) < 0)
            or indices.shape != (e,)
            or values.shape != (e,)
        ):
            raise ValueError("catalogue: item entries do not match their offsets")
        if n and (int(fid.min()) < 0 or len(np.unique(fid)) != n):
            raise ValueError("catalogue: item feature ids must be distinct and >= 0")
        if n and int(counts.min()) < 0:
            raise ValueError("catalogue: counts must be >= 0")
        if e and (not np.all(np.isfinite(values)) or int(indices.min()) < 0):
            raise ValueError("catalogue: item entries must be finite with ids >= 0")
        self.sizes[:] = [n, e]
        self._fid = fid.astype(np.int32).copy()
        self._counts = counts.astype(np.int64).copy()
        self._indptr = indptr.astype(np.int64).copy()
        self._indices = indices.astype(np.int32).copy()
        self._values = values.astype(np.float32).copy()
        top = int(max(fid.max(initial=-1), indices.max(initial=-1))) + 1
        self._index_of = np.full(max(top, _MIN), -1, dtype=np.int32)
        self._index_of[self._fid] = np.arange(n, dtype=np.int32)
