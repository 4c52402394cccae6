"""Explanations: terms that add up to the prediction, against the naive O(k·n²) FM."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from reference import naive_fm

import streamfm
from streamfm.datasets import make_event_log
from streamfm.explain import summarize
from streamfm.learners.sgd import sigmoid

FEATURES = [
    {"type": "categorical", "columns": ["user"]},
    {"type": "categorical", "columns": ["item"]},
    {"type": "numeric", "columns": ["timestamp"], "transform": "standardize", "name": "trend"},
    {"type": "categorical", "columns": ["user", "item"], "hash_bits": 6, "name": "pair"},
    {"type": "implicit", "key": "user", "items": "item", "max_items": 20},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    events, _ = make_event_log(n_users=50, n_items=30, n_events=2_000, seed=7)
    events = events.select(["user", "item", "timestamp", "rating"])
    pq.write_table(events, folder / "e.parquet")
    models = {}
    for task in ("regression", "classification"):
        spec = {
            "source": {"path": str(folder / "e.parquet")},
            "task": task,
            "target": "rating" if task == "regression" else {"column": "rating", "positive": [5]},
            "features": FEATURES,
            "model": {"k": 5, "seed": 3},
            "learner": {"optimizer": "adagrad", "learning_rate": 0.1, "epochs": 2},
            "output": {"dir": str(folder / task)},
            "checkpoint": {"enabled": False},
        }
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(spec))
        streamfm.train(folder / f"{task}.yaml")
        models[task] = streamfm.load_model(folder / task / "model.sfm")
    return models, events


def test_terms_add_up_to_the_prediction(trained):
    models, events = trained
    rows = events.slice(1_900, 40)
    for task, model in models.items():
        terms = model.explain(rows)
        want = model.predict(rows)
        score = model.learner.decision_function(model.transform(rows.to_batches()[0]))
        for r, s in enumerate(summarize(terms)):
            assert s["row"] == r
            total = math.fsum(
                t
                for t in terms.filter(pa.compute.equal(terms["row"], r))["contribution"].to_pylist()
            )
            scale = 1 + sum(abs(c) for c in terms["contribution"].to_pylist())
            if task == "regression":  # bias + linear + pairs + clip = the prediction
                assert abs(total - want[r]) <= 1e-12 * scale
                assert s["prediction"] == want[r]
            else:  # the terms add up to the logit
                assert abs(total - score[r]) <= 1e-12 * scale
                assert s["prediction"] == pytest.approx(
                    float(sigmoid(np.array([total]))[0]), abs=1e-12
                )
            assert abs(s["score"] - score[r]) <= 1e-12 * scale


def test_terms_are_the_naive_fm_terms(trained):
    models, events = trained
    model = models["regression"]
    rows = events.slice(100, 10)
    chunk = model.transform(rows.to_batches()[0])
    p = model.learner.params
    n = p.n_features
    w0, w, V = float(p.w0[0]), p.w[:n].astype(float), p.V[:n].astype(float)
    terms = model.explain(rows).to_pylist()
    for r in range(10):
        ids = chunk.indices[chunk.indptr[r] : chunk.indptr[r + 1]]
        vals = chunk.values[chunk.indptr[r] : chunk.indptr[r + 1]].astype(float)
        x = np.zeros(n)
        np.add.at(x, ids, vals)
        mine = [t for t in terms if t["row"] == r]
        assert [t["kind"] for t in mine].count("linear") == len(ids)
        assert sum(1 for t in mine if t["kind"] == "pair") == len(ids) * (len(ids) - 1) // 2
        # bias + linear + pairs is the FM of the double sum (float32 products aside)
        exact = math.fsum(
            t["contribution"] for t in mine if t["kind"] in ("bias", "linear", "pair")
        )
        assert exact == pytest.approx(naive_fm(x[None, :], w0, w, V)[0], rel=1e-6, abs=1e-7)
        rounding = next(t["contribution"] for t in mine if t["kind"] == "rounding")
        assert abs(rounding) < 1e-5
        # each pair is <v_i, v_j> x_i x_j
        a, b = (model.pipeline.feature_name(int(i)) for i in ids[:2])
        pair = next(t for t in mine if t["kind"] == "pair")
        assert (pair["feature"], pair["other_feature"]) == (a, b)
        assert pair["contribution"] == pytest.approx(
            float(V[ids[0]] @ V[ids[1]]) * vals[0] * vals[1], rel=1e-5
        )
        # groups are the builders
        assert {t["group"] for t in mine if t["kind"] == "linear"} <= {
            "user",
            "item",
            "trend",
            "pair",
            "implicit_user",
        }


def test_unseen_values_are_named_and_contribute_nothing(trained):
    models, events = trained
    model = models["regression"]
    row = {**events.slice(0, 1).to_pylist()[0], "item": "never-seen"}
    terms = model.explain({k: [v] for k, v in row.items()}).to_pylist()
    unseen = [t for t in terms if t["feature"] == "item=never-seen" and t["kind"] == "linear"]
    assert len(unseen) == 1 and unseen[0]["contribution"] == 0 and not unseen[0]["seen"]
    pairs = [
        t
        for t in terms
        if t["kind"] == "pair" and "item=never-seen" in (t["feature"], t["other_feature"])
    ]
    assert pairs and all(t["contribution"] == 0 for t in pairs)
    assert summarize(pa.Table.from_pylist(terms))[0]["unseen"] == ["item=never-seen"]


def test_pandas_in_pandas_out(trained):
    pd = pytest.importorskip("pandas")
    models, events = trained
    df = events.slice(0, 3).to_pandas()
    out = models["regression"].explain(df)
    assert isinstance(out, pd.DataFrame)
    sums = out.groupby("row")["contribution"].sum().to_numpy()
    np.testing.assert_allclose(sums, models["regression"].predict(df), rtol=0, atol=1e-9)
