"""CSRChunk, the rows the learners take; row selection and concatenation; checked conversion of
user matrices into it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamfm.errors import DataError

MAX_FEATURE_ID = np.iinfo(np.int32).max - 1


class CSRChunk(NamedTuple):
    """Rows of a design matrix: indptr int64 (n+1), indices int32 (global ids), values float32."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def max_id(self) -> int:
        """Largest feature id used (-1 when the chunk has no non-zeros)."""
        return int(self.indices.max()) if self.indices.size else -1


def gather(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of a CSR structure with row pointers `indptr`; a row number < 0 gives an empty row.

    Returns (new indptr, position in the old non-zero arrays of every new non-zero).
    """
    present = rows >= 0
    r = np.where(present, rows, 0)
    starts = indptr[r]
    lengths = np.where(present, indptr[r + 1] - starts, 0)
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    # A non-zero's source: its row's start plus its offset within the row.
    return out, np.repeat(starts - out[:-1], lengths) + np.arange(out[-1])


def take_rows(chunk: CSRChunk, rows: np.ndarray) -> CSRChunk:
    """The chunk's rows `rows` (int64 row numbers), in that order."""
    indptr, src = gather(chunk.indptr, rows)
    return CSRChunk(indptr, chunk.indices[src], chunk.values[src])


def slice_rows(chunk: CSRChunk, start: int, stop: int) -> CSRChunk:
    """Rows [start, stop) of the chunk (views of its arrays)."""
    lo, hi = int(chunk.indptr[start]), int(chunk.indptr[stop])
    return CSRChunk(chunk.indptr[start : stop + 1] - lo, chunk.indices[lo:hi], chunk.values[lo:hi])


def concat(chunks: list[CSRChunk]) -> CSRChunk:
    """Rows of all chunks, one after the other."""
    if len(chunks) == 1:
        return chunks[0]
    indptr = [np.zeros(1, dtype=np.int64)]
    offset = 0
    for c in chunks:
        indptr.append(c.indptr[1:] + offset)
        offset += c.nnz
    return CSRChunk(
        np.concatenate(indptr),
        np.concatenate([c.indices for c in chunks]),
        np.concatenate([c.values for c in chunks]),
    )


def to_chunk(X, *, name: str = "X") -> tuple[CSRChunk, int]:
    """Convert a scipy.sparse matrix or anything `scipy.sparse.csr_matrix` accepts into a CSRChunk.

    Returns (chunk, number of columns). Raises DataError for non-finite values or too many columns.
    """
    if isinstance(X, CSRChunk):
        return X, X.max_id() + 1
    import scipy.sparse as sp  # here, not at module level: the streaming path never needs scipy

    try:
        if sp.issparse(X):
            csr = X.tocsr()
        elif isinstance(X, tuple):  # (data, (rows, cols)) or (data, indices, indptr)
            csr = sp.csr_matrix(X)
        else:
            dense = np.asarray(X, dtype=np.float64)
            if dense.ndim != 2:
                raise DataError(f"{name} must be 2-D, got shape {dense.shape}")
            csr = sp.csr_matrix(dense)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"{name} must be a 2-D numeric array or a scipy.sparse matrix: {exc}"
        ) from None
    n_cols = int(csr.shape[1])
    if n_cols - 1 > MAX_FEATURE_ID:
        raise DataError(
            f"{name} has {n_cols} columns; at most {MAX_FEATURE_ID + 1} feature ids fit"
        )
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    if csr.nnz and int(csr.indices.min()) < 0:
        bad = int(np.argmin(csr.indices))
        row = int(np.searchsorted(csr.indptr, bad, side="right") - 1)
        raise DataError(f"{name} has a negative column index", row=row, value=int(csr.indices[bad]))
    values = np.asarray(csr.data, dtype=np.float32)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        row = int(np.searchsorted(csr.indptr, bad, side="right") - 1)
        raise DataError(
            f"{name} holds a non-finite value",
            row=row,
            column=str(int(csr.indices[bad])),
            value=float(csr.data[bad]),
        )
    chunk = CSRChunk(
        np.asarray(csr.indptr, dtype=np.int64),
        np.asarray(csr.indices, dtype=np.int32),
        values,
    )
    return chunk, n_cols
