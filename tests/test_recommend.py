"""recommend.top_k equals brute-force scoring of every (context, item) pair."""

import numpy as np
import pytest

from streamfm.recommend import top_k


def brute_top_k(cb, C, ib, Q, k, ptr=None, ex=None):
    scores = cb[:, None] + ib[None, :] + C @ Q.T
    n_ctx, n_items = scores.shape
    items_out = np.full((n_ctx, k), -1)
    scores_out = np.full((n_ctx, k), -np.inf)
    for r in range(n_ctx):
        banned = set() if ptr is None else {int(i) for i in ex[ptr[r] : ptr[r + 1]] if i >= 0}
        cand = [i for i in range(n_items) if i not in banned]
        cand.sort(key=lambda i: (-scores[r, i], i))
        cand = cand[:k]
        items_out[r, : len(cand)] = cand
        scores_out[r, : len(cand)] = scores[r, cand]
    return items_out, scores_out


def data(n_ctx, n_items, k, seed=0, integers=False):
    rng = np.random.default_rng(seed)
    if integers:  # exact in any summation order, and many ties
        draw = lambda *s: rng.integers(-2, 3, s).astype(float)  # noqa: E731
    else:
        draw = lambda *s: rng.standard_normal(s)  # noqa: E731
    return draw(n_ctx), draw(n_ctx, k), draw(n_items), draw(n_items, k)


def exclusions(n_ctx, n_items, seed=1):
    rng = np.random.default_rng(seed)
    lists = [
        rng.choice(n_items, rng.integers(0, n_items // 2), replace=False) for _ in range(n_ctx)
    ]
    lists[0] = np.append(lists[0], [-1, lists[0][0] if len(lists[0]) else 0])  # unknown, repeat
    ptr = np.zeros(n_ctx + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    return ptr, np.concatenate(lists).astype(np.int64)


@pytest.mark.parametrize(
    "n_ctx,n_items,k,blocks",
    [(7, 50, 5, (128, 2048)), (37, 301, 10, (8, 32)), (5, 9, 20, (2, 4)), (1, 1, 1, (1, 1))],
)
@pytest.mark.parametrize("integers", [False, True])
def test_equals_brute_force(n_ctx, n_items, k, blocks, integers):
    cb, C, ib, Q = data(n_ctx, n_items, 6, integers=integers)
    want_i, want_s = brute_top_k(cb, C, ib, Q, k)
    got_i, got_s = top_k(cb, C, ib, Q, k, context_block=blocks[0], item_block=blocks[1])
    assert np.array_equal(got_i, want_i)
    assert np.allclose(got_s, want_s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blocks", [(128, 2048), (3, 7)])
def test_exclusions_are_never_returned(blocks):
    n_ctx, n_items = 23, 60
    cb, C, ib, Q = data(n_ctx, n_items, 4, seed=3, integers=True)
    ptr, ex = exclusions(n_ctx, n_items)
    want = brute_top_k(cb, C, ib, Q, 40, ptr, ex)
    got = top_k(cb, C, ib, Q, 40, ptr, ex, context_block=blocks[0], item_block=blocks[1])
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    for r in range(n_ctx):
        assert not set(got[0][r]) & set(ex[ptr[r] : ptr[r + 1]].tolist()) - {-1}
    assert (got[0] == -1).any()  # some contexts have fewer than 40 candidates: padded


def test_block_sizes_do_not_change_the_result():
    cb, C, ib, Q = data(50, 1000, 16, seed=5)
    a = top_k(cb, C, ib, Q, 30)
    for blocks in [(1, 1000), (7, 13), (50, 1)]:
        b = top_k(cb, C, ib, Q, 30, context_block=blocks[0], item_block=blocks[1])
        assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], rtol=1e-12)


def test_float32_inputs_and_no_factors():
    cb, C, ib, Q = data(4, 20, 3, seed=2)
    a = top_k(cb.astype(np.float32), C.astype(np.float32), ib, Q.astype(np.float32), 3)
    assert a[0].dtype == np.int64 and a[1].dtype == np.float64
    items, scores = top_k(np.zeros(2), np.zeros((2, 0)), ib, np.zeros((20, 0)), 3)
    assert np.array_equal(items[0], np.argsort(-ib, kind="stable")[:3])


def test_bad_input_is_named():
    cb, C, ib, Q = data(3, 10, 2)
    with pytest.raises(ValueError, match="k=2, item factors k=3"):
        top_k(cb, C, ib, np.zeros((10, 3)), 2)
    with pytest.raises(ValueError, match="context_factors: expected shape"):
        top_k(cb, C[:2], ib, Q, 2)
    with pytest.raises(ValueError, match="k must be"):
        top_k(cb, C, ib, Q, 0)
    bad = Q.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="item_factors holds a non-finite"):
        top_k(cb, C, ib, bad, 2)
    with pytest.raises(ValueError, match="context row 1 excludes item 10, beyond the 10 items"):
        top_k(cb, C, ib, Q, 2, np.array([0, 1, 2, 2]), np.array([3, 10]))
    with pytest.raises(ValueError, match="4 offsets"):
        top_k(cb, C, ib, Q, 2, np.array([0, 1]), np.array([3]))
    with pytest.raises(ValueError, match="both"):
        top_k(cb, C, ib, Q, 2, np.array([0, 1, 1, 1]))
