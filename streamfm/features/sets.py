"""`set`: a multi-valued column as multi-hot (optionally weighted), e.g. a movie's genres.

The column is a list column, or text split by `delimiter` ("Comedy|Drama"). Duplicate values in a
row count once (their weights add up). Normalisation per row: none, mean (1/n) or sqrt (1/sqrt(n),
as SVD++'s implicit feedback), n = number of distinct values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from streamfm.features.arrow import (
    as_float,
    as_string_keys,
    column,
    flatten_list,
    ragged_block_parts,
)
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.numpy_arrow import from_numpy, to_numpy


class SetParams(BuilderParams):
    column: str = Field(description="list column, or text to split with `delimiter`")
    delimiter: str | None = Field(None, description="split text values on this string")
    weights_column: str | None = Field(
        None, description="list column of weights, parallel to the values"
    )
    normalize: Literal["none", "mean", "sqrt"] = "none"


class SetBuilder(FeatureBuilder):
    kind = "set"
    Params = SetParams
    params: SetParams

    def columns(self) -> list[str]:
        return [self.params.column] + (
            [self.params.weights_column] if self.params.weights_column else []
        )

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        p = self.params
        col = column(batch, p.column, self.name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.split_pattern(col, p.delimiter) if p.delimiter is not None else _as_single(col)
        elif not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
            col = _as_single(col)
        indptr, flat = flatten_list(col)
        weights = None
        if p.weights_column:
            wptr, wflat = flatten_list(column(batch, p.weights_column, self.name))
            if not np.array_equal(wptr, indptr):
                raise ValueError(f"builder '{self.name}': values and weights differ in length")
            weights = as_float(wflat, p.weights_column, self.name)
        keys = as_string_keys(flat)
        if pa.types.is_string(keys.type):
            keys = pc.utf8_trim_whitespace(keys)
        keep = keys.is_valid()
        if pa.types.is_string(keys.type):
            keep = pc.and_(keep, pc.not_equal(keys, ""))
        keep_np = np.asarray(to_numpy(pc.fill_null(keep, False)), dtype=bool)
        if not keep_np.all():
            keys = keys.filter(from_numpy(keep_np))
            weights = None if weights is None else weights[keep_np]
            counts = _row_counts(indptr, keep_np)
            indptr = np.zeros(len(indptr), dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
        indptr, keys, values = ragged_block_parts(indptr, keys, weights, p.normalize)
        return Block(indptr, values, keys=keys)


def _as_single(col: pa.Array) -> pa.Array:
    """A scalar column as one-element lists (null stays an empty row)."""
    offsets = np.arange(len(col) + 1, dtype=np.int32)
    return pa.ListArray.from_arrays(from_numpy(offsets), col)


def _row_counts(indptr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Number of kept entries in each row."""
    csum = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return csum[indptr[1:]] - csum[indptr[:-1]]
