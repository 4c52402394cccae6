"""Top-k items per context over a whole catalogue, blocked for speed and bounded memory.

A factorization machine's score of (context c, item i) splits into a context part, an item part
and their cross term (see the ranking task's `item_scores`):

    ŷ(c, i) = b_c + b_i + <q_c, q_i>

so scoring every item for many contexts is a matrix product plus biases. `top_k` computes it a
block of contexts × a block of items at a time (the product by BLAS through numba's `np.dot`,
one score block of `context_block × item_block` float64 at most, 2 MB by default), and keeps
each context's best k in a min-heap; it never holds an (n_ctx, n_items) matrix, so 100k+ items
cost no more memory than the inputs and the output.

    items, scores = top_k(c_b, C, b, Q, k, exclude_indptr, exclude_items)

Exclusions are a CSR over contexts: row r lists item indices never to return for context r (e.g.
the items its user has already seen); negative indices (unknown items) are ignored. Ties: equal
scores put the lower item index first, so results do not depend on the block sizes. When fewer
than k items remain for a context, the rest of its row is item -1, score -inf.
"""

from __future__ import annotations

import numpy as np
from numba import njit

CONTEXT_BLOCK = 128
ITEM_BLOCK = 2048


@njit(cache=True, nogil=True, inline="always")
def _push(heap_s, heap_i, size, k, s, i):
    """Offer (s, i) to a min-heap of the best k (root: lowest score, then highest index);
    items are offered in increasing index order, so an equal score never displaces. Returns
    the new size."""
    if size < k:
        pos = size
        size += 1
        while pos > 0:
            parent = (pos - 1) // 2
            if heap_s[parent] > s or (heap_s[parent] == s and heap_i[parent] < i):
                heap_s[pos] = heap_s[parent]
                heap_i[pos] = heap_i[parent]
                pos = parent
            else:
                break
        heap_s[pos] = s
        heap_i[pos] = i
        return size
    if not s > heap_s[0]:
        return size
    pos = 0
    while True:
        a = 2 * pos + 1
        if a >= size:
            break
        c = a
        b = a + 1
        if b < size and (
            heap_s[b] < heap_s[a] or (heap_s[b] == heap_s[a] and heap_i[b] > heap_i[a])
        ):
            c = b
        if heap_s[c] < s or (heap_s[c] == s and heap_i[c] > i):
            heap_s[pos] = heap_s[c]
            heap_i[pos] = heap_i[c]
            pos = c
        else:
            break
    heap_s[pos] = s
    heap_i[pos] = i
    return size


@njit(cache=True, nogil=True)
def _sort_row(scores, items, size, k):
    """Heap entries -> best first (equal scores: lower index first), padding -inf / -1."""
    for a in range(1, size):
        s = scores[a]
        it = items[a]
        b = a - 1
        while b >= 0 and (scores[b] < s or (scores[b] == s and items[b] > it)):
            scores[b + 1] = scores[b]
            items[b + 1] = items[b]
            b -= 1
        scores[b + 1] = s
        items[b + 1] = it
    for a in range(size, k):
        scores[a] = -np.inf
        items[a] = -1


@njit(cache=True, nogil=True)
def _top_k_blocked(cb, C, ib, Q, k, ex_ptr, ex_items, cblock, iblock, out_items, out_scores):
    n_ctx = cb.shape[0]
    n_items = ib.shape[0]
    sizes = np.zeros(n_ctx, dtype=np.int64)
    banned = np.zeros(iblock, dtype=np.bool_)
    for c0 in range(0, n_ctx, cblock):
        c1 = min(c0 + cblock, n_ctx)
        Cb = C[c0:c1]
        for i0 in range(0, n_items, iblock):
            i1 = min(i0 + iblock, n_items)
            S = np.dot(Cb, Q[i0:i1].T)
            for r in range(c0, c1):
                for e in range(ex_ptr[r], ex_ptr[r + 1]):
                    it = ex_items[e]
                    if i0 <= it < i1:
                        banned[it - i0] = True
                heap_s = out_scores[r]
                heap_i = out_items[r]
                size = sizes[r]
                base = cb[r]
                row = S[r - c0]
                for j in range(i1 - i0):
                    if banned[j]:
                        continue
                    size = _push(heap_s, heap_i, size, k, base + ib[i0 + j] + row[j], i0 + j)
                sizes[r] = size
                for e in range(ex_ptr[r], ex_ptr[r + 1]):
                    it = ex_items[e]
                    if i0 <= it < i1:
                        banned[it - i0] = False
        for r in range(c0, c1):
            _sort_row(out_scores[r], out_items[r], sizes[r], k)


