"""Streaming evaluation metrics, updated one chunk at a time with numpy arrays.

Every metric accumulates in float64 (or exact integer counts) so that the value does not depend on
how the stream was cut into chunks, and saves its state as plain JSON-able lists and numbers for
checkpoints.

- ``rmse``, ``mae``: regression; ``y_pred`` is the predicted value.
- ``logloss``, ``accuracy``, ``auc``: binary classification; ``y_true`` in {0, 1} and ``y_pred`` the
  probability of class 1.
- ``auc`` with ``exact=True`` keeps every score (memory grows with the number of cases: meant for a
  holdout set); with ``exact=False`` it keeps two fixed histograms of scores (bounded memory: meant
  for progressive validation over an unbounded stream).
- ``window=N`` evaluates any metric over the last N cases only (a ring buffer of N pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "AUC",
    "CLASSIFICATION_METRICS",
    "MAE",
    "METRICS",
    "RANKING_METRICS",
    "REGRESSION_METRICS",
    "SAMPLED_RANKING_METRICS",
    "RankingMetrics",
    "RMSE",
    "Accuracy",
    "LogLoss",
    "Metric",
    "WindowedMetric",
    "MetricSet",
    "make_metric",
]

REGRESSION_METRICS: tuple[str, ...] = ("rmse", "mae")
CLASSIFICATION_METRICS: tuple[str, ...] = ("logloss", "auc", "accuracy")
#: task ranking, on the stream: the positive ranked among its sampled negatives before learning
SAMPLED_RANKING_METRICS: tuple[str, ...] = ("sampled_auc", "sampled_hit")
#: task ranking, on a holdout: the held-out item ranked among all catalogue items (@ranking.k)
RANKING_METRICS: tuple[str, ...] = ("ndcg", "recall", "precision", "mrr", "auc")

LOGLOSS_EPS = 1e-15
ACCURACY_THRESHOLD = 0.5
DEFAULT_AUC_BINS = 1 << 16


def _as_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both arguments as 1-D float64 arrays of equal length, or ValueError."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
    # A NaN would silently poison the sums (or the ranking) from then on.
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite (found NaN or inf)")
    return t, p


def _check_binary(name: str, y_true: np.ndarray) -> None:
    bad = (y_true != 0.0) & (y_true != 1.0)
    if bad.any():
        raise ValueError(f"{name}: y_true must hold labels 0 or 1, got {y_true[bad][0]!r}")


def _check_state(metric: Metric, state: dict, **expected: Any) -> None:
    for key, want in {"name": metric.name, **expected}.items():
        got = state.get(key)
        if got != want:
            raise ValueError(f"state of {key}={got!r} cannot be loaded into {key}={want!r}")


class Metric:
    """A streaming metric: ``update`` with chunks of cases, read ``value`` at any time."""

    name: str = ""
    higher_is_better: bool = False
    #: True when labels must be 0/1 and predictions are probabilities of class 1.
    classification: bool = False

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Add a chunk of cases: ``y_true`` and ``y_pred`` are 1-D arrays of equal length."""
        t, p = _as_pair(y_true, y_pred)
        if self.classification:
            _check_binary(self.name, t)
        if t.size:
            self._update(t, p)

    def value(self) -> float:
        """The metric over all cases seen so far; nan before any case."""
        raise NotImplementedError

    @property
    def count(self) -> int:
        """Number of cases the value is computed over."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every case."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The whole state as JSON-able lists, floats and ints."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from ``state_dict`` of a metric of the same kind."""
        raise NotImplementedError

    def merge_state_dict(self, state: dict) -> None:
        """Add the cases of another metric's state to this one (not for windowed metrics)."""
        raise NotImplementedError(f"{type(self).__name__} states cannot be merged")

    def _update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value():.6g}, count={self.count})"


