"""Implicit-feedback split and all-items ranking metrics of the ranking benchmark (numpy only).

Kept apart from the library's own ranking metrics on purpose: the benchmark scores every method
(streamfm and the baselines) with this one plain implementation.

Protocol (`bench_ranking.py`): ratings >= 4 are positives; for each user, positives are ordered
by (timestamp, item) and the last round(20%) are held out (`leave_last_fraction`). Candidates for
a user are all items of the catalogue (the items with a training positive) except the user's
training positives. Per user with at least one test positive:

- recall@k = |top-k ∩ test| / |test|;
- NDCG@k = Σ_{j<k, top_j ∈ test} 1/log2(j+2)  /  Σ_{j<min(k,|test|)} 1/log2(j+2);
- AUC = P(score(test positive) > score(candidate that is not a test positive)), ties ½.

The reported figures are means over those users. Ties in the ranking: lower item index first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_ml100k(data: Path) -> dict[str, np.ndarray]:
    """u.data of ML-100K under `data` (the shared data folder) as int64 arrays."""
    path = Path(data) / "ml-100k" / "u.data"
    if not path.exists():
        raise SystemExit(f"{path}: not found (give the shared data folder with --data)")
    raw = np.loadtxt(path, dtype=np.int64, delimiter="\t")
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise SystemExit(f"{path}: expected 4 tab-separated columns, got shape {raw.shape}")
    return {"user": raw[:, 0], "item": raw[:, 1], "rating": raw[:, 2], "time": raw[:, 3]}


def leave_last_fraction(
    user: np.ndarray, item: np.ndarray, time: np.ndarray, fraction: float = 0.2
) -> np.ndarray:
    """Bool mask of the held-out events: each user's last round(fraction · n) events by
    (time, item) (round half up; users with few events may hold out none)."""
    order = np.lexsort((item, time, user))  # by user, then time, then item
    u = user[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, len(u)])
    n_test = np.floor(fraction * counts + 0.5).astype(np.int64)
    position = np.arange(len(u)) - np.repeat(starts, counts)  # 0-based position within user
    held = position >= np.repeat(counts - n_test, counts)
    out = np.zeros(len(user), dtype=bool)
    out[order] = held
    return out


def csr_of(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, sorted unique column indices per row)."""
    width = int(cols.max(initial=0)) + 1
    pairs = np.unique(rows.astype(np.int64) * width + cols)
    r, c = pairs // width, pairs % width
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    return indptr, c.astype(np.int64)


def ranking(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Candidate item indices best first (stable: ties by lower index), excluded ones dropped."""
    keep = np.ones(len(scores), dtype=bool)
    keep[excluded] = False
    cand = np.flatnonzero(keep)
    return cand[np.argsort(-scores[cand], kind="stable")]


def recall_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """|top-k ∩ relevant| / |relevant|."""
    if len(relevant) == 0:
        raise ValueError("recall@k of a user without relevant items")
    return float(np.isin(ranked[:k], relevant).sum() / len(relevant))


def ndcg_at_k(ranked: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """DCG of the top k (binary gains, 1/log2(rank+1)) over the ideal DCG."""
    if len(relevant) == 0:
        raise ValueError("NDCG@k of a user without relevant items")
    gains = np.isin(ranked[:k], relevant)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discount[: min(k, len(relevant))].sum()
    return float((gains * discount[: len(gains)]).sum() / ideal)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted ½ (Mann–Whitney with average
    ranks); NaN without positives or without negatives."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    ranks = np.empty(len(s))
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run of ties
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rank_metrics(
    scores: np.ndarray,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    k: int = 10,
) -> dict[str, float]:
    """Mean recall@k, NDCG@k and AUC over users with test items; `scores` is (n_users,
    n_items), train and test are CSR (indptr, items) over the same users and items; a user's
    training items are not candidates."""
    n_users, n_items = scores.shape
    recalls, ndcgs, aucs = [], [], []
    for u in range(n_users):
        rel = test[1][test[0][u] : test[0][u + 1]]
        if len(rel) == 0:
            continue
        seen = train[1][train[0][u] : train[0][u + 1]]
        ranked = ranking(scores[u], seen)
        recalls.append(recall_at_k(ranked, rel, k))
        ndcgs.append(ndcg_at_k(ranked, rel, k))
        aucs.append(auc(scores[u][ranked], np.isin(ranked, rel)))
    return {
        f"recall@{k}": float(np.mean(recalls)),
        f"ndcg@{k}": float(np.mean(ndcgs)),
        "auc": float(np.nanmean(aucs)),
        "users": len(recalls),
    }
