"""validation: {split: leave_last_out}: each key's last event is held out, never learnt, and
used as the ranking holdout; resume is exact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from reference import assert_same_state

from streamfm.datasets import make_implicit_events
from streamfm.training.loop import Trainer, train
from streamfm.training.split import LeaveLastOut
from tests.test_ranking import _state, ranking_spec

SPLIT = {"split": "leave_last_out", "key": "user", "metric": "ndcg"}


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llo-data")
    ev, _ = make_implicit_events(n_users=80, n_items=50, events_per_user=10, seed=3)
    pq.write_table(ev.slice(0, 500), folder / "a.parquet", row_group_size=130)
    pq.write_table(ev.slice(500), folder / "b.parquet", row_group_size=130)
    return folder, ev


def _spec(source, out, batch_size=64, validation=SPLIT, **over):
    return ranking_spec(
        source,
        source={"path": str(source), "batch_size": batch_size},
        learner={"method": "adagrad", "learning_rate": 0.1, "epochs": 2},
        validation=validation,
        output={"dir": str(out), "progress_every_seconds": 1e-6},
        **over,
    )


def _rows(table):
    return sorted(zip(*(table.column(c).to_pylist() for c in ("user", "item")), strict=True))


@pytest.mark.parametrize("floor", [1024, 0])
def test_held_out_rows_are_each_users_last_event(log, tmp_path, monkeypatch, floor):
    folder, ev = log
    monkeypatch.setattr(LeaveLastOut, "COMPACT_FLOOR", floor)  # 0: compacts in the pass
    trainer = Trainer(_spec(folder, tmp_path, batch_size=7))
    result = trainer.run_training()
    last = ev.filter(pc.field("last"))
    assert _rows(trainer.split.table) == _rows(last)
    assert list(trainer.split.rows) == list(np.flatnonzero(ev.column("last").to_numpy()))
    s = result.summary
    assert s["rows_held_out"] == 80 and s["rows_learnt"] == 2 * (len(ev) - 80)  # 2 epochs
    assert s["rows_read"] == len(ev)
    assert "holdout_ndcg" in result.history[-1] and "holdout_auc" in result.history[-1]


def test_training_never_learns_the_held_out_rows(log, tmp_path):
    """The split run equals a run on the source without each user's last event, evaluated on
    those events as a validation source: same parameters, catalogue, metrics."""
    folder, ev = log
    split = train(_spec(folder, tmp_path / "split"))
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    rest = ev.filter(pc.invert(pc.field("last")))
    pq.write_table(rest, data / "train" / "a.parquet")
    pq.write_table(ev.filter(pc.field("last")), data / "last.parquet")
    plain = train(
        _spec(
            data / "train",
            tmp_path / "plain",
            validation={"source": {"path": str(data / "last.parquet")}, "metric": "ndcg"},
        )
    )
    assert_same_state(_state(plain.model), _state(split.model))
    for a, b in zip(plain.history, split.history, strict=True):
        # (holdout sums are over batches of other sizes: equal up to rounding)
        assert set(a) == set(b)
        for key in set(a) - {"seconds"}:
            assert a[key] == (b[key] if isinstance(b[key], str) else pytest.approx(b[key])), key


@pytest.mark.parametrize("cache", [True, False])
def test_interrupted_and_resumed_split_run_is_exact(log, tmp_path, cache):
    folder, _ = log
    over = {"cache": {"enabled": cache}}
    ref = train(_spec(folder, tmp_path / "ref", **over))
    ck = {"checkpoint": {"enabled": True, "dir": str(tmp_path / "ck")}}
    spec = _spec(folder, tmp_path / "run", **ck, **over)
    stops = iter([150, 600, 1000])
    limit = [next(stops)]
    trainer = None

    def progress(event):
        if event.get("rows", 0) >= limit[0] and trainer is not None:
            trainer.request_stop()

    interrupted = 0
    for _ in range(4):
        trainer = Trainer(spec, progress, resume=trainer is not None)
        result = trainer.run_training()
        if result.summary["interrupted"] is False:
            break
        interrupted += 1
        limit[0] = next(stops, 10**9)
    assert interrupted >= 2
    assert_same_state(_state(ref.model), _state(result.model))
    assert [r["holdout_ndcg"] for r in ref.history] == [r["holdout_ndcg"] for r in result.history]
    assert result.summary["rows_learnt"] == ref.summary["rows_learnt"]


def test_non_positive_and_bad_rows_are_not_held_out(tmp_path):
    rows = [
        ("u1", "a", 5), ("u2", "b", 4), ("u1", "b", 5), ("u2", "a", 1), ("u1", "c", None),
        ("u3", "c", 2),
    ]  # fmt: skip
    t = pa.table(
        {
            "user": [r[0] for r in rows],
            "item": [r[1] for r in rows],
            "genre": ["g"] * len(rows),
            "rating": pa.array([r[2] for r in rows], pa.float64()),
        }
    )
    pq.write_table(t, tmp_path / "ev.parquet")
    spec = ranking_spec(
        source={"path": str(tmp_path / "ev.parquet"), "on_bad_rows": "skip"},
        target={"column": "rating", "positive": [4, 5]},
        validation=SPLIT,
        output={"dir": str(tmp_path / "out")},
    )
    trainer = Trainer(spec)
    trainer.run_training()
    # u1: its last usable positive is (u1, b) (the last row has no rating); u2: (u2, b);
    # u3 has no positive
    assert list(trainer.split.rows) == [1, 2]
    assert trainer.split.table.column("item").to_pylist() == ["b", "b"]


def test_no_usable_event_gives_an_empty_holdout(tmp_path):
    t = pa.table(
        {
            "user": ["u1", "u2"],
            "item": ["a", "b"],
            "genre": ["g", "g"],
            "rating": pa.array([1.0, 2.0]),
        }
    )
    pq.write_table(t, tmp_path / "ev.parquet")
    spec = ranking_spec(
        source={"path": str(tmp_path / "ev.parquet")},
        target={"column": "rating", "positive": [4, 5]},
        validation=SPLIT,
        output={"dir": str(tmp_path / "out")},
    )
    result = train(spec)
    assert result.summary["rows_held_out"] == 0
    assert "holdout_ndcg" in result.history[-1]
