"""Synthetic data generators: determinism, shapes and dtypes, and the planted truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from streamfm.datasets import make_event_log, make_planted_fm, write_event_log

SMALL_LOG = {"n_users": 300, "n_items": 150, "n_events": 20_000, "seed": 3}


def naive_fm(X: sp.csr_matrix, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    """The FM by its definition: dense rows, explicit double sum over feature pairs, O(k * n^2)."""
    dense = X.toarray().astype(np.float64)
    n = dense.shape[1]
    out = np.empty(dense.shape[0])
    for r, x in enumerate(dense):
        f = w0
        for a in range(n):
            f += w[a] * x[a]
        for a in range(n):
            if x[a] == 0.0:
                continue  # the term is zero; skipping it only saves time
            for b in range(a + 1, n):
                f += float(V[a] @ V[b]) * x[a] * x[b]
        out[r] = f
    return out


# ---------------------------------------------------------------- make_planted_fm


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_planted_fm_is_deterministic(task: str) -> None:
    X1, y1, t1 = make_planted_fm(500, task=task, seed=7)
    X2, y2, t2 = make_planted_fm(500, task=task, seed=7)
    assert (X1 != X2).nnz == 0
    np.testing.assert_array_equal(y1, y2)
    for key in ("w", "V", "clean"):
        np.testing.assert_array_equal(t1[key], t2[key])
    X3, _, _ = make_planted_fm(500, task=task, seed=8)
    assert (X1 != X3).nnz > 0


def test_planted_fm_shapes_and_dtypes() -> None:
    X, y, truth = make_planted_fm(400, n_features=50, k=3, nnz_per_row=6)
    assert isinstance(X, sp.csr_matrix)
    assert X.shape == (400, 50)
    assert X.dtype == np.float32
    assert X.indices.dtype == np.int32
    assert X.indptr.dtype == np.int64
    assert X.has_sorted_indices
    assert y.shape == (400,) and y.dtype == np.float64
    assert set(truth) == {"w0", "w", "V", "clean"}
    assert truth["w"].shape == (50,) and truth["V"].shape == (50, 3)
    assert truth["clean"].shape == (400,)
    assert all(np.asarray(truth[key]).dtype == np.float64 for key in truth)
    # Every row: exactly nnz_per_row distinct, strictly increasing ids.
    np.testing.assert_array_equal(np.diff(X.indptr), 6)
    ids = X.indices.reshape(400, 6)
    assert (np.diff(ids, axis=1) > 0).all()
    assert ids.min() >= 0 and ids.max() < 50


def test_planted_fm_values_mix_binary_and_uniform() -> None:
    X, _, _ = make_planted_fm(2000, seed=1)
    vals = X.data.reshape(2000, -1)
    binary_rows = (vals == 1.0).all(axis=1)
    assert 0.4 < binary_rows.mean() < 0.6
    others = vals[~binary_rows]
    assert others.min() >= 0.5 and others.max() <= 1.5


def test_planted_fm_ids_cover_features_uniformly() -> None:
    X, _, _ = make_planted_fm(20_000, n_features=40, nnz_per_row=8, seed=2)
    counts = np.bincount(X.indices, minlength=40)
    expected = 20_000 * 8 / 40
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_planted_fm_all_features_per_row() -> None:
    X, _, _ = make_planted_fm(30, n_features=5, nnz_per_row=5, seed=3)
    np.testing.assert_array_equal(X.indices.reshape(30, 5), np.tile(np.arange(5), (30, 1)))


@pytest.mark.parametrize("k", [0, 1, 4])
def test_planted_fm_clean_equals_naive_double_sum(k: int) -> None:
    X, y, truth = make_planted_fm(60, n_features=25, k=k, nnz_per_row=5, noise=0.0, seed=4)
    ref = naive_fm(X, truth["w0"], truth["w"], truth["V"])
    np.testing.assert_allclose(truth["clean"], ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(y, truth["clean"])  # noise 0: y is f(x) exactly
    assert truth["w0"] == 0.5


def test_planted_fm_regression_noise_level() -> None:
    _, y, truth = make_planted_fm(20_000, noise=0.3, seed=5)
    resid = y - truth["clean"]
    assert abs(resid.mean()) < 0.02
    assert resid.std() == pytest.approx(0.3, rel=0.05)


def test_planted_fm_classification_labels() -> None:
    _, y, truth = make_planted_fm(20_000, task="classification", seed=6)
    assert set(np.unique(y)) == {0.0, 1.0}
    assert 0.2 < y.mean() < 0.8  # neither class is rare
    # Labels follow sigmoid(clean): the mean label matches the mean probability.
    p = 1.0 / (1.0 + np.exp(-truth["clean"]))
    assert y.mean() == pytest.approx(p.mean(), abs=0.02)
    assert y[truth["clean"] > 2].mean() > 0.8 and y[truth["clean"] < -2].mean() < 0.2


def test_planted_fm_truth_does_not_depend_on_n_rows() -> None:
    _, _, a = make_planted_fm(10, seed=9)
    _, _, b = make_planted_fm(1000, seed=9)
    np.testing.assert_array_equal(a["V"], b["V"])
    np.testing.assert_array_equal(a["w"], b["w"])


def test_planted_fm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="task"):
        make_planted_fm(10, task="ranking")
    with pytest.raises(ValueError, match="nnz_per_row"):
        make_planted_fm(10, n_features=4, nnz_per_row=5)
    with pytest.raises(ValueError, match="noise"):
        make_planted_fm(10, noise=-1.0)


def test_planted_fm_zero_rows() -> None:
    X, y, truth = make_planted_fm(0)
    assert X.shape == (0, 200) and y.shape == (0,) and truth["clean"].shape == (0,)


# ---------------------------------------------------------------- make_event_log


@pytest.fixture(scope="module")
def event_log() -> tuple[pa.Table, pa.Table]:
    return make_event_log(**SMALL_LOG)


def test_event_log_is_deterministic(event_log: tuple[pa.Table, pa.Table]) -> None:
    events, items = make_event_log(**SMALL_LOG)
    assert events.equals(event_log[0])
    assert items.equals(event_log[1])
    other, _ = make_event_log(**{**SMALL_LOG, "seed": 4})
    assert not other.equals(events)


def test_event_log_schema(event_log: tuple[pa.Table, pa.Table]) -> None:
    events, items = event_log
    assert events.schema.names == ["user", "item", "timestamp", "rating", "label"]
    assert events.schema.types == [
        pa.string(),
        pa.string(),
        pa.timestamp("s"),
        pa.float32(),
        pa.int8(),
    ]
    assert events.num_rows == SMALL_LOG["n_events"]
    assert items.schema.names == ["item", "genres", "year"]
    assert items.schema.field("genres").type.value_type == pa.string()
    assert items.schema.field("year").type == pa.int16()
    assert items.num_rows == SMALL_LOG["n_items"]


def test_event_log_values(event_log: tuple[pa.Table, pa.Table]) -> None:
    events, items = event_log
    ts = events.column("timestamp").to_numpy()
    assert (np.diff(ts.astype(np.int64)) >= 0).all()  # sorted by time
    days = (ts[-1] - ts[0]) / np.timedelta64(1, "D")
    assert 170 < days <= 180
    rating = events.column("rating").to_numpy()
    assert set(np.unique(rating)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(np.unique(rating)) >= 4
    assert 3.0 < rating.mean() < 4.2
    np.testing.assert_array_equal(events.column("label").to_numpy(), rating >= 4)
    users = np.asarray(events.column("user").to_pylist())
    assert all(u.startswith("u") and len(u) == 6 for u in np.unique(users))
    # Item ids of events are those of the side table.
    assert set(events.column("item").to_pylist()) <= set(items.column("item").to_pylist())
    assert items.column("item").to_pylist()[:2] == ["i00000", "i00001"]
    for genres in items.column("genres").to_pylist():
        assert 1 <= len(genres) <= 3 and len(set(genres)) == len(genres)
        assert all(g.startswith("genre") and len(g) == 7 for g in genres)
    year = items.column("year").to_numpy()
    assert year.min() >= 1930 and year.max() <= 2024


def test_event_log_popularity_is_skewed(event_log: tuple[pa.Table, pa.Table]) -> None:
    events, _ = event_log
    for column in ("user", "item"):
        counts = np.sort(np.unique(events.column(column).to_numpy(), return_counts=True)[1])[::-1]
        top_tenth = counts[: max(1, counts.size // 10)].sum() / counts.sum()
        assert top_tenth > 0.25  # uniform popularity would give about 0.10


def test_event_log_ratings_carry_signal(event_log: tuple[pa.Table, pa.Table]) -> None:
    # The planted user and item effects make per-item mean ratings differ far beyond sampling noise.
    events, _ = event_log
    items = events.column("item").to_numpy()
    rating = events.column("rating").to_numpy().astype(np.float64)
    _, inverse, counts = np.unique(items, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=rating) / counts
    busy = counts >= 50
    assert means[busy].std() > 0.3


def test_event_log_has_cold_starts(event_log: tuple[pa.Table, pa.Table]) -> None:
    events, _ = event_log
    items = events.column("item").to_numpy()
    first_half = set(items[: items.size // 2])
    assert set(items[items.size // 2 :]) - first_half  # some items appear only late


# ---------------------------------------------------------------- write_event_log


def test_write_event_log_round_trips(tmp_path: Path) -> None:
    paths = write_event_log(tmp_path / "log", test_fraction=0.2, **SMALL_LOG)
    assert set(paths) == {"train", "test", "items"}
    assert all(isinstance(p, Path) and p.exists() for p in paths.values())
    events, items = make_event_log(**SMALL_LOG)
    train = pq.read_table(paths["train"])
    test = pq.read_table(paths["test"])
    # Parquet has no seconds unit: timestamps come back as timestamp[ms], the same instants.
    assert train.schema.field("timestamp").type == pa.timestamp("ms")
    both = pa.concat_tables([train, test]).cast(events.schema)
    assert both.equals(events)
    assert pq.read_table(paths["items"]).equals(items)
    assert test.num_rows == pytest.approx(0.2 * events.num_rows, abs=50)
    train_ts = train.column("timestamp").to_numpy()
    test_ts = test.column("timestamp").to_numpy()
    assert train_ts.max() < test_ts.min()  # a strict temporal split
    for key in ("train", "test"):
        assert pq.ParquetFile(paths[key]).num_row_groups > 1


def test_write_event_log_rejects_bad_fraction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        write_event_log(tmp_path, test_fraction=1.0)
