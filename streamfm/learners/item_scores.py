"""Scoring every catalogue item for a context: item / context vectors and ranks, in numba.

A row of task `ranking` is a context part c (user and context builders) plus an item part i (the
item's id and item-side features). The FM score splits as

    ŷ(c + i) = b_c + b_i + <q_c, q_i>

with q = Σ v_j x_j over the part's entries, b = (w0) + Σ w_j x_j + ½(|q|² − Σ_j |v_j|² x_j²)
(w0 counted in the context's bias). So for a fixed context, the scores of all items are a bias
plus a matrix–vector product over precomputed item vectors.

    bias, Q = item_vectors(params, catalogue)            # (n_items,), (n_items, k) float64
    cb, cq = context_vectors(params, indptr, indices, values, skip)   # per context row
    above, ties, n = rank_counts(cb, cq, bias, Q, targets, exclude_indptr, exclude_items)

The top-k lists themselves are `streamfm.recommend.top_k` (blocked, BLAS) on these vectors.

Exclusions are a CSR over contexts: row r = item indices (catalogue order) never to rank
against for context r (e.g. items the user has seen). Scores are float64 sums of float32
parameters; they equal a brute-force `predict_csr` of the full row up to float rounding (the
linear part is summed in float64 here).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamfm.learners.params import FMParams


@njit(cache=True, nogil=True, error_model="numpy")
def _part_vectors(indptr, indices, values, w, V, limit, skip, with_w0, w0, bias, Q):
    k = V.shape[1]
    for r in range(indptr.shape[0] - 1):
        b = float(w0[0]) if with_w0 else 0.0
        sq = 0.0
        for f in range(k):
            Q[r, f] = 0.0
        for nz in range(indptr[r], indptr[r + 1]):
            j = np.uint32(indices[nz])
            if j >= limit or skip[j]:
                continue
            x = values[nz]
            b += float(w[j] * x)
            for f in range(k):
                d = float(V[j, f] * x)
                Q[r, f] += d
                sq += d * d
        inter = 0.0
        for f in range(k):
            inter += Q[r, f] * Q[r, f]
        bias[r] = b + 0.5 * (inter - sq)


def item_vectors(params: FMParams, catalogue) -> tuple[np.ndarray, np.ndarray]:
    """(bias (n_items,), Q (n_items, k)), float64: each catalogue item's part of the score
    (b_i = Σ w x + intra-item pairs, q_i = Σ v x over its item-side entries; no w0)."""
    n = catalogue.n_items
    bias = np.zeros(n, dtype=np.float64)
    Q = np.zeros((n, params.k), dtype=np.float64)
    skip = np.zeros(max(params.n_features, 1), dtype=np.bool_)
    _part_vectors(
        catalogue.indptr, catalogue.indices, catalogue.values, params.w, params.V,
        np.uint32(params.n_features), skip, False, params.w0, bias, Q,
    )  # fmt: skip
    return bias, Q


def context_vectors(
    params: FMParams,
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    skip_groups: list[int] | tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(bias (n,), q (n, k)), float64, of CSR context rows (w0 included). Entries of features
    in `skip_groups` (the item-side groups, if the rows hold an item) and ids never seen are
    left out."""
    n = indptr.shape[0] - 1
    bias = np.zeros(n, dtype=np.float64)
    Q = np.zeros((n, params.k), dtype=np.float64)
    m = params.n_features
    skip = np.isin(params.group[:m], np.asarray(list(skip_groups), dtype=np.int64))
    if m == 0:
        skip = np.zeros(1, dtype=np.bool_)
    _part_vectors(
        np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, np.int32),
        np.ascontiguousarray(values, np.float32), params.w, params.V, np.uint32(m), skip, True,
        params.w0, bias, Q,
    )  # fmt: skip
    return bias, Q


@njit(cache=True, nogil=True, inline="always")
def _score(cb, cq, r, ib, IQ, i):
    s = 0.0
    for f in range(IQ.shape[1]):
        s += cq[r, f] * IQ[i, f]
    return cb[r] + ib[i] + s


def _exclusions(n_ctx: int, exclude_indptr, exclude_items) -> tuple[np.ndarray, np.ndarray]:
    if exclude_indptr is None:
        return np.zeros(n_ctx + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ptr = np.ascontiguousarray(exclude_indptr, dtype=np.int64)
    if ptr.shape != (n_ctx + 1,):
        raise ValueError(f"exclude_indptr: expected {n_ctx + 1} offsets, got {ptr.shape}")
    return ptr, np.ascontiguousarray(exclude_items, dtype=np.int64)


@njit(cache=True, nogil=True, error_model="numpy")
def _rank_counts(cb, cq, ib, IQ, targets, ex_ptr, ex_items, above, ties, n_cand):
    n_items = ib.shape[0]
    banned = np.zeros(n_items, dtype=np.bool_)
    for r in range(cb.shape[0]):
        t = targets[r]
        above[r] = 0
        ties[r] = 0
        n_cand[r] = 0
        if t < 0 or t >= n_items:
            continue
        for e in range(ex_ptr[r], ex_ptr[r + 1]):
            it = ex_items[e]
            if 0 <= it < n_items and it != t:
                banned[it] = True
        st = _score(cb, cq, r, ib, IQ, t)
        a = 0
        ti = 0
        n = 0
        for i in range(n_items):
            if banned[i] or i == t:
                continue
            n += 1
            s = _score(cb, cq, r, ib, IQ, i)
            if s > st:
                a += 1
            elif s == st:
                ti += 1
        above[r], ties[r], n_cand[r] = a, ti, n
        for e in range(ex_ptr[r], ex_ptr[r + 1]):
            it = ex_items[e]
            if 0 <= it < n_items:
                banned[it] = False


def rank_counts(
    context_bias: np.ndarray,
    context_q: np.ndarray,
    item_bias: np.ndarray,
    item_Q: np.ndarray,
    targets: np.ndarray,
    exclude_indptr: np.ndarray | None = None,
    exclude_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each context and its target item (catalogue index; -1: not rankable): (items scored
    above the target, items scored equal, candidate items other than the target), int64, over
    all catalogue items except the context's excluded ones (the target itself is never
    excluded). The target's 0-based rank is `above` (+ ties / 2 in expectation)."""
    cb = np.ascontiguousarray(context_bias, dtype=np.float64)
    cq = np.ascontiguousarray(context_q, dtype=np.float64).reshape(cb.shape[0], -1)
    ib = np.ascontiguousarray(item_bias, dtype=np.float64)
    IQ = np.ascontiguousarray(item_Q, dtype=np.float64).reshape(ib.shape[0], -1)
    ptr, ex = _exclusions(cb.shape[0], exclude_indptr, exclude_items)
    n = cb.shape[0]
    above = np.zeros(n, dtype=np.int64)
    ties = np.zeros(n, dtype=np.int64)
    n_cand = np.zeros(n, dtype=np.int64)
    _rank_counts(
        cb, cq, ib, IQ, np.ascontiguousarray(targets, dtype=np.int64), ptr, ex, above, ties,
        n_cand,
    )  # fmt: skip
    return above, ties, n_cand