def check_exclusions(
    n_ctx: int, n_items: int, exclude_indptr, exclude_items
) -> tuple[np.ndarray, np.ndarray]:
    """The exclusion CSR as (int64 offsets, int64 items); ValueError naming the context row of
    an item beyond the catalogue, or of offsets that are not a CSR over `n_ctx` rows."""
    if exclude_indptr is None and exclude_items is None:
        return np.zeros(n_ctx + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if exclude_indptr is None or exclude_items is None:
        raise ValueError("exclusions need both exclude_indptr and exclude_items")
    ptr = np.ascontiguousarray(exclude_indptr, dtype=np.int64)
    ex = np.ascontiguousarray(exclude_items, dtype=np.int64)
    if ptr.shape != (n_ctx + 1,):
        raise ValueError(f"exclude_indptr: expected {n_ctx + 1} offsets, got shape {ptr.shape}")
    if ptr[0] != 0 or ptr[-1] != len(ex) or np.any(np.diff(ptr) < 0):
        raise ValueError(
            f"exclude_indptr must rise from 0 to len(exclude_items) = {len(ex)}, "
            f"got {ptr[0]} .. {ptr[-1]}"
        )
    bad = np.flatnonzero(ex >= n_items)
    if len(bad):
        row = int(np.searchsorted(ptr, bad[0], side="right") - 1)
        raise ValueError(
            f"exclude_items: context row {row} excludes item {int(ex[bad[0]])}, beyond the "
            f"{n_items} items"
        )
    return ptr, ex


def _as_2d(a, rows: int, name: str) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != rows:
        raise ValueError(f"{name}: expected shape ({rows}, k), got {np.shape(a)}")
    return out


def top_k(
    context_bias: np.ndarray,
    context_factors: np.ndarray,
    item_bias: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    exclude_indptr: np.ndarray | None = None,
    exclude_items: np.ndarray | None = None,
    *,
    context_block: int = CONTEXT_BLOCK,
    item_block: int = ITEM_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of each context: (items int64 (n_ctx, k), scores float64 (n_ctx, k)),
    best first, score = context_bias[r] + item_bias[i] + context_factors[r] · item_factors[i].

    Excluded items (CSR over contexts: `exclude_indptr` (n_ctx+1), `exclude_items`; negative
    items ignored) are never returned; rows with fewer than k candidates end in item -1 with
    score -inf. Equal scores: lower item index first. Work memory: one float64 block of
    `context_block × item_block` scores. ValueError for inconsistent shapes, non-finite
    inputs, or an excluded item beyond the catalogue."""
    cb = np.ascontiguousarray(context_bias, dtype=np.float64).reshape(-1)
    ib = np.ascontiguousarray(item_bias, dtype=np.float64).reshape(-1)
    C = _as_2d(context_factors, cb.shape[0], "context_factors")
    Q = _as_2d(item_factors, ib.shape[0], "item_factors")
    if C.shape[1] != Q.shape[1]:
        raise ValueError(f"context factors have k={C.shape[1]}, item factors k={Q.shape[1]}")
    for name, a in (("context_bias", cb), ("context_factors", C), ("item_bias", ib)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds a non-finite value")
    if not np.isfinite(Q).all():
        raise ValueError("item_factors holds a non-finite value")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if context_block < 1 or item_block < 1:
        raise ValueError("context_block and item_block must be >= 1")
    ptr, ex = check_exclusions(cb.shape[0], ib.shape[0], exclude_indptr, exclude_items)
    items = np.full((cb.shape[0], k), -1, dtype=np.int64)
    scores = np.full((cb.shape[0], k), -np.inf, dtype=np.float64)
    if cb.shape[0] and ib.shape[0]:
        if C.shape[1] == 0:  # np.dot of empty factors: biases only
            C = np.zeros((cb.shape[0], 1))
            Q = np.zeros((ib.shape[0], 1))
        _top_k_blocked(cb, C, ib, Q, k, ptr, ex, int(context_block), int(item_block), items, scores)
    return items, scores
