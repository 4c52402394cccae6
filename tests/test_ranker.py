"""FMRanker: the spec path's RankingLearner behind a scikit-learn style estimator."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reference import assert_same_state

from streamfm import FMRanker
from streamfm.datasets import make_implicit_events
from streamfm.store.trained import TrainedModel
from streamfm.training.loop import train
from tests.test_ranking import _state, ranking_spec


@pytest.fixture(scope="module")
def data():
    ev, _ = make_implicit_events(n_users=60, n_items=40, events_per_user=8, seed=5)
    df = ev.to_pandas()
    items = df[["item", "genre"]].drop_duplicates("item")
    return ev, df, items


@pytest.fixture(scope="module")
def fitted(data):
    _, df, items = data
    r = FMRanker(k=3, learning_rate=0.1, epochs=2, init_std=0.3, seed=7, sampler="popularity")
    return r.fit(df[["user"]], df["item"].to_numpy(), item_features=items)


def test_fit_is_the_spec_path(data, fitted, tmp_path):
    ev, _, _ = data
    pq.write_table(ev.select(["user", "item", "genre"]), tmp_path / "ev.parquet")
    spec = ranking_spec(
        source={"path": str(tmp_path / "ev.parquet")},
        ranking={
            "item": "item",
            "item_features": ["genre"],
            "negatives": {"sampler": "popularity"},
        },
        learner={"method": "adagrad", "learning_rate": 0.1, "epochs": 2},
        model={"k": 3, "seed": 7, "init_std": 0.3},
        output={"dir": str(tmp_path / "out")},
    )
    ref = train(spec).model
    assert_same_state(_state(ref), _state(fitted.model_))
    assert fitted.spec_["task"] == "ranking"
    assert set(fitted.items_) == set(ev.column("item").to_pylist())


def test_predict_recommend_score(data, fitted):
    _, df, items = data
    users = ["u0001", "u0002", "nobody"]
    ctx = {"user": users}
    got, scores = fitted.recommend(ctx, k=5, return_scores=True)
    assert got.shape == (3, 5) and scores.shape == (3, 5)
    want = fitted.model_.recommend(ctx, k=5)
    assert got.reshape(-1).tolist() == want.column("item").to_pylist()
    assert np.allclose(scores.reshape(-1), want.column("score").to_numpy())
    # predict of (context, recommended item) pairs gives the recommended scores
    pairs_u = np.repeat(users, 5)
    s = fitted.predict({"user": pairs_u}, got.reshape(-1))
    assert np.allclose(s, scores.reshape(-1), atol=1e-5)
    # score: ndcg@10 of the pairs, as the model's evaluation of them
    tail = df.tail(100)
    value = fitted.score(tail[["user"]], tail["item"].to_numpy())
    table = pa.table({"user": tail["user"].tolist(), "item": tail["item"].tolist()})
    table = table.append_column("genre", pa.array(tail["genre"].tolist()))
    assert value == pytest.approx(fitted.model_.evaluate(table)["ndcg"])
    assert 0 < value <= 1


def test_arrays_exclusions_and_errors(data, tmp_path):
    _, df, _ = data
    codes = df["user"].str[1:].astype(int).to_numpy()[:, None].astype(str)
    items = df["item"].str[1:].astype(int).to_numpy()  # integer item ids
    r = FMRanker(k=2, epochs=1).fit(codes, items)
    assert r.context_columns_ == ["x0"]
    assert all(isinstance(i, int) for i in r.items_)
    top = r.recommend(np.array([["1"], ["2"]]), k=50)
    assert top.shape == (2, 50) and top[0, -1] is None  # 40 items only
    seen = {"x0": ["1", "1"], "item": [int(top[0, 0]), int(top[0, 1])]}
    again = r.recommend(np.array([["1"]]), k=3, exclude=seen)
    assert list(again[0]) == list(top[0, 2:5])
    r.save(tmp_path / "m.sfm")
    assert TrainedModel.load(tmp_path / "m.sfm").task == "ranking"
    with pytest.raises(Exception, match="columns"):
        r.recommend(np.zeros((2, 3)), k=2)
    with pytest.raises(Exception, match="item ids"):
        r.predict(np.array([["1"]]), [1, 2])
