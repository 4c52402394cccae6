"""Streaming metrics against slow, obviously correct references, on synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from streamfm.metrics import (
    AUC,
    CLASSIFICATION_METRICS,
    METRICS,
    REGRESSION_METRICS,
    SAMPLED_RANKING_METRICS,
    Metric,
    WindowedMetric,
    make_metric,
)

# ---------------------------------------------------------------- slow references (plain loops)


def ref_rmse(t: list[float], p: list[float]) -> float:
    total = 0.0
    for a, b in zip(t, p, strict=True):
        total += (a - b) ** 2
    return math.sqrt(total / len(t))


def ref_mae(t: list[float], p: list[float]) -> float:
    total = 0.0
    for a, b in zip(t, p, strict=True):
        total += abs(a - b)
    return total / len(t)


def ref_logloss(t: list[float], p: list[float]) -> float:
    total = 0.0
    for a, b in zip(t, p, strict=True):
        b = min(max(b, 1e-15), 1 - 1e-15)
        total -= math.log(b) if a == 1 else math.log(1 - b)
    return total / len(t)


def ref_accuracy(t: list[float], p: list[float]) -> float:
    hits = 0
    for a, b in zip(t, p, strict=True):
        hits += int((1 if b >= 0.5 else 0) == a)
    return hits / len(t)


def ref_auc(t: list[float], p: list[float]) -> float:
    """Pairwise O(n^2): fraction of (positive, negative) pairs ranked right, ties count 1/2."""
    pos = [s for s, y in zip(p, t, strict=True) if y == 1]
    neg = [s for s, y in zip(p, t, strict=True) if y == 0]
    if not pos or not neg:
        return math.nan
    score = 0.0
    for a in pos:
        for b in neg:
            score += 1.0 if a > b else 0.5 if a == b else 0.0
    return score / (len(pos) * len(neg))


REFERENCES = {
    "rmse": ref_rmse,
    "mae": ref_mae,
    "logloss": ref_logloss,
    "accuracy": ref_accuracy,
    "auc": ref_auc,
}

ALL = REGRESSION_METRICS + CLASSIFICATION_METRICS


def synthetic(name: str, n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions that suit the metric; ``ties`` rounds scores to force equal ones."""
    rng = np.random.default_rng(seed)
    if name in REGRESSION_METRICS:
        t = rng.normal(3.0, 1.0, n)
        return t, t + rng.normal(0.0, 0.7, n)
    p = rng.random(n)
    if ties:
        p = np.round(p, 1)
    t = (rng.random(n) < p).astype(np.float64)  # informative but noisy scores
    return t, p


def random_chunks(n: int, rng: np.random.Generator) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, 7), replace=False))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


# ---------------------------------------------------------------- values against references


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ties", [False, True])
def test_matches_reference(name: str, ties: bool) -> None:
    t, p = synthetic(name, 300, seed=1, ties=ties)
    m = make_metric(name)
    m.update(t, p)
    assert m.count == 300
    assert m.value() == pytest.approx(REFERENCES[name](t.tolist(), p.tolist()), rel=1e-12)


