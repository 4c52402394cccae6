"""`sequence`: the last N items of a key's history (e.g. a user's previous items), for FPMC-like
sequential models.

For each row, the items its key had *earlier in the stream* — the current event's item is added
after the row is built, so a row never sees its own or a later event. At most `length` items
per key are kept (a ring buffer of `length` int32 per key: memory is bounded by keys × length).

The j-th most recent item (j = 0 for the item just before the current event) gets a weight

- `uniform`: 1
- `linear`: (length − j) / length  (1 for the latest, 1/length for the oldest kept)
- `exponential`: decay^j

An item that occurs several times in the window appears once, its weights summed (kept at its
most recent position). Weights are then normalised per row: `none`, `mean` (divided by their sum;
FPMC's 1/|B| for uniform weights) or `sqrt` (divided by the root of their sum of squares; for
uniform weights without repeats this is the implicit builder's 1/sqrt(n)).

The features are the builder's own item vocabulary in its own feature group (like the implicit
builder's), so the previous items have factors of their own, apart from the item id's.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from numba import njit
from pydantic import Field, model_validator

from streamfm.features.arrow import as_string_keys, column
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.features.implicit import Vocabulary
from streamfm.features.keyindex import grow_attribute

WEIGHTINGS = ("uniform", "linear", "exponential")
NORMALIZATIONS = ("none", "mean", "sqrt")


class SequenceParams(BuilderParams):
    key: str = Field(description="column whose history is kept (e.g. user)")
    items: str = Field(description="column of the items of the history (e.g. item)")
    length: int = Field(5, ge=1, le=100_000, description="how many recent items a row gets (N)")
    weighting: Literal["uniform", "linear", "exponential"] = Field(
        "uniform", description="weight of the j-th most recent item: 1, (N-j)/N or decay^j"
    )
    decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="weighting: exponential — the factor per step back (default 0.5)",
    )
    normalize: Literal["none", "mean", "sqrt"] = Field(
        "sqrt", description="per row: none, divide by the weights' sum, or by their L2 norm"
    )

    @model_validator(mode="after")
    def _decay(self) -> SequenceParams:
        if self.weighting == "exponential" and self.decay is None:
            self.decay = 0.5
        elif self.weighting != "exponential" and self.decay is not None:
            raise ValueError(
                f"decay is the factor of weighting 'exponential'; weighting is {self.weighting!r}"
            )
        return self


@njit(cache=True, nogil=True)
def _position_weights(length, weighting, decay):
    """Weight of the j-th most recent item, j = 0..length-1 (weighting: 0 uniform, 1 linear,
    2 exponential)."""
    w = np.ones(length, dtype=np.float64)
    for j in range(length):
        if weighting == 1:
            w[j] = (length - j) / length
        elif weighting == 2:
            w[j] = decay**j
    return w


@njit(cache=True, nogil=True)
def _sequence_rows(key_idx, item_idx, ring, counts, length, pos_w, normalize, learn):
    """Per row, the items its key had before it (most recent first, repeats merged, weights
    normalised: 0 none, 1 mean, 2 sqrt); then, if `learn`, the row's item is appended. Key k's
    i-th item is ring[k, i % length]; counts[k]: items appended to key k."""
    n = key_idx.shape[0]
    # Pass 1: an upper bound of the output size (counts are restored afterwards).
    total = 0
    for r in range(n):
        k = key_idx[r]
        if k < 0:
            continue
        total += min(counts[k], length)
        if learn and item_idx[r] >= 0:
            counts[k] += 1
    if learn:
        for r in range(n):
            k = key_idx[r]
            if k >= 0 and item_idx[r] >= 0:
                counts[k] -= 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(total, dtype=np.int64)
    vals = np.empty(total, dtype=np.float64)
    at = 0
    for r in range(n):  # pass 2: emit, then append
        k = key_idx[r]
        if k >= 0:
            c = counts[k]
            m = min(c, length)
            row0 = at
            for j in range(m):  # j-th most recent
                item = ring[k, (c - 1 - j) % length]
                w = pos_w[j]
                dup = -1
                for q in range(row0, at):
                    if out[q] == item:
                        dup = q
                        break
                if dup >= 0:
                    vals[dup] += w
                else:
                    out[at] = item
                    vals[at] = w
                    at += 1
            if normalize != 0 and at > row0:
                s = 0.0
                for q in range(row0, at):
                    s += vals[q] if normalize == 1 else vals[q] * vals[q]
                if normalize == 2:
                    s = np.sqrt(s)
                for q in range(row0, at):
                    vals[q] /= s
            if learn and item_idx[r] >= 0:
                ring[k, c % length] = item_idx[r]
                counts[k] = c + 1
        indptr[r + 1] = at
    return indptr, out[:at], vals[:at].astype(np.float32)


@njit(cache=True, nogil=True)
def _export(ring, counts, length):
    """(indptr, items): every key's stored items oldest first (independent of ring capacity)."""
    n = counts.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(n):
        indptr[k + 1] = indptr[k] + min(counts[k], length)
    items = np.empty(indptr[n], dtype=np.int32)
    for k in range(n):
        m = indptr[k + 1] - indptr[k]
        first = counts[k] - m
        for j in range(m):
            items[indptr[k] + j] = ring[k, (first + j) % length]
    return indptr, items


