"""Rows in memory: TrainedModel.predict on DataFrames / Tables / mappings, predict_one and
learn_one (per-event serving), the default builders of a table's columns."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import streamfm
from streamfm.datasets import make_event_log
from streamfm.errors import DataError, SpecError
from streamfm.frames import default_features, to_table

FEATURES = [
    {"type": "categorical", "columns": ["user"]},
    {"type": "categorical", "columns": ["item"]},
    {"type": "numeric", "columns": ["timestamp"], "transform": "standardize"},
]


def train(tmp_path, events, name="s", **extra):
    pq.write_table(events, tmp_path / f"{name}.parquet")
    spec = {
        "source": {"path": str(tmp_path / f"{name}.parquet"), "batch_size": 97},
        "target": "rating",
        "features": FEATURES,
        "model": {"k": 4, "seed": 1},
        "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 1},
        "output": {"dir": str(tmp_path / name)},
        "checkpoint": {"enabled": False},
        **extra,
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return streamfm.train(tmp_path / f"{name}.yaml").model


@pytest.fixture(scope="module")
def events():
    table, _items = make_event_log(n_users=60, n_items=40, n_events=1_200, seed=3)
    return table.select(["user", "item", "timestamp", "rating"])


def test_predict_takes_tables_dataframes_and_mappings(tmp_path, events):
    model = train(tmp_path, events)
    want = model.predict_table(events)
    np.testing.assert_array_equal(model.predict(events), want)
    np.testing.assert_array_equal(
        model.predict(events.to_batches()[0]), want[: events.to_batches()[0].num_rows]
    )
    np.testing.assert_array_equal(model.predict(events.to_pydict()), want)
    pytest.importorskip("pandas")
    df = events.to_pandas()
    np.testing.assert_array_equal(model.predict(df), want)
    # extra columns are fine, missing ones are named
    np.testing.assert_array_equal(model.predict(df.assign(other=1)), want)
    with pytest.raises(DataError, match=r"lack the column\(s\) \['item'\]"):
        model.predict(df.drop(columns="item"))


def test_predict_one_is_predict_of_one_row(tmp_path, events):
    model = train(tmp_path, events)
    rows = events.slice(0, 5).to_pylist()
    for i, row in enumerate(rows):
        assert model.predict_one(row) == model.predict_table(events.slice(i, 1))[0]
    unseen = {**rows[0], "user": "nobody", "item": None}
    assert np.isfinite(model.predict_one(unseen))


def test_learn_one_continues_the_stream_exactly(tmp_path, events):
    """Training on 1,150 rows, then learn_one on the last 50, ends where training on all ends."""
    whole = train(tmp_path, events, "whole")
    part = train(tmp_path, events.slice(0, 1_150), "part")
    before = []
    for row in events.slice(1_150).to_pylist():
        y = row.pop("rating")
        before.append(part.learn_one(row, y))
    pw, pp = whole.learner.params, part.learner.params
    assert pw.n_features == pp.n_features
    np.testing.assert_array_equal(pw.V[: pw.n_features], pp.V[: pp.n_features])
    np.testing.assert_array_equal(pw.w[: pw.n_features], pp.w[: pp.n_features])
    assert whole.learner.t == part.learner.t == 1_200
    np.testing.assert_array_equal(part.predict(events), whole.predict(events))
    assert np.all(np.isfinite(before))
    # the learnt model saves and loads like any other
    part.save(tmp_path / "served.sfm")
    np.testing.assert_array_equal(
        streamfm.load_model(tmp_path / "served.sfm").predict(events), part.predict(events)
    )


def test_learn_one_checks_the_target_and_the_values(tmp_path, events):
    model = train(tmp_path, events)
    row = events.slice(0, 1).to_pylist()[0]
    row.pop("rating")
    with pytest.raises(DataError, match="column 'rating'"):
        model.learn_one(row, None)
    with pytest.raises(DataError, match="not a number"):
        model.learn_one({**row, "timestamp": "yesterday"}, 3.0)
    clf = train(
        tmp_path,
        events,
        "clf",
        task="classification",
        target={"column": "rating", "positive": [4, 5]},
    )
    p = clf.learn_one(row, 5)
    assert 0 < p < 1 and clf.learner.t == 1_201


def test_parquet_written_by_pandas_3_trains_crosses(tmp_path, events):
    """Text as large_string (pandas 3 writes it so) is read like string, crosses included."""
    big = events.cast(
        pa.schema(
            [
                pa.field("user", pa.large_string()),
                pa.field("item", pa.large_string()),
                pa.field("timestamp", events.schema.field("timestamp").type),
                pa.field("rating", events.schema.field("rating").type),
            ]
        )
    )
    features = [*FEATURES, {"type": "categorical", "columns": ["user", "item"], "name": "x"}]
    pq.write_table(big, tmp_path / "big.parquet")
    pq.write_table(events, tmp_path / "small.parquet")
    models = []
    for name in ("big", "small"):
        spec = {
            "source": {"path": str(tmp_path / f"{name}.parquet")},
            "target": "rating",
            "features": features,
            "output": {"dir": str(tmp_path / name)},
            "checkpoint": {"enabled": False},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        models.append(streamfm.train(tmp_path / f"{name}.yaml").model)
    np.testing.assert_array_equal(models[0].predict(big), models[1].predict(events))


def test_default_features_by_column_type():
    table = pa.table(
        {
            "city": ["a", "b"],
            "n": [1, 2],
            "x": [0.5, 1.5],
            "ok": [True, False],
            "when": pa.array([0, 3600], pa.timestamp("s")),
            "tags": [["x"], ["y", "z"]],
            "code": pa.array(["p", "q"]).dictionary_encode(),
        }
    )
    kinds = {b["name"]: b["type"] for b in default_features(table.schema, standardize=True)}
    assert kinds == {
        "city": "categorical",
        "n": "numeric",
        "x": "numeric",
        "ok": "categorical",
        "when": "time",
        "tags": "set",
        "code": "categorical",
    }
    with pytest.raises(SpecError, match="column 's' has type struct"):
        default_features(pa.table({"s": [{"a": 1}]}).schema, standardize=True)


def test_to_table_conversions_and_errors():
    assert to_table({"a": [1, 2], "b": ["x", None]}).column_names == ["a", "b"]
    assert to_table({"a": [None, None]}).schema.field("a").type == pa.float64()
    with pytest.raises(DataError, match="expected a pandas DataFrame"):
        to_table(42)
    pd = pytest.importorskip("pandas")
    with pytest.raises(DataError, match="column 'm' mixes types"):
        to_table(pd.DataFrame({"ok": [1, 2], "m": [1, "x"]}))
    t = to_table(pd.DataFrame({0: [1.0], "s": pd.Series(["a"], dtype="str")}))
    assert t.column_names == ["0", "s"] and t.schema.field("s").type == pa.string()