def test_auc_ties_and_perfect_orders() -> None:
    m = make_metric("auc")
    m.update(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]))
    assert m.value() == 0.5
    m.reset()
    m.update(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert m.value() == 1.0
    m.reset()
    m.update(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert m.value() == 0.0


def test_logloss_clips_and_accuracy_threshold() -> None:
    m = make_metric("logloss")
    m.update(np.array([1.0, 0.0]), np.array([0.0, 1.0]))  # confidently wrong: finite
    assert m.value() == pytest.approx(ref_logloss([1.0, 0.0], [0.0, 1.0]), rel=1e-12)
    assert m.value() == pytest.approx(-math.log(1e-15), rel=1e-4)
    a = make_metric("accuracy")
    a.update(np.array([1, 0, 0]), np.array([0.5, 0.4999, 0.5]))
    assert a.value() == pytest.approx(2 / 3)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("exact", [True, False])
def test_random_chunkings_equal_one_update(name: str, exact: bool) -> None:
    t, p = synthetic(name, 500, seed=2, ties=True)
    whole = make_metric(name, exact=exact)
    whole.update(t, p)
    rng = np.random.default_rng(3)
    for _ in range(5):
        m = make_metric(name, exact=exact)
        for s in random_chunks(t.size, rng):
            m.update(t[s], p[s])
        m.update(t[:0], p[:0])  # an empty chunk changes nothing
        assert m.count == whole.count
        assert m.value() == pytest.approx(whole.value(), rel=1e-12)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("exact", [True, False])
def test_empty_is_nan(name: str, exact: bool) -> None:
    m = make_metric(name, exact=exact)
    assert math.isnan(m.value()) and m.count == 0
    m.update(np.empty(0), np.empty(0))
    assert math.isnan(m.value()) and m.count == 0
    assert math.isnan(make_metric(name, window=5).value())


@pytest.mark.parametrize("exact", [True, False])
def test_auc_single_class_is_nan(exact: bool) -> None:
    m = make_metric("auc", exact=exact)
    m.update(np.ones(10), np.linspace(0, 1, 10))
    assert math.isnan(m.value())
    m.update(np.zeros(1), np.array([0.5]))
    assert not math.isnan(m.value())


@pytest.mark.parametrize("name", ALL)
def test_mismatched_lengths_raise(name: str) -> None:
    for m in (make_metric(name), make_metric(name, window=3)):
        with pytest.raises(ValueError, match="length"):
            m.update(np.zeros(3), np.zeros(4))
        assert m.count == 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        make_metric("logloss").update(np.array([0.0, 2.0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        make_metric("rmse").update(np.array([0.0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        make_metric("mae").update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown metric"):
        make_metric("r2")
    with pytest.raises(ValueError, match="window"):
        make_metric("rmse", window=0)


def test_registry_and_directions() -> None:
    assert set(METRICS) == (
        set(REGRESSION_METRICS) | set(CLASSIFICATION_METRICS) | set(SAMPLED_RANKING_METRICS)
    )
    for name in METRICS:
        m = make_metric(name)
        assert isinstance(m, Metric) and m.name == name
        assert m.higher_is_better == (name in ("auc", "accuracy", *SAMPLED_RANKING_METRICS))
        w = make_metric(name, window=4)
        assert isinstance(w, WindowedMetric)
        assert (w.name, w.higher_is_better) == (m.name, m.higher_is_better)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("window", [None, 7, 1000])
def test_state_dict_round_trip(name: str, exact: bool, window: int | None) -> None:
    t, p = synthetic(name, 120, seed=4)
    m = make_metric(name, exact=exact, window=window)
    m.update(t[:80], p[:80])
    state = json.loads(json.dumps(m.state_dict()))  # must survive JSON exactly
    restored = make_metric(name, exact=exact, window=window)
    restored.load_state_dict(state)
    assert restored.count == m.count
    assert restored.value() == pytest.approx(m.value(), rel=1e-15, nan_ok=True)
    # Both continue identically after the restore.
    m.update(t[80:], p[80:])
    restored.update(t[80:], p[80:])
    assert restored.value() == pytest.approx(m.value(), rel=1e-12)
    assert restored.state_dict() == m.state_dict()


def test_state_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        make_metric("mae").load_state_dict(make_metric("rmse").state_dict())
    with pytest.raises(ValueError):
        make_metric("auc", exact=False).load_state_dict(make_metric("auc").state_dict())
    with pytest.raises(ValueError):
        make_metric("rmse", window=5).load_state_dict(make_metric("rmse", window=6).state_dict())


def test_reset_forgets() -> None:
    for exact in (True, False):
        m = make_metric("auc", exact=exact)
        m.update(np.array([0, 1]), np.array([0.2, 0.8]))
        m.reset()
        assert m.count == 0 and math.isnan(m.value())


# ---------------------------------------------------------------- sliding windows


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("window", [1, 13, 64, 500])
def test_windowed_equals_metric_over_tail(name: str, window: int) -> None:
    t, p = synthetic(name, 400, seed=5, ties=True)
    w = make_metric(name, window=window)
    rng = np.random.default_rng(6)
    seen = 0
    for s in random_chunks(t.size, rng):  # some chunks are longer than the window
        w.update(t[s], p[s])
        seen = s.stop
        tail = slice(max(0, seen - window), seen)
        ref = make_metric(name)
        ref.update(t[tail], p[tail])
        assert w.count == min(seen, window)
        assert w.value() == pytest.approx(ref.value(), rel=1e-12, nan_ok=True)
    assert w.seen == t.size


def test_windowed_streaming_auc_uses_histograms() -> None:
    t, p = synthetic("auc", 3000, seed=7)
    w = make_metric("auc", exact=False, window=1000)
    w.update(t, p)
    ref = make_metric("auc", exact=False)
    ref.update(t[-1000:], p[-1000:])
    assert w.value() == ref.value()


# ---------------------------------------------------------------- streaming AUC


@pytest.mark.parametrize("seed", range(4))
def test_streaming_auc_close_to_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 50_000
    y = (rng.random(n) < 0.3).astype(np.float64)
    logit = rng.normal(0.0, 1.0, n) + 1.2 * y  # overlapping classes: AUC well inside (0.5, 1)
    p = 1.0 / (1.0 + np.exp(-logit))
    exact, approx = make_metric("auc"), make_metric("auc", exact=False)
    for s in random_chunks(n, rng):
        exact.update(y[s], p[s])
        approx.update(y[s], p[s])
    assert 0.6 < exact.value() < 0.9
    assert abs(approx.value() - exact.value()) < 1e-3


def test_streaming_auc_memory_is_fixed_and_out_of_range_scores_clip() -> None:
    m = AUC(exact=False, bins=16)
    m.update(np.array([0, 1, 0, 1]), np.array([-3.0, 7.0, 0.01, 0.99]))
    assert m.value() == 1.0
    assert m.count == 4
    # A large stream leaves a state no bigger than the number of bins.
    rng = np.random.default_rng(8)
    m.update((rng.random(100_000) < 0.5).astype(float), rng.random(100_000))
    assert len(m.state_dict()["pos_bins"]) <= 16


def test_streaming_auc_one_case_at_a_time_equals_one_update() -> None:
    t, p = synthetic("auc", 300, seed=9)
    one = make_metric("auc", exact=False)  # 300 * 8 < 2^16 bins: the small-chunk path
    for i in range(t.size):
        one.update(t[i : i + 1], p[i : i + 1])
    whole = AUC(exact=False, bins=1 << 16)
    whole.update(np.tile(t, 300), np.tile(p, 300))  # large enough for the bincount path
    assert one.state_dict()["pos_bins"] == whole.state_dict()["pos_bins"]
    assert one.value() == whole.value()
