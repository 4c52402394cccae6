"""The shared row scorer: an FM score in O(k·nnz) by Rendle's identity

    Σ_{i<j} <v_i, v_j> x_i x_j = ½ Σ_f [(Σ_i v_if x_i)² − Σ_i v_if² x_i²],

and `predict_csr`, which scores every row of a CSR chunk with it.

CSR rows: indptr (int64, n+1), indices (int32 global feature ids), values (float32). Parameters
w0 (1,), w (n,), V (n, k) are float32. The linear part w0 + Σ w_i x_i is summed in float32
(numba's float() of a float32 stays float32; kept so that models stay bit-identical with 0.1); the
products v_if·x_i and their squares are float32, their sums over features float64, and the
score (linear part plus half the pairwise difference) float64.

Speed notes (benchmarks/bench_kernels.py): both sums of the identity are kept per factor
(`sums[f]` = Σ_i v_if x_i, `sqs[f]` = Σ_i v_if² x_i²) and reduced over f after the row, because the
loops over f are what LLVM vectorises; feature ids are read as unsigned, so that numba emits no
negative-index wraparound (a negative id reads as a huge one and is skipped). No fastmath: the
order of every floating-point operation is fixed, so results are reproducible bit for bit and NaN
and inf are detected.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamfm.learners.memory_hints import CASES_AHEAD, hint_read, hinted_cases


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def score_row(start, stop, indices, values, w0, w, V, limit, sums, sqs):
    """Score of the row whose non-zeros are [start, stop) of (indices, values).

    Ids >= `limit` (unsigned) are skipped: features never seen contribute nothing. Fills
    sums[f] = Σ_i v_if x_i and sqs[f] = Σ_i v_if² x_i² (float64, k), which the gradients reuse.
    Returns (linear part w0 + Σ w_i x_i (float32), Σ_f sums[f]², Σ_f sqs[f]); the score is
    linear + ½(inter − sq).
    """
    return score_cells((indices, values), pair_cell, 0, start, stop, w0, w, V, limit, sums, sqs)


@njit(cache=True, nogil=True, inline="always")
def pair_cell(cells, r, nz):
    """Non-zero nz of (indices, values): (id, x)."""
    return cells[0][nz], cells[1][nz]


@njit(cache=True, nogil=True, inline="always")
def fixed_cell(cells, r, nz):
    """Non-zero nz of row r of a fixed-width chunk (idx (n, fields) int32,): (id, 1.0).

    x is the constant 1.0 (float32): numba inlines it, and LLVM folds every product by it away
    (x·1 is exact in IEEE arithmetic, so the result is bit for bit that of the CSR layout)."""
    return cells[0][r, nz], np.float32(1.0)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def score_cells(cells, cell, r, start, stop, w0, w, V, limit, sums, sqs):
    """`score_row` of row r whose non-zeros are nz in [start, stop), read by cell(cells, r, nz)
    -> (id, x): the one scorer of every row layout (the same operations in the same order)."""
    k = V.shape[1]
    p = float(w0[0])
    for f in range(k):
        sums[f] = 0.0
        sqs[f] = 0.0
    for nz in range(start, stop):
        j, x = cell(cells, r, nz)
        j = np.uint32(j)
        if j >= limit:
            continue
        p += w[j] * x
        for f in range(k):
            d = V[j, f] * x
            sums[f] += d
            sqs[f] += d * d
    inter = 0.0
    sq = 0.0
    for f in range(k):
        inter += sums[f] * sums[f]
        sq += sqs[f]
    return p, inter, sq


@njit(cache=True, nogil=True, error_model="numpy")
def predict_csr(indptr, indices, values, w0, w, V, n_features, out):
    """Raw FM scores of every CSR row into `out` (float64, n). Ids >= n_features are ignored
    (features never seen in training contribute nothing), and so are negative ids."""
    k = V.shape[1]
    sums = np.zeros(k, dtype=np.float64)
    sqs = np.zeros(k, dtype=np.float64)
    limit = np.uint32(n_features)
    n = indptr.shape[0] - 1
    hinted = hinted_cases(V, n)
    for r in range(n):
        if r + CASES_AHEAD < hinted:  # hint a later row's memory (learners.memory_hints)
            for nz in range(indptr[r + CASES_AHEAD], indptr[r + CASES_AHEAD + 1]):
                hint_read(V, np.uint32(indices[nz]))
                hint_read(w, np.uint32(indices[nz]))
        p, inter, sq = score_row(
            np.uint64(indptr[r]),
            np.uint64(indptr[r + 1]),
            indices,
            values,
            w0,
            w,
            V,
            limit,
            sums,
            sqs,
        )
        out[r] = p + 0.5 * (inter - sq)
