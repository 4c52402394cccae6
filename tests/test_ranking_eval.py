"""The ranking benchmark's own metrics and split (benchmarks/_ranking_eval.py) on tiny examples
computed by hand."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _ranking_eval import (  # noqa: E402
    auc,
    csr_of,
    leave_last_fraction,
    ndcg_at_k,
    rank_metrics,
    ranking,
    recall_at_k,
)

SCORES = np.array([0.9, 0.1, 0.5, 0.7, 0.3])  # items 0..4; item 0 is a training item


def test_ranking_drops_excluded_items_and_breaks_ties_by_index():
    assert ranking(SCORES, np.array([0])).tolist() == [3, 2, 4, 1]
    assert ranking(np.array([1.0, 2.0, 2.0, 1.0]), np.array([], int)).tolist() == [1, 2, 0, 3]


def test_recall_and_ndcg_by_hand():
    ranked, rel = np.array([3, 2, 4, 1]), np.array([2, 4])
    assert recall_at_k(ranked, rel, 1) == 0.0
    assert recall_at_k(ranked, rel, 2) == 0.5
    assert recall_at_k(ranked, rel, 3) == 1.0
    # top 2 = [3, 2]: DCG = 1/log2(3); ideal (2 relevant) = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, rel, 2) == pytest.approx(0.63093 / 1.63093, abs=1e-5)
    # top 3 = [3, 2, 4]: DCG = 1/log2(3) + 1/2
    assert ndcg_at_k(ranked, rel, 3) == pytest.approx(1.13093 / 1.63093, abs=1e-5)
    assert ndcg_at_k(np.array([2, 4, 3]), rel, 10) == 1.0
    assert ndcg_at_k(np.array([7]), np.array([7, 8, 9]), 1) == 1.0  # ideal is cut at k
    with pytest.raises(ValueError):
        recall_at_k(ranked, np.array([], int), 2)


def test_auc_by_hand():
    # candidates 3, 2, 4, 1 with scores .7 .5 .3 .1; positives 2 and 4: 2 of 4 pairs won
    assert auc(np.array([0.7, 0.5, 0.3, 0.1]), np.array([False, True, True, False])) == 0.5
    assert auc(np.array([1.0, 1.0, 0.0]), np.array([True, False, False])) == 0.75  # a tie: ½
    assert auc(np.array([3.0, 2.0, 1.0]), np.array([True, True, False])) == 1.0
    assert np.isnan(auc(np.array([1.0]), np.array([True])))


def test_rank_metrics_average_over_users_with_test_items():
    scores = np.array([SCORES, SCORES[::-1], SCORES])
    train = csr_of(np.array([0, 1]), np.array([0, 1]), 3)
    test = csr_of(np.array([0, 0, 2]), np.array([2, 4, 3]), 3)  # user 1 has no test item
    got = rank_metrics(scores, train, test, k=2)
    # user 0: recall .5, ndcg .38685, auc .5; user 2: ranked [0, 3, ...]: recall 1,
    # ndcg 1/log2(3) = .63093, auc: item 3 beats 1, 2, 4 and loses to 0 -> 3/4
    assert got["users"] == 2
    assert got["recall@2"] == pytest.approx(0.75)
    assert got["ndcg@2"] == pytest.approx((0.63093 / 1.63093 + 0.63093) / 2, abs=1e-5)
    assert got["auc"] == pytest.approx((0.5 + 0.75) / 2)


def test_leave_last_fraction_holds_out_each_users_latest_events():
    user = np.array([1, 1, 1, 1, 1, 2, 2, 3, 1, 1])
    time = np.array([5, 1, 9, 3, 7, 2, 1, 4, 9, 0])
    item = np.array([0, 1, 2, 3, 4, 5, 6, 7, 1, 9])
    held = leave_last_fraction(user, time=time, item=item, fraction=0.2)
    # user 1: 7 events -> round(1.4) = 1 held out: the latest (time 9, lower item first) is
    # item 2 at time 9 vs item 1 at time 9 -> item 2 (last by (time, item)); user 2: round(.4)=0
    assert np.flatnonzero(held).tolist() == [2]
    held = leave_last_fraction(user, time=time, item=item, fraction=0.5)
    # user 1: round(3.5) = 4: times 9, 9, 7, 5; user 2: 1 (time 2); user 3: round(.5) = 1
    assert sorted(np.flatnonzero(held).tolist()) == [0, 2, 4, 5, 7, 8]
