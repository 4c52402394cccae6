"""All-items scoring (learners.item_scores, with recommend.top_k) equals brute-force scoring of every (context, item)
row; the item catalogue's state round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from streamfm.learners.item_scores import context_vectors, item_vectors, rank_counts
from streamfm.learners.items import ItemCatalogue
from streamfm.learners.params import FMParams
from streamfm.learners.scoring import predict_csr
from streamfm.recommend import top_k


def _setup(seed=0, n_ctx_feats=30, n_items=40, k=5):
    rng = np.random.default_rng(seed)
    p = FMParams(k, seed=seed, init_std=0.3)
    n_genres = 6
    n = n_ctx_feats + n_items + n_genres
    p.ensure_features(n)
    p.w[:n] = rng.normal(0, 0.5, n).astype(np.float32)
    p.w0[0] = 0.3
    p.group[:n_ctx_feats] = 0
    p.group[n_ctx_feats : n_ctx_feats + n_items] = 1
    p.group[n_ctx_feats + n_items : n] = 2
    # catalogue: item i = its id feature + 1-2 genres with weights
    indptr, indices, values = [0], [], []
    for i in range(n_items):
        g = rng.choice(n_genres, size=rng.integers(1, 3), replace=False)
        indices += [n_ctx_feats + i, *(n_ctx_feats + n_items + g)]
        values += [1.0, *rng.uniform(0.2, 1.0, len(g))]
        indptr.append(len(indices))
    cat = ItemCatalogue()
    cat.load_state_dict(
        {
            "n_items": n_items,
            "item_fid": np.arange(n_ctx_feats, n_ctx_feats + n_items, dtype=np.int32),
            "counts": rng.integers(1, 10, n_items),
            "indptr": np.array(indptr, dtype=np.int64),
            "indices": np.array(indices, dtype=np.int32),
            "values": np.array(values, dtype=np.float32),
        }
    )
    # contexts: 2-3 context features each
    cptr, cidx, cval = [0], [], []
    for _ in range(7):
        f = rng.choice(n_ctx_feats, size=rng.integers(1, 4), replace=False)
        cidx += list(f)
        cval += list(rng.uniform(0.5, 1.5, len(f)))
        cptr.append(len(cidx))
    ctx = (np.array(cptr, np.int64), np.array(cidx, np.int32), np.array(cval, np.float32))
    return p, cat, ctx


def _brute(p, cat, ctx):
    cptr, cidx, cval = ctx
    out = np.empty((len(cptr) - 1, cat.n_items))
    for r in range(len(cptr) - 1):
        rows_ptr, rows_idx, rows_val = [0], [], []
        for i in range(cat.n_items):
            a, b = cat.indptr[i], cat.indptr[i + 1]
            rows_idx += [*cidx[cptr[r] : cptr[r + 1]], *cat.indices[a:b]]
            rows_val += [*cval[cptr[r] : cptr[r + 1]], *cat.values[a:b]]
            rows_ptr.append(len(rows_idx))
        s = np.empty(cat.n_items)
        predict_csr(
            np.array(rows_ptr, np.int64), np.array(rows_idx, np.int32),
            np.array(rows_val, np.float32), p.w0, p.w, p.V, p.n_features, s,
        )  # fmt: skip
        out[r] = s
    return out


def test_scores_equal_brute_force_predict():
    p, cat, ctx = _setup()
    brute = _brute(p, cat, ctx)
    ib, IQ = item_vectors(p, cat)
    cb, cq = context_vectors(p, *ctx)
    assert np.allclose(cb[:, None] + ib[None, :] + cq @ IQ.T, brute, rtol=1e-5, atol=1e-5)
    items, scores = top_k(cb, cq, ib, IQ, 5)
    for r in range(len(cb)):
        want = np.argsort(-brute[r], kind="stable")[:5]
        assert list(items[r]) == list(want)
        assert np.allclose(scores[r], brute[r, want], atol=1e-5)


def test_context_rows_with_item_entries_skip_item_groups():
    p, cat, (cptr, cidx, cval) = _setup(2)
    # the same contexts with an item id appended: skipping group 1 gives the same vectors
    ptr2 = cptr + np.arange(len(cptr))
    idx2, val2 = [], []
    for r in range(len(cptr) - 1):
        idx2 += [*cidx[cptr[r] : cptr[r + 1]], 30 + r]
        val2 += [*cval[cptr[r] : cptr[r + 1]], 1.0]
    a = context_vectors(p, cptr, cidx, cval)
    b = context_vectors(p, ptr2, np.array(idx2, np.int32), np.array(val2, np.float32), [1, 2])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_rank_counts_match_brute_force():
    p, cat, ctx = _setup(3)
    brute = _brute(p, cat, ctx)
    ib, IQ = item_vectors(p, cat)
    cb, cq = context_vectors(p, *ctx)
    targets = np.arange(len(cb)) * 3
    ex_ptr = np.array([0, 2, 2, 2, 2, 2, 2, 3], dtype=np.int64)
    ex = np.array([1, 0, targets[6]])  # context 0 excludes items 1 and 0 (its target)
    above, ties, n = rank_counts(cb, cq, ib, IQ, targets, ex_ptr, ex)
    for r, t in enumerate(targets):
        banned = {int(i) for i in ex[ex_ptr[r] : ex_ptr[r + 1]]} - {int(t)}
        others = [i for i in range(cat.n_items) if i != t and i not in banned]
        assert n[r] == len(others)
        assert above[r] == sum(brute[r, i] > brute[r, t] + 1e-9 for i in others)
    above, _, n = rank_counts(cb, cq, ib, IQ, np.full(len(cb), -1))
    assert (n == 0).all()


def test_catalogue_state_round_trip_and_checks():
    _, cat, _ = _setup()
    other = ItemCatalogue()
    other.load_state_dict(
        {k: (v.copy() if hasattr(v, "copy") else v) for k, v in cat.state_dict().items()}
    )
    for name in ("item_fid", "counts", "indptr", "indices", "values"):
        assert np.array_equal(getattr(cat, name), getattr(other, name))
    assert list(other.item_index(np.array([30, 31, 0, 10_000]))) == [0, 1, -1, -1]
    bad = dict(cat.state_dict(), indptr=cat.indptr[::-1].copy())
    with pytest.raises(ValueError, match="catalogue"):
        ItemCatalogue().load_state_dict(bad)
