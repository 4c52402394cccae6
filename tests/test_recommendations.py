"""model.recommend and `streamfm recommend`: the top-k items equal brute-force scoring of every
catalogue item with predict; exclude-seen; CLI round trip; models of other tasks refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from streamfm.datasets import make_implicit_events
from streamfm.errors import SpecError
from streamfm.store.trained import TrainedModel
from streamfm.training.loop import train
from tests.test_ranking import ranking_spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recs")
    ev, _ = make_implicit_events(n_users=60, n_items=40, events_per_user=8, seed=4)
    pq.write_table(ev, folder / "events.parquet")
    spec = ranking_spec(
        folder / "events.parquet",
        source={"path": str(folder / "events.parquet")},
        learner={"method": "adagrad", "learning_rate": 0.1, "epochs": 2},
        output={"dir": str(folder / "out")},
    )
    result = train(spec)
    return folder, ev, result.model, result.model_path


def _brute(model, ev, users, exclude=None):
    """Per user: every catalogue item scored by predict on (user, item, genre) rows."""
    genre = dict(zip(ev.column("item").to_pylist(), ev.column("genre").to_pylist(), strict=True))
    keys = model.learner.catalogue.item_keys(model.pipeline, model.learner.item_group).to_pylist()
    out = {}
    for u in users:
        rows = pa.table({"user": [u] * len(keys), "item": keys, "genre": [genre[i] for i in keys]})
        s = model.predict(rows)
        banned = exclude.get(u, set()) if exclude else set()
        order = [j for j in np.lexsort((np.arange(len(keys)), -s)) if keys[j] not in banned]
        out[u] = [(keys[j], s[j]) for j in order]
    return out


def _check(got, want, k):
    for u, ranked in want.items():
        mine = got.filter(pa.compute.equal(got.column("user"), u))
        assert mine.column("rank").to_pylist() == list(range(1, min(k, len(ranked)) + 1))
        assert mine.column("item").to_pylist() == [i for i, _ in ranked[:k]]
        assert np.allclose(mine.column("score").to_numpy(), [s for _, s in ranked[:k]], atol=1e-5)


def test_recommend_equals_brute_force_predict(trained):
    _, ev, model, _ = trained
    users = ["u0001", "u0007", "u0042", "nobody"]  # an unseen user: the items' parts only
    got = model.recommend({"user": users}, k=7)
    assert got.column_names == ["user", "rank", "item", "score"]
    _check(got, _brute(model, ev, users), 7)


def test_exclude_seen(trained, tmp_path):
    folder, ev, model, _ = trained
    users = ["u0003", "u0010", "u0011"]
    history = ev.select(["user", "item"])
    seen: dict[str, set] = {}
    pairs = zip(history.column("user").to_pylist(), history.column("item").to_pylist(), strict=True)
    for u, i in pairs:
        seen.setdefault(u, set()).add(i)
    got = model.recommend(pa.table({"user": users}), k=40, exclude_seen=history.to_pandas())
    _check(got, _brute(model, ev, users, seen), 40)
    for u in users:  # fewer than k candidates left: fewer rows
        mine = got.filter(pa.compute.equal(got.column("user"), u))
        assert mine.num_rows == 40 - len(seen[u])
        assert not set(mine.column("item").to_pylist()) & seen[u]
    pq.write_table(history, tmp_path / "history.parquet")
    from_file = model.recommend({"user": users}, k=40, exclude_seen=tmp_path / "history.parquet")
    assert from_file.equals(got)


def _cli(*args):
    from typer.testing import CliRunner

    from streamfm.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_cli_round_trip(trained, tmp_path, suffix):
    folder, ev, model, model_path = trained
    users = pa.table({"user": ["u0005", "u0006", "nobody"], "other": [1, 2, 3]})
    pq.write_table(users, tmp_path / "contexts.parquet")
    pq.write_table(ev.select(["user", "item"]), tmp_path / "history.parquet")
    out = tmp_path / f"recs{suffix}"
    r = _cli(
        "recommend", model_path, tmp_path / "contexts.parquet", "-k", 5, "-o", out,
        "--exclude-seen", tmp_path / "history.parquet",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "wrote 15 recommendations for 3 contexts" in r.output
    got = pq.read_table(out) if suffix == ".parquet" else pacsv.read_csv(out)
    want = TrainedModel.load(model_path).recommend(
        users, k=5, exclude_seen=ev.select(["user", "item"])
    )
    assert got.column("item").to_pylist() == want.column("item").to_pylist()
    assert got.column("user").to_pylist() == want.column("user").to_pylist()
    assert np.allclose(got.column("score").to_numpy(), want.column("score").to_numpy())


def test_models_of_other_tasks_are_refused(tmp_path):
    spec = ranking_spec(task="regression", target="y", ranking=None)
    model = TrainedModel.from_spec(spec)
    with pytest.raises(SpecError, match="trained for task regression.*task ranking"):
        model.recommend({"user": ["a"]}, k=3)


def test_cli_errors(trained, tmp_path):
    _, _, _, model_path = trained
    pq.write_table(pa.table({"who": ["a"]}), tmp_path / "c.parquet")
    r = _cli("recommend", model_path, tmp_path / "c.parquet", "-o", tmp_path / "r.parquet")
    assert r.exit_code != 0 and "user" in r.output
    r = _cli("recommend", model_path, tmp_path / "c.parquet", "-o", tmp_path / "r.txt")
    assert r.exit_code != 0 and ".parquet or .csv" in r.output
