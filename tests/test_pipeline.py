"""The training loop end to end (Python API): determinism, formats, validation, outputs."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import streamfm
from streamfm.datasets import make_event_log
from streamfm.errors import DataError, SpecError
from streamfm.spec import parse_spec
from streamfm.store.archive import read_archive as load_arrays
from streamfm.store.trained import TrainedModel
from streamfm.training.loop import train

FEATURES = [
    {"type": "categorical", "columns": ["user"]},
    {"type": "categorical", "columns": ["item"]},
    {"type": "numeric", "columns": ["hour"], "transform": "standardize"},
    {"type": "categorical", "columns": ["user", "dow"], "hash_bits": 8, "name": "user_dow"},
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events")
    events, _items = make_event_log(n_users=150, n_items=80, n_events=6_000, seed=3)
    ts = events["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    table = events.append_column("hour", pa.array((ts // 3600) % 24, pa.int64()))
    table = table.append_column("dow", pa.array((ts // 86400) % 7, pa.int64())).drop(["timestamp"])
    train_t, test_t = table.slice(0, 5_000), table.slice(5_000)
    pq.write_table(train_t, folder / "train.parquet", row_group_size=1_000)
    pq.write_table(test_t, folder / "test.parquet")
    pacsv.write_csv(train_t, folder / "train.csv")
    with open(folder / "train.jsonl", "w") as f:
        for row in train_t.to_pylist():
            f.write(json.dumps(row) + "\n")
    return folder


def make_spec(data, tmp_path, **changes):
    spec = {
        "source": {"path": str(data / "train.parquet")},
        "target": "rating",
        "features": FEATURES,
        "model": {"k": 4, "seed": 1},
        "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 3},
        "output": {"dir": str(tmp_path / "out")},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            spec[section] = {**spec.get(section, {}), name: value}
        else:
            spec[key] = value
    return parse_spec(spec)


def arrays_of(result):
    return load_arrays(result.model_path)[1]


def assert_same_model(a, b):
    A, B = arrays_of(a), arrays_of(b)
    assert A.keys() == B.keys()
    for k in A:
        np.testing.assert_array_equal(A[k], B[k], err_msg=k)


def test_batch_size_does_not_change_the_model(data, tmp_path):
    small = train(
        make_spec(
            data, tmp_path / "a", source={"path": str(data / "train.parquet"), "batch_size": 7}
        )
    )
    large = train(
        make_spec(
            data, tmp_path / "b", source={"path": str(data / "train.parquet"), "batch_size": 10_000}
        )
    )
    assert_same_model(small, large)


def test_chunk_cache_on_or_off_gives_the_same_model(data, tmp_path):
    on = train(make_spec(data, tmp_path / "a", cache__enabled=True))
    off = train(make_spec(data, tmp_path / "b", cache__enabled=False))
    assert_same_model(on, off)
    assert not list((tmp_path / "a" / "out").glob(".chunks-*")), "the cache file is removed"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_format_gives_the_same_model(data, tmp_path, fmt):
    ref = train(make_spec(data, tmp_path / "p"))
    other = train(
        make_spec(
            data, tmp_path / fmt, source={"path": str(data / f"train.{fmt}"), "batch_size": 999}
        )
    )
    assert_same_model(ref, other)


def test_shuffle_window_is_seeded_and_batch_size_independent(data, tmp_path):
    def run(name, batch, seed=1):
        return train(
            make_spec(
                data,
                tmp_path / name,
                source={"path": str(data / "train.parquet"), "batch_size": batch},
                learner={
                    "optimizer": "adagrad",
                    "learning_rate": 0.05,
                    "epochs": 2,
                    "shuffle_buffer": 700,
                },
                model={"k": 4, "seed": seed},
            )
        )

    a, b = run("a", 64), run("b", 5_000)
    assert_same_model(a, b)
    plain = train(
        make_spec(
            data,
            tmp_path / "c",
            learner={"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 2},
        )
    )
    assert not np.array_equal(arrays_of(a)["V"], arrays_of(plain)["V"])


def test_learns_and_validates(data, tmp_path):
    spec = make_spec(data, tmp_path, validation={"source": {"path": str(data / "test.parquet")}})
    result = train(spec)
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    test = pq.read_table(data / "test.parquet")
    y = test["rating"].to_numpy()
    baseline = np.sqrt(
        np.mean((y - pq.read_table(data / "train.parquet")["rating"].to_numpy().mean()) ** 2)
    )
    assert history[-1]["holdout_rmse"] < 0.97 * baseline
    # The saved model predicts raw rows exactly as evaluated.
    model = streamfm.load_model(result.model_path)
    assert isinstance(model, TrainedModel)
    pred = model.predict_table(test)
    assert np.sqrt(np.mean((pred - y) ** 2)) == pytest.approx(history[-1]["holdout_rmse"], rel=1e-9)
    out = spec.output_dir()
    assert json.loads((out / "metrics.json").read_text()) == history
    assert (
        (out / "metrics.csv")
        .read_text()
        .splitlines()[0]
        .startswith("kind,epoch,rows,seconds,rmse,mae")
    )


def test_early_stopping_keeps_the_best_model(data, tmp_path):
    spec = make_spec(
        data,
        tmp_path,
        learner={"optimizer": "sgd", "learning_rate": 0.08, "epochs": 30, "reg_factors": 0.0},
        model={"k": 16, "init_std": 0.3, "seed": 1},
        validation={
            "source": {"path": str(data / "test.parquet")},
            "every_rows": 2_500,
            "patience": 3,
        },
    )
    result = train(spec)
    assert result.summary["stopped_early"]
    best = min(r["holdout_rmse"] for r in result.history)
    scores = result.model.evaluate(result.model.source_config(str(data / "test.parquet")))
    assert scores["rmse"] == pytest.approx(best, rel=1e-9)
    assert result.summary["best_rmse"] == best


def test_classification_with_positive_values(data, tmp_path):
    spec = make_spec(
        data,
        tmp_path,
        task="classification",
        target={"column": "rating", "positive": [4, 5]},
        validation={"source": {"path": str(data / "test.parquet")}},
    )
    result = train(spec)
    last = result.history[-1]
    assert {"logloss", "auc", "accuracy", "holdout_auc"} <= set(last)
    assert last["holdout_auc"] > 0.7
    pred = result.model.predict_table(pq.read_table(data / "test.parquet"))
    assert ((pred > 0) & (pred < 1)).all()


def test_bad_labels_and_targets_name_file_and_row(data, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,hour,dow,rating\na,b,1,2,3.0\na,c,1,2,\n")
    with pytest.raises(DataError, match=r"bad.csv, row 3, column 'rating': the target is missing"):
        train(make_spec(data, tmp_path, source={"path": str(bad)}))
    with pytest.raises(DataError, match="target column 'stars' is not in the data|stars"):
        train(make_spec(data, tmp_path, target="stars"))


@pytest.mark.parametrize("policy", ["fail", "skip", "quarantine"])
def test_classification_of_more_than_two_classes_says_it_is_binary(data, tmp_path, policy):
    """Ratings 1..5 are not binary labels: a spec error whatever on_bad_rows says (skipping the
    rows would learn from the rows rated 1 only)."""
    spec = make_spec(data, tmp_path, task="classification", source__on_bad_rows=policy)
    with pytest.raises(SpecError, match=r"task classification is binary.*'rating' holds the label"):
        train(spec)
    text = tmp_path / "text.csv"
    text.write_text("user,item,hour,dow,rating\na,b,1,2,true\na,c,1,2,false\na,c,1,2,good\n")
    with pytest.raises(SpecError, match=r"label 'good' \(.*text.csv, row 4\).*target.positive"):
        train(make_spec(data, tmp_path, task="classification", source={"path": str(text)}))
    # true / false as text are labels, and target.positive picks one class against the rest
    text.write_text("user,item,hour,dow,rating\na,b,1,2,true\na,c,1,2,False\n")
    assert train(make_spec(data, tmp_path, task="classification", source={"path": str(text)}))
    ok = make_spec(
        data, tmp_path, task="classification", target={"column": "rating", "positive": [5]}
    )
    assert train(ok).summary["rows_learnt"] == 3 * 5_000


def test_a_spec_with_every_builtin_builder(tmp_path):
    from streamfm.datasets import write_event_log
    from streamfm.features.registry import available_builders

    paths = write_event_log(tmp_path / "ev", n_users=120, n_items=70, n_events=5_000, seed=4)
    # Add a libFM-style list column pair so the libfm builder has something to read.
    for name in ("train", "test"):
        t = pq.read_table(paths[name])
        n = t.num_rows
        idx = pa.array([[int(i) % 5, 10 + int(i) % 3] for i in range(n)], pa.list_(pa.int64()))
        val = pa.array([[1.0, 0.5]] * n, pa.list_(pa.float32()))
        pq.write_table(t.append_column("idx", idx).append_column("val", val), paths[name])
    features = [
        {"type": "mf", "user": "user", "item": "item"},
        {"type": "categorical", "columns": ["user", "item"], "hash_bits": 10, "name": "pair"},
        {"type": "numeric", "columns": ["timestamp"], "transform": "standardize", "name": "trend"},
        {"type": "implicit", "key": "user", "items": "item", "max_items": 50},
        {"type": "implicit", "key": "item", "items": "user", "max_items": 50},
        {"type": "time", "column": "timestamp", "encodings": ["weekday", "bin"], "bin_days": 30},
        {
            "type": "time",
            "column": "timestamp",
            "encodings": ["day"],
            "cross": ["user"],
            "name": "user_day",
        },
        {
            "type": "join",
            "key": "item",
            "table": {"path": str(paths["items"])},
            "features": [
                {"type": "set", "column": "genres", "normalize": "sqrt"},
                {"type": "numeric", "columns": ["year"], "transform": "standardize"},
            ],
        },
        {"type": "libfm"},
        {"type": "sequence", "key": "user", "items": "item", "length": 3},
    ]
    used = {f["type"] for f in features} | {f["type"] for f in features[7]["features"]}
    assert used >= set(available_builders()) | {"mf"}

    def run(name, batch_size):
        spec = parse_spec(
            {
                "source": {"path": str(paths["train"]), "batch_size": batch_size},
                "target": "rating",
                "features": features,
                "model": {"k": 4},
                "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 2},
                "validation": {"source": {"path": str(paths["test"])}, "restore_best": True},
                "output": {"dir": str(tmp_path / name)},
            }
        )
        return train(spec)

    a, b = run("a", 333), run("b", 4_096)
    assert_same_model(a, b)
    model = streamfm.load_model(a.model_path)
    test = pq.read_table(paths["test"])
    y = test["rating"].to_numpy()
    pred = model.predict_table(test)
    # The saved model is the best evaluation's (validation.restore_best).
    best = min(r["holdout_rmse"] for r in a.history)
    assert a.summary["best_rmse"] == best
    assert np.sqrt(np.mean((pred - y) ** 2)) == pytest.approx(best, rel=1e-9)
    baseline = np.sqrt(
        np.mean((y - pq.read_table(paths["train"])["rating"].to_numpy().mean()) ** 2)
    )
    assert best < baseline
    from streamfm.inspect import describe

    groups = {g["name"] for g in describe(a.model_path)["groups"]}
    assert {
        "user",
        "item",
        "pair",
        "trend",
        "implicit_user",
        "implicit_item",
        "time_timestamp",
        "user_day",
        "join_item",
        "libfm",
        "sequence_user",
    } == groups


def test_every_rows_evaluates_after_exactly_that_many_rows(data, tmp_path):
    """Batches of 1,000 rows, every_rows 2,500: records at 2,500 and 7,500 (the chunk is cut
    there), and one record per epoch end (an evaluation due at the end is that record)."""
    val = {"source": {"path": str(data / "test.parquet")}, "every_rows": 2_500}
    spec = make_spec(data, tmp_path, source__batch_size=1_000, learner__epochs=2, validation=val)
    result = train(spec)
    assert [(r["kind"], r["rows"]) for r in result.history] == [
        ("cadence", 2_500),
        ("epoch", 5_000),
        ("cadence", 7_500),
        ("epoch", 10_000),
    ]
    assert all("holdout_rmse" in r for r in result.history)
    plain = train(make_spec(data, tmp_path / "plain", source__batch_size=1_000, learner__epochs=2))
    a, b = result.model.learner.params, plain.model.learner.params
    np.testing.assert_array_equal(a.V[: a.n_features], b.V[: b.n_features])
    assert result.model.learner.t == plain.model.learner.t == 10_000


def test_every_rows_may_change_when_a_run_is_resumed(data, tmp_path):
    """Set to 0 on --resume: no more evaluations between epoch ends (not one per row); set from
    0: evaluations at its multiples."""
    from streamfm.training.loop import Trainer

    def spec(out, every):
        return make_spec(
            data,
            out,
            learner__epochs=2,
            source__batch_size=500,
            output__progress_every_seconds=1e-9,
            validation={"source": {"path": str(data / "test.parquet")}, "every_rows": every},
        )

    for before, after, want in ((2_000, 0, [2_000]), (0, 3_000, [3_000, 6_000, 9_000])):
        out = tmp_path / f"{before}-{after}"
        trainer = Trainer(spec(out, before))
        trainer.progress = lambda e, t=trainer: e["rows"] >= 2_000 and t.request_stop()
        assert trainer.run_training().summary["interrupted"]
        result = Trainer(spec(out, after), resume=True).run_training()
        assert [r["rows"] for r in result.history if r["kind"] == "cadence"] == want
