"""Checked conversion of user matrices into the plain CSR arrays the kernels take."""

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