class _MeanMetric(Metric):
    """A metric that is a function of the mean of a per-case loss: float64 sum and a count."""

    def __init__(self) -> None:
        self.reset()

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _finish(mean: float) -> float:
        return mean

    def _update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self._sum += float(np.sum(self._per_case(y_true, y_pred)))
        self._n += int(y_true.size)

    def value(self) -> float:
        return self._finish(self._sum / self._n) if self._n else math.nan

    @property
    def count(self) -> int:
        return self._n

    def reset(self) -> None:
        self._sum = 0.0
        self._n = 0

    def state_dict(self) -> dict:
        return {"name": self.name, "sum": self._sum, "count": self._n}

    def load_state_dict(self, state: dict) -> None:
        _check_state(self, state)
        self._sum = float(state["sum"])
        self._n = int(state["count"])

    def merge_state_dict(self, state: dict) -> None:
        """Add the cases of another metric's state (e.g. another worker's) to this one."""
        _check_state(self, state)
        self._sum += float(state["sum"])
        self._n += int(state["count"])


class RMSE(_MeanMetric):
    """Root mean squared error, in the units of the target."""

    name = "rmse"

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return np.square(y_pred - y_true)

    @staticmethod
    def _finish(mean: float) -> float:
        return math.sqrt(mean)


class MAE(_MeanMetric):
    """Mean absolute error, in the units of the target."""

    name = "mae"

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return np.abs(y_pred - y_true)


