"""FeatureSpace: global feature ids for every (group, key), allocated on first sight, never changed.

Ids of new keys are allocated in the order a row-by-row reader would meet them (row, then builder
order, then position within the row), so ids — and with them every initial parameter — do not
depend on how the stream was cut into batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.csr import MAX_FEATURE_ID, CSRChunk
from streamfm.errors import DataError
from streamfm.features.base import Block
from streamfm.features.keyindex import KeyIndex
from streamfm.growth import grow_attribute
from streamfm.numpy_arrow import from_numpy

# Id given to keys never seen in training when predicting: UNSEEN_ID - g for a key of group g.
# The prediction kernels ignore ids at or beyond the number of seen features, so such non-zeros
# contribute nothing, except that MCMC gives them their group's prior mean
# (learners/coordinate_learner.py); hence no real id reaches the top MAX_GROUPS ids.
UNSEEN_ID = MAX_FEATURE_ID
MAX_GROUPS = 1 << 12


class FeatureSpace:
    """Allocates and remembers global feature ids, and the group (builder) of every id."""

    def __init__(self) -> None:
        self.n_ids = 0
        self.groups: list[str] = []
        self.reserved: list[tuple[int, int]] = []  # per group: (base id, size)
        self._index: list[KeyIndex] = []  # per group: key -> id (and keys, ids in allocation order)
        self.id_group = np.zeros(0, dtype=np.int32)

    # --- groups
    def add_group(self, name: str, reserve: int = 0) -> int:
        """Register a group (one builder) and reserve `reserve` fixed ids for it; returns its index."""
        if name in self.groups:
            raise ValueError(f"feature group {name!r} exists already")
        if len(self.groups) >= MAX_GROUPS:
            raise ValueError(f"more than {MAX_GROUPS} feature groups")
        g = len(self.groups)
        self.groups.append(name)
        self._index.append(KeyIndex())
        base = self._allocate(reserve, g)
        self.reserved.append((base, int(reserve)))
        return g

    def _allocate(self, n: int, group: int | np.ndarray) -> int:
        base = self.n_ids
        if base + n > MAX_FEATURE_ID - MAX_GROUPS:
            raise DataError(
                f"more than {MAX_FEATURE_ID - MAX_GROUPS} features: use hashed features"
            )
        self.n_ids += n
        grow_attribute(self, "id_group", self.n_ids)
        self.id_group[base : base + n] = group
        return base

    def vocabulary_size(self, group: int) -> int:
        """Number of keys seen for `group`."""
        return len(self._index[group])

    def vocabulary(self, group: int) -> tuple[np.ndarray, pa.Array]:
        """(ids int64, keys) of `group`'s keys in the order they were given ids."""
        index = self._index[group]
        return np.asarray(index.ids, dtype=np.int64), index.key_array()

    # --- mapping
    def to_chunk(self, blocks: list[Block], groups: list[int], *, training: bool) -> CSRChunk:
        """Map every block's keys/ids to global ids and merge the blocks row-wise into one chunk.

        training=True allocates ids for new keys; training=False maps them to UNSEEN_ID - group.
        """
        n_rows = blocks[0].n_rows if blocks else 0
        mapped: list[np.ndarray] = []
        pending = []  # new keys: (block index, unique positions, first nz positions, uniques)
        for b, (block, g) in enumerate(zip(blocks, groups, strict=True)):
            if block.n_rows != n_rows:
                raise ValueError(
                    f"builder {self.groups[g]!r} gave {block.n_rows} rows, expected {n_rows}"
                )
            if block.ids is not None:
                base, size = self.reserved[g]
                ids = np.asarray(block.ids, dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= size):
                    raise ValueError(f"builder {self.groups[g]!r} emitted ids outside [0, {size})")
                mapped.append(ids + base)
                continue
            ids, new = self._lookup(block.keys, g)
            mapped.append(ids)
            if new is not None:
                pending.append((b, g, *new))
        if pending:
            self._allocate_new(blocks, mapped, pending, training)
        return _merge(blocks, mapped, n_rows)

    def _lookup(self, keys, g: int):
        """Ids of known keys (-1 for new ones) and, if any are new, what allocating them needs."""
        arr = keys if isinstance(keys, pa.Array) else from_numpy(keys)
        if arr.null_count:
            raise ValueError(f"builder {self.groups[g]!r} emitted null keys")
        found = self._index[g].lookup(arr)
        if not len(found.first):
            return found.ids, None
        return found.ids, (arr, found)

    def _allocate_new(self, blocks, mapped, pending, training: bool) -> None:
        if not training:
            for b, g, _arr, found in pending:
                mapped[b] = np.where(found.label >= 0, UNSEEN_ID - g, found.ids)
            return
        # Order of first sight in a row-by-row read: (row, block, position in row).
        rows, blk, pos = [], [], []
        for b, _g, _arr, found in pending:
            indptr = blocks[b].indptr
            r = np.searchsorted(indptr, found.first, side="right") - 1
            rows.append(r)
            pos.append(found.first - indptr[r])
            blk.append(np.full(len(r), b))
        order = np.lexsort((np.concatenate(pos), np.concatenate(blk), np.concatenate(rows)))
        base = self.n_ids
        self._allocate(len(order), 0)
        new_ids = np.empty(len(order), dtype=np.int64)
        new_ids[order] = base + np.arange(len(order))  # ids of the new keys, block by block
        start = 0
        for b, g, arr, found in pending:
            count = len(found.first)
            ids = new_ids[start : start + count]
            start += count
            self.id_group[ids] = g
            mapped[b] = self._index[g].add(arr, found, ids)

    def extend(self, group: int, keys: pa.Array) -> None:
        """Give the keys of `keys` (no nulls) not in `group` yet new ids, in order of first
        appearance (used to assemble a vocabulary collected elsewhere)."""
        if not len(keys):
            return
        found = self._index[group].lookup(keys)
        if len(found.first):
            base = self._allocate(len(found.first), group)
            self._index[group].add(keys, found, base + np.arange(len(found.first)))

    # --- names
    def describe(self, fid: int, builders=None) -> tuple[str, str]:
        """(group name, key or feature name) of global id `fid`."""
        g = int(self.id_group[fid])
        base, size = self.reserved[g]
        if base <= fid < base + size:
            name = builders[g].reserved_name(fid - base) if builders else str(fid - base)
            return self.groups[g], name
        index = self._index[g]
        key = index.key(int(np.searchsorted(index.ids, fid)))
        return self.groups[g], builders[g].key_name(key) if builders else str(key)

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """Groups, reserved ranges, the group of every id, and per group its keys
        (`KeyIndex.key_state`: int64 values, or UTF-8 bytes and offsets) with their ids, in
        allocation order. Arrays are views of the live ones (write them out, or copy them,
        before the space changes): a state of millions of keys is never copied to be saved."""
        return {
            "n_ids": self.n_ids,
            "groups": list(self.groups),
            "reserved": [list(r) for r in self.reserved],
            "id_group": self.id_group[: self.n_ids],
            "ids": [index.ids for index in self._index],
            "keys": [index.key_state() for index in self._index],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (in place: holders of this space see the change).

        The state is checked first (it may come from a damaged or crafted file): ValueError
        unless every id belongs to exactly one group, reserved or keyed, and every group's
        keys are distinct and as many as its ids."""
        groups = [str(g) for g in state["groups"]]
        n_ids = int(state["n_ids"])
        reserved = [(int(b), int(n)) for b, n in state["reserved"]]
        id_group = np.asarray(state["id_group"])
        if not 0 <= n_ids <= MAX_FEATURE_ID or len(reserved) != len(groups):
            raise ValueError(f"{n_ids} features in {len(groups)} groups: not a feature space")
        if id_group.shape != (n_ids,) or (n_ids and id_group.dtype.kind not in "iu"):
            raise ValueError(f"id_group has shape {id_group.shape}, expected ({n_ids},)")
        if n_ids and (id_group.min() < 0 or id_group.max() >= len(groups)):
            raise ValueError("id_group names groups that do not exist")
        raw_ids, raw_keys = list(state["ids"]), list(state["keys"])
        old_types = state.get("key_types")  # files written before the keys were arrays
        if len(raw_ids) != len(groups) or len(raw_keys) != len(groups):
            raise ValueError("keys or ids are missing for some feature groups")
        indexes = []
        total = 0
        for g, (base, size) in enumerate(reserved):
            if (
                base < 0
                or size < 0
                or base + size > n_ids
                or (id_group[base : base + size] != g).any()
            ):
                raise ValueError(f"the reserved ids of group {groups[g]!r} are not its own")
            ids = np.asarray(raw_ids[g])
            if ids.ndim != 1 or (len(ids) and ids.dtype.kind not in "iu"):
                raise ValueError(f"the ids of group {groups[g]!r} are not integers")
            if len(ids) and (
                ids[0] < 0
                or ids[-1] >= n_ids
                or (np.diff(ids) <= 0).any()
                or (id_group[ids] != g).any()
            ):
                raise ValueError(f"the ids of group {groups[g]!r} are not ids of that group")
            keys = raw_keys[g]
            if old_types is not None:
                keys = np.asarray(keys).tolist()
                keys = [int(k) for k in keys] if old_types[g] == "int" else [str(k) for k in keys]
            indexes.append(KeyIndex.from_key_state(keys, ids))
            total += size + len(ids)
        if total != n_ids:
            raise ValueError(f"{total} ids belong to groups, but the space has {n_ids}")
        self.groups, self.reserved, self.n_ids = groups, reserved, n_ids
        self.id_group = id_group.astype(np.int32)
        self._index = indexes


def _merge(blocks: list[Block], mapped: list[np.ndarray], n_rows: int) -> CSRChunk:
    """Concatenate the blocks' non-zeros row by row (block order within a row)."""
    counts = [np.diff(b.indptr) for b in blocks]
    total = np.sum(counts, axis=0) if counts else np.zeros(n_rows, dtype=np.int64)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(total, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=np.int32)
    values = np.empty(nnz, dtype=np.float32)
    offset = indptr[:-1].copy()
    for block, ids, c in zip(blocks, mapped, counts, strict=True):
        row_of_nz = np.repeat(np.arange(n_rows), c)
        dest = offset[row_of_nz] + (np.arange(len(ids)) - block.indptr[row_of_nz])
        indices[dest] = ids
        values[dest] = block.values
        offset += c
    return CSRChunk(indptr, indices, values)
