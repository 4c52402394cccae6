"""Small pyarrow helpers shared by builders (column access with clear errors, key casting)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.errors import DataError


def column(batch: pa.RecordBatch, name: str, builder: str) -> pa.Array:
    """Column `name` of `batch` (dictionary-decoded), or a DataError naming the builder."""
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        raise DataError(
            f"feature builder '{builder}' needs column '{name}', which the data does not have "
            f"(columns: {', '.join(batch.schema.names)})"
        )
    col = batch.column(idx)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def as_string_keys(col: pa.Array) -> pa.Array:
    """Category keys as strings, whatever the column type ("42" from int 42 or from text "42")."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    if pa.types.is_floating(col.type):
        # 3.0 and 3 are the same category; keep non-integral values as they print.
        values = col.to_numpy(zero_copy_only=False)
        integral = np.isfinite(values) & (values == np.round(values))
        as_int = pc.cast(pc.if_else(pa.array(integral), col, None), pa.int64(), safe=False)
        return pc.if_else(
            pa.array(integral), pc.cast(as_int, pa.string()), pc.cast(col, pa.string())
        )
    return pc.cast(col, pa.string())


def as_float(col: pa.Array, name: str, builder: str) -> np.ndarray:
    """Column values as float64 with NaN for nulls; a DataError for text that is not a number."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
        except pa.ArrowInvalid as exc:
            raise DataError(
                f"feature builder '{builder}': column '{name}' holds text that is not a number: {exc}"
            ) from None
    elif not (
        pa.types.is_integer(col.type)
        or pa.types.is_floating(col.type)
        or pa.types.is_boolean(col.type)
    ):
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        else:
            raise DataError(
                f"feature builder '{builder}': column '{name}' has type {col.type}, not numeric"
            )
    if col.null_count:
        col = pc.fill_null(pc.cast(col, pa.float64()), float("nan"))
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def flatten_list(col: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(indptr int64, flat values) of a list column; null lists count as empty."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    offsets = col.offsets.to_numpy().astype(np.int64)
    indptr = offsets - offsets[0]
    flat = col.values.slice(offsets[0], offsets[-1] - offsets[0])
    if col.null_count:
        # A null list may still own a range of values: drop them by rebuilding the offsets.
        lengths = np.diff(offsets)
        lengths[~col.is_valid().to_numpy(zero_copy_only=False)] = 0
        keep = np.repeat(col.is_valid().to_numpy(zero_copy_only=False), np.diff(offsets))
        flat = flat.filter(pa.array(keep))
        indptr = np.zeros(len(col) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
    return indptr, flat