@njit(cache=True, nogil=True)
def _import(items, indptr, counts, length, ring):
    """Put `_export`'s histories back at their ring positions."""
    for k in range(counts.shape[0]):
        m = indptr[k + 1] - indptr[k]
        first = counts[k] - m
        for j in range(m):
            ring[k, (first + j) % length] = items[indptr[k] + j]


class SequenceBuilder(FeatureBuilder):
    kind = "sequence"
    Params = SequenceParams
    params: SequenceParams

    def __init__(self, name: str, params: SequenceParams) -> None:
        super().__init__(name, params)
        self.keys = Vocabulary()
        self.items = Vocabulary()
        self.ring = np.zeros((0, params.length), dtype=np.int32)
        self.counts = np.zeros(0, dtype=np.int64)
        self._pos_w = _position_weights(
            params.length, WEIGHTINGS.index(params.weighting), float(params.decay or 1.0)
        )

    def columns(self) -> list[str]:
        return [self.params.key, self.params.items]

    def key_name(self, key: Any) -> str:
        return str(self.items.key(int(key)))

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        p = self.params
        key_idx = self.keys.lookup(as_string_keys(column(batch, p.key, self.name)), grow=training)
        item_idx = self.items.lookup(
            as_string_keys(column(batch, p.items, self.name)), grow=training
        )
        n_keys = len(self.keys)
        if n_keys > len(self.counts):
            grow_attribute(self, "ring", n_keys)
            grow_attribute(self, "counts", n_keys)
        indptr, items, values = _sequence_rows(
            key_idx,
            item_idx,
            self.ring,
            self.counts,
            p.length,
            self._pos_w,
            NORMALIZATIONS.index(p.normalize),
            training,
        )
        return Block(indptr, values, keys=pa.array(items, type=pa.int64()))

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """Vocabularies of keys and items, each key's stored items oldest first (`hist_items`
        cut by `hist_indptr`) and the number of items appended per key (`counts`)."""
        n = len(self.keys)
        indptr, items = _export(self.ring[:n], self.counts[:n], self.params.length)
        return {
            "keys": self.keys.state(),
            "items": self.items.state(),
            "hist_indptr": indptr,
            "hist_items": items,
            "counts": self.counts[:n].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError naming the builder if the histories
        do not fit the vocabularies."""
        keys = Vocabulary.from_state(state["keys"])
        items_vocab = Vocabulary.from_state(state["items"])
        length = self.params.length
        n = len(keys)
        counts = np.asarray(state["counts"])
        if counts.shape != (n,) or (n and (counts.dtype.kind not in "iu" or counts.min() < 0)):
            raise ValueError(f"feature builder '{self.name}': histories do not fit {n} keys")
        counts = counts.astype(np.int64)
        indptr = np.asarray(state["hist_indptr"]).astype(np.int64)
        items = np.ascontiguousarray(state["hist_items"], dtype=np.int32)
        if indptr.shape != (n + 1,) or not np.array_equal(
            np.diff(indptr), np.minimum(counts, length)
        ):
            raise ValueError(
                f"feature builder '{self.name}': histories do not fit {n} keys of at most "
                f"{length} items (was the model trained with another 'length'?)"
            )
        if len(items) and (items.min() < 0 or items.max() >= len(items_vocab)):
            raise ValueError(f"feature builder '{self.name}': a history names an unknown item")
        ring = np.zeros((n, length), dtype=np.int32)
        _import(items, indptr, counts, length, ring)
        self.keys, self.items, self.ring, self.counts = keys, items_vocab, ring, counts