class LogLoss(_MeanMetric):
    """Mean negative log-likelihood (nats) of 0/1 labels; p clipped to [1e-15, 1 - 1e-15]."""

    name = "logloss"
    classification = True

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        # Clipping keeps a confidently wrong prediction finite (about 34.5 nats) instead of inf.
        p = np.clip(y_pred, LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
        return -(y_true * np.log(p) + (1.0 - y_true) * np.log1p(-p))


class Accuracy(_MeanMetric):
    """Fraction of cases whose predicted class (1 when probability >= 0.5) equals the label."""

    name = "accuracy"
    higher_is_better = True
    classification = True

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return (y_pred >= ACCURACY_THRESHOLD) == (y_true == 1.0)


def _auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from per-score counts of positives and negatives, in ascending score order.

    Equal scores (one entry) are ties and count 1/2: AUC = P(s+ > s-) + P(s+ = s-) / 2.
    """
    n_pos = float(pos.sum())
    n_neg = float(neg.sum())
    if n_pos == 0.0 or n_neg == 0.0:
        return math.nan
    neg = neg.astype(np.float64)
    neg_below = np.cumsum(neg) - neg
    return float(np.dot(pos.astype(np.float64), neg_below + 0.5 * neg) / (n_pos * n_neg))


class AUC(Metric):
    """Area under the ROC curve of 0/1 labels ranked by score; nan unless both classes are present.

    ``exact=True`` keeps all scores and computes the exact AUC with ties counted 1/2, in
    O(n log n) at each ``value()``. ``exact=False`` counts scores per class in ``bins`` equal-width
    bins over [0, 1] (scores outside are put in the end bins) and treats cases in the same bin as
    ties: memory is fixed, and the error is at most half the fraction of (positive, negative) pairs
    sharing a bin (about 1e-5 for 2^16 bins and scores spread over [0, 1]).
    """

    name = "auc"
    higher_is_better = True
    classification = True

    def __init__(self, exact: bool = True, bins: int = DEFAULT_AUC_BINS) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.exact = bool(exact)
        self.bins = int(bins)
        self.reset()

    def reset(self) -> None:
        if self.exact:
            # Chunks are concatenated lazily, at value() time, to keep update() O(chunk).
            self._scores: list[np.ndarray] = []
            self._labels: list[np.ndarray] = []
        else:
            self._hist = np.zeros((2, self.bins), dtype=np.int64)  # row 0: negatives, 1: positives
        self._n = 0

    def _update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        self._n += int(y_true.size)
        if self.exact:
            self._scores.append(y_pred.copy())
            self._labels.append(y_true.astype(np.int8))
            return
        b = np.clip(np.floor(y_pred * self.bins), 0, self.bins - 1).astype(np.int64)
        label = y_true.astype(np.int64)
        if y_true.size * 8 < self.bins:
            # Small chunk (e.g. one case at a time): touch only its bins, not all 2 * bins.
            np.add.at(self._hist, (label, b), 1)
        else:
            # One bincount over (label, bin) pairs fills both histograms.
            flat = label * self.bins + b
            self._hist += np.bincount(flat, minlength=2 * self.bins).reshape(2, self.bins)

    def _consolidate(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._scores) > 1:
            self._scores = [np.concatenate(self._scores)]
            self._labels = [np.concatenate(self._labels)]
        if not self._scores:
            return np.empty(0, np.float64), np.empty(0, np.int8)
        return self._scores[0], self._labels[0]

    def value(self) -> float:
        if not self.exact:
            return _auc_from_counts(self._hist[1], self._hist[0])
        scores, labels = self._consolidate()
        if scores.size == 0:
            return math.nan
        # Group equal scores: one entry per distinct score, in ascending order.
        _, inverse = np.unique(scores, return_inverse=True)
        m = int(inverse.max()) + 1
        pos = np.bincount(inverse, weights=labels, minlength=m)
        neg = np.bincount(inverse, minlength=m) - pos
        return _auc_from_counts(pos, neg)

    @property
    def count(self) -> int:
        return self._n

    def state_dict(self) -> dict:
        if self.exact:
            scores, labels = self._consolidate()
            return {
                "name": self.name,
                "exact": True,
                "scores": scores.tolist(),
                "labels": labels.tolist(),
            }
        # Sparse: most of the 2^16 bins are usually empty.
        nz_neg = np.flatnonzero(self._hist[0])
        nz_pos = np.flatnonzero(self._hist[1])
        return {
            "name": self.name,
            "exact": False,
            "bins": self.bins,
            "neg_bins": nz_neg.tolist(),
            "neg_counts": self._hist[0, nz_neg].tolist(),
            "pos_bins": nz_pos.tolist(),
            "pos_counts": self._hist[1, nz_pos].tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        _check_state(self, state, exact=self.exact)
        if self.exact:
            scores = np.asarray(state["scores"], dtype=np.float64)
            labels = np.asarray(state["labels"], dtype=np.int8)
            if scores.shape != labels.shape:
                raise ValueError("state has different numbers of scores and labels")
            self._scores, self._labels = [scores], [labels]
            self._n = int(scores.size)
            return
        _check_state(self, state, bins=self.bins)
        hist = np.zeros((2, self.bins), dtype=np.int64)
        hist[0, np.asarray(state["neg_bins"], dtype=np.int64)] = state["neg_counts"]
        hist[1, np.asarray(state["pos_bins"], dtype=np.int64)] = state["pos_counts"]
        self._hist = hist
        self._n = int(hist.sum())

    def merge_state_dict(self, state: dict) -> None:
        """Add the cases of another metric's state (e.g. another worker's) to this one."""
        other = AUC(exact=self.exact, bins=self.bins)
        other.load_state_dict(state)
        if self.exact:
            self._scores += other._scores
            self._labels += other._labels
        else:
            self._hist += other._hist
        self._n += other._n


class WindowedMetric(Metric):
    """A metric over the last ``window`` cases only (sliding window, for continual learning).

    Keeps a ring buffer of the last ``window`` (y_true, y_pred) pairs (2 float64 arrays of that
    length); ``value()`` recomputes the inner metric over the buffer, in O(window). ``count`` is
    the number of cases in the window; ``seen`` the number of cases since the last reset.
    """

    def __init__(self, factory: Callable[[], Metric], window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._factory = factory
        inner = factory()
        self.name = inner.name
        self.higher_is_better = inner.higher_is_better
        self.classification = inner.classification
        self._exact = getattr(inner, "exact", True)
        self.window = int(window)
        self._true = np.zeros(self.window, dtype=np.float64)
        self._pred = np.zeros(self.window, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self._pos = 0  # next slot to write; the oldest case when the buffer is full
        self._seen = 0

    @property
    def seen(self) -> int:
        """Cases added since the last reset (including those that left the window)."""
        return self._seen

    @property
    def count(self) -> int:
        return min(self._seen, self.window)

    def _update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        m = y_true.size
        start = self._pos
        if m > self.window:  # only the tail of a long chunk remains, where it would have landed
            y_true, y_pred = y_true[-self.window :], y_pred[-self.window :]
            start += m - self.window
        slots = (start + np.arange(y_true.size)) % self.window
        self._true[slots] = y_true
        self._pred[slots] = y_pred
        self._pos = int((self._pos + m) % self.window)
        self._seen += m

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Cases in the window, oldest first."""
        if self._seen < self.window:
            return self._true[: self._seen], self._pred[: self._seen]
        order = np.roll(np.arange(self.window), -self._pos)
        return self._true[order], self._pred[order]

    def value(self) -> float:
        inner = self._factory()
        inner.update(*self._ordered())
        return inner.value()

    def state_dict(self) -> dict:
        t, p = self._ordered()
        return {
            "name": self.name,
            "window": self.window,
            "exact": self._exact,
            "seen": self._seen,
            "y_true": t.tolist(),
            "y_pred": p.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        _check_state(self, state, window=self.window, exact=self._exact)
        t = np.asarray(state["y_true"], dtype=np.float64)
        p = np.asarray(state["y_pred"], dtype=np.float64)
        seen = int(state["seen"])
        if t.shape != p.shape or t.size != min(seen, self.window):
            raise ValueError("state's window buffer does not match its count of cases seen")
        self.reset()
        self._update(t, p)
        self._seen = seen

    def __repr__(self) -> str:
        return (
            f"WindowedMetric({self.name}, window={self.window}, "
            f"value={self.value():.6g}, count={self.count})"
        )


class SampledRankMean(_MeanMetric):
    """Mean of per-positive values the ranking learner reports (y_pred), e.g. the fraction of its
    sampled negatives scored below the positive (``sampled_auc``) or whether all were
    (``sampled_hit``). Positives without negatives are not passed in."""

    higher_is_better = True

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return y_pred


class SampledAUC(SampledRankMean):
    name = "sampled_auc"


class SampledHit(SampledRankMean):
    """Fraction of positives scored strictly above all their sampled negatives (y_pred: the
    positive's sampled AUC, 1 exactly then)."""

    name = "sampled_hit"

    @staticmethod
    def _per_case(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return (y_pred == 1.0).astype(np.float64)


class RankingMetrics:
    """Holdout ranking metrics over all catalogue items, streaming and checkpointable.

    Each holdout event is one (context, held-out item) case with the item's 0-based rank r
    among the n candidate items (all catalogue items but the excluded ones; ties count half):
    recall@k = [r < k], precision@k = [r < k] / k, NDCG@k = [r < k] / log2(r + 2),
    MRR@k = [r < k] / (r + 1), each averaged over cases; AUC = 1 − r / n per case, averaged per
    user first (users given as integer keys; without them every case is its own user), then
    over users. Events whose item was never seen in training cannot be ranked: they are
    counted (``unranked``) and left out.
    """

    def __init__(self, k: int = 10) -> None:
        self.k = int(k)
        self.reset()

    def reset(self) -> None:
        self._sums = np.zeros(4, dtype=np.float64)  # recall, precision, ndcg, mrr
        self._n = 0
        self.unranked = 0
        self._user_auc: dict[int, list[float]] = {}

    def update(self, above, ties, n_cand, users=None) -> None:
        """Add cases: items scored above / equal to the held-out one, candidates (n_cand 0:
        the item cannot be ranked), and optionally each case's user key (int)."""
        above = np.asarray(above, dtype=np.float64)
        ties = np.asarray(ties, dtype=np.float64)
        n_cand = np.asarray(n_cand, dtype=np.int64)
        ok = n_cand > 0
        self.unranked += int((~ok).sum())
        r = above[ok] + 0.5 * ties[ok]
        hit = r < self.k
        self._sums += [
            hit.sum(),
            hit.sum() / self.k,
            (hit / np.log2(r + 2.0)).sum(),
            (hit / (r + 1.0)).sum(),
        ]
        self._n += int(ok.sum())
        auc = 1.0 - r / n_cand[ok]
        if users is None:
            keys = np.arange(self._n - len(auc), self._n) + (1 << 62)
        else:
            keys = np.asarray(users, dtype=np.int64)[ok]
        for u, a in zip(keys.tolist(), auc.tolist(), strict=True):
            acc = self._user_auc.setdefault(u, [0.0, 0])
            acc[0] += a
            acc[1] += 1

    def values(self) -> dict[str, float]:
        n = self._n
        if not n:
            return {name: math.nan for name in RANKING_METRICS} | {"rows": 0}
        recall, precision, ndcg, mrr = (self._sums / n).tolist()
        auc = float(np.mean([s / c for s, c in self._user_auc.values()]))
        return {
            "ndcg": ndcg,
            "recall": recall,
            "precision": precision,
            "mrr": mrr,
            "auc": auc,
            "rows": n,
            "unranked": self.unranked,
        }

    def state_dict(self) -> dict:
        users = np.array(list(self._user_auc), dtype=np.int64)
        acc = np.array(list(self._user_auc.values()), dtype=np.float64).reshape(-1, 2)
        return {
            "k": self.k,
            "sums": self._sums.tolist(),
            "count": self._n,
            "unranked": self.unranked,
            "users": users,
            "user_auc": acc,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["k"]) != self.k:
            raise ValueError(f"ranking metrics: saved for k={state['k']}, not k={self.k}")
        self._sums = np.asarray(state["sums"], dtype=np.float64).reshape(4)
        self._n = int(state["count"])
        self.unranked = int(state["unranked"])
        acc = np.asarray(state["user_auc"], dtype=np.float64).reshape(-1, 2)
        self._user_auc = {
            int(u): [float(a[0]), int(a[1])]
            for u, a in zip(np.asarray(state["users"]).tolist(), acc, strict=True)
        }


METRICS: dict[str, type[Metric]] = {
    "sampled_auc": SampledAUC,
    "sampled_hit": SampledHit,
    "rmse": RMSE,
    "mae": MAE,
    "logloss": LogLoss,
    "accuracy": Accuracy,
    "auc": AUC,
}


def make_metric(name: str, *, exact: bool = True, window: int | None = None) -> Metric:
    """A fresh metric by name (one of ``METRICS``).

    ``exact`` only matters for ``auc`` (False: bounded-memory histogram estimate). ``window=N``
    wraps the metric so that it covers the last N cases only.
    """
    key = name.lower()
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    cls = METRICS[key]

    def factory() -> Metric:
        return AUC(exact=exact) if cls is AUC else cls()

    if window is None:
        return factory()
    return WindowedMetric(factory, window)


class MetricSet:
    """Several metrics updated together (one chunk of cases at a time), one state for all."""

    def __init__(self, names: tuple[str, ...] | list[str], *, exact: bool = False, window=None):
        self.metrics: dict[str, Metric] = {
            n: make_metric(n, exact=exact, window=window) for n in names
        }

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        for m in self.metrics.values():
            m.update(y_true, y_pred)

    def values(self) -> dict[str, float]:
        """Every metric's current value, by name."""
        return {n: float(m.value()) for n, m in self.metrics.items()}

    def reset(self) -> None:
        for m in self.metrics.values():
            m.reset()

    def state_dict(self) -> dict:
        return {n: m.state_dict() for n, m in self.metrics.items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the metrics `state` has (a metric added since starts empty)."""
        for n, m in self.metrics.items():
            if n in state:
                m.load_state_dict(state[n])

    def merge_state_dict(self, state: dict) -> None:
        """Add the cases of another set's state (same metrics, not windowed) to this one."""
        for n, m in self.metrics.items():
            m.merge_state_dict(state[n])

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def __bool__(self) -> bool:
        return bool(self.metrics)
