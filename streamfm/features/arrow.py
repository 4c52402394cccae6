"""Small pyarrow helpers shared by builders (column access with clear errors, key casting)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.errors import DataError, MissingInputError
from streamfm.numpy_arrow import from_numpy, to_numpy
from streamfm.text import NUMBER_PATTERN


def column(batch: pa.RecordBatch, name: str, builder: str) -> pa.Array:
    """Column `name` of `batch` (dictionary-decoded), or a DataError naming the builder."""
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        raise MissingInputError(
            f"feature builder '{builder}' needs column '{name}', which the data does not have "
            f"(columns: {', '.join(batch.schema.names)})"
        )
    col = batch.column(idx)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def as_string_keys(col: pa.Array) -> pa.Array:
    """Category keys as strings, whatever the column type ("42" from int 42 or from text "42")."""
    if pa.types.is_string(col.type):
        return col
    if pa.types.is_large_string(col.type):  # e.g. Parquet files written by pandas 3
        return pc.cast(col, pa.string())
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        try:
            return pc.cast(col, pa.string())
        except pa.ArrowInvalid:
            raise DataError(
                "a text column is not valid UTF-8: set source.csv.encoding (e.g. latin-1) to the "
                "file's encoding"
            ) from None
    if pa.types.is_floating(col.type):
        # 3.0 and 3 are the same category; keep non-integral values as they print.
        values = to_numpy(col)
        integral = np.isfinite(values) & (values == np.round(values))
        as_int = pc.cast(pc.if_else(from_numpy(integral), col, None), pa.int64(), safe=False)
        return pc.if_else(
            from_numpy(integral), pc.cast(as_int, pa.string()), pc.cast(col, pa.string())
        )
    return pc.cast(col, pa.string())


def as_float(col: pa.Array, name: str, builder: str) -> np.ndarray:
    """Column values as float64 with NaN for nulls; a DataError for text that is not a number."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        # streamfm.text's rule decides what text is a number (Arrow's cast alone would differ).
        spelled = pc.match_substring_regex(col, NUMBER_PATTERN, ignore_case=True)
        if not pc.all(pc.or_kleene(spelled, pc.is_null(col)), min_count=0).as_py():
            raise DataError(
                f"feature builder '{builder}': column '{name}' holds text that is not a number"
            )
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
    return np.asarray(to_numpy(col), dtype=np.float64)


def flatten_list(col: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(indptr int64, flat values) of a list column; null lists count as empty."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    offsets = to_numpy(col.offsets).astype(np.int64)
    indptr = offsets - offsets[0]
    flat = col.values.slice(offsets[0], offsets[-1] - offsets[0])
    if col.null_count:
        # A null list may still own a range of values: drop them by rebuilding the offsets.
        lengths = np.diff(offsets)
        valid = to_numpy(col.is_valid())
        keep = np.repeat(valid, lengths)
        lengths[~valid] = 0
        flat = flat.filter(from_numpy(keep))
        indptr = np.zeros(len(col) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
    return indptr, flat


def dictionary_codes(values: pa.Array) -> tuple[np.ndarray, list]:
    """(int64 code per row, -1 for nulls; the distinct values as Python objects, in order of
    first appearance): the per-chunk "look up distinct values only" primitive."""
    enc = pc.dictionary_encode(values)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    codes = to_numpy(pc.fill_null(enc.indices, -1)).astype(np.int64)
    return codes, enc.dictionary.to_pylist()


def ragged_block_parts(
    indptr: np.ndarray, keys: pa.Array, weights: np.ndarray | None, normalize: str
) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """Rows of several keys each -> (indptr, keys, values) with duplicates merged per row
    (kept at their first occurrence; weights summed, or 1 when unweighted) and values normalised per row:
    'none', 'mean' (1/n) or 'sqrt' (1/sqrt(n)), n = number of distinct keys in the row."""
    n_rows = len(indptr) - 1
    counts = np.diff(indptr)
    w = np.ones(len(keys)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(keys):
        row_of = np.repeat(np.arange(n_rows), counts)
        enc = pc.dictionary_encode(keys)
        codes = to_numpy(enc.indices).astype(np.int64)
        pair = row_of * (len(enc.dictionary) + 1) + codes
        _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
        if len(first) < len(pair):
            order = np.argsort(first, kind="stable")  # back to stream order
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            # Unweighted: a repeated value is still 1; weighted: the weights add up.
            w = (
                np.ones(len(order))
                if weights is None
                else np.bincount(rank[inverse.ravel()], weights=w, minlength=len(order))
            )
            kept = first[order]
            keys = keys.take(from_numpy(kept))
            counts = np.bincount(row_of[kept], minlength=n_rows)
            indptr = np.zeros(n_rows + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
    if normalize != "none":
        scale = np.zeros(n_rows)
        nz = counts > 0
        scale[nz] = 1.0 / (counts[nz] if normalize == "mean" else np.sqrt(counts[nz]))
        w = w * np.repeat(scale, counts)
    return np.asarray(indptr, dtype=np.int64), keys, w.astype(np.float32)
