"""The prefetch thread: same items in the same order, errors where they happened, a consistent
pause."""

import threading
import time

import pytest

from streamfm.training.prefetch import Prefetcher


def counting(n, state, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad item {i}")
        state["produced"] = i + 1  # updated before the yield, as the loop's stages do
        yield i


def test_items_arrive_in_order_and_end():
    state = {}
    p = Prefetcher(counting(50, state), depth=3)
    assert list(p) == list(range(50))
    with pytest.raises(StopIteration):
        next(p)
    p.close()


def test_an_error_is_raised_after_the_items_before_it():
    p = Prefetcher(counting(10, {}, fail_at=6), depth=2)
    got = []
    with pytest.raises(ValueError, match="bad item 6"):
        for item in p:
            got.append(item)
    assert got == list(range(6))
    p.close()


def test_paused_state_matches_the_items_produced():
    state = {}
    p = Prefetcher(counting(1000, state), depth=4)
    consumed = 0
    for item in p:
        consumed += 1
        if item % 97 == 0:
            with p.paused() as pending:
                # Everything produced is either consumed or pending, and nothing moves.
                produced = state["produced"]
                assert produced == consumed + len(pending)
                assert pending == list(range(consumed, produced))
                assert len(pending) <= 4
                time.sleep(0.002)
                assert state["produced"] == produced
    assert consumed == 1000
    p.close()


def test_the_producer_runs_ahead_at_most_depth_items():
    state = {}
    p = Prefetcher(counting(100, state), depth=2)
    assert next(p) == 0
    time.sleep(0.05)
    assert state["produced"] <= 1 + 2
    p.close()


def test_close_stops_a_producer_waiting_for_room():
    started = threading.Event()

    def endless():
        started.set()
        i = 0
        while True:
            yield i
            i += 1

    p = Prefetcher(endless(), depth=1)
    started.wait(1)
    p.close()  # returns: the producer was waiting for the consumer


def test_close_returns_the_items_not_consumed():
    state = {}
    p = Prefetcher(counting(100, state), depth=4)
    assert next(p) == 0
    deadline = time.monotonic() + 10
    while len(p._pending) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    pending = p.close()
    assert pending == [1, 2, 3, 4] and state["produced"] == 5


# --- the training loop reading ahead


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    import pyarrow.parquet as pq

    from streamfm.datasets import make_event_log

    folder = tmp_path_factory.mktemp("prefetch-data")
    log, _ = make_event_log(n_users=200, n_items=120, n_events=12_000, seed=7)
    for i in range(3):
        pq.write_table(log.slice(3_000 * i, 3_000), folder / f"train-{i}.parquet")
    pq.write_table(log.slice(9_000), folder / "test.parquet")
    return folder


def spec_of(events, out, prefetch, **learner):
    from streamfm.spec import parse_spec

    return parse_spec(
        {
            "source": {
                "path": str(events / "train-*.parquet"),
                "batch_size": 250,
                "prefetch": prefetch,
            },
            "target": "rating",
            "features": [
                {"type": "mf"},
                {"type": "implicit", "key": "user", "items": "item", "max_items": 20},
            ],
            "model": {"k": 4, "seed": 3},
            "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 2, **learner},
            "validation": {"source": {"path": str(events / "test.parquet")}},
            "checkpoint": {"every_rows": 1_000, "keep": 2},
            "output": {"dir": str(out), "progress_every_seconds": 1e-6},
        }
    )


def arrays(result):
    from streamfm.store.archive import read_archive

    return read_archive(result.model_path)[1]


def assert_same(a, b):
    import numpy as np

    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize(
    "learner", [{}, {"shuffle_buffer": 700}, {"shuffle_buffer": 700, "epochs": 3}]
)
def test_reading_ahead_learns_the_model_of_sequential_reading(events, tmp_path, learner):
    from streamfm.training.loop import train

    one = train(spec_of(events, tmp_path / "seq", 0, **learner))
    ahead = train(spec_of(events, tmp_path / "ahead", 3, **learner))
    assert_same(arrays(one), arrays(ahead))
    assert one.history[-1]["holdout_rmse"] == ahead.history[-1]["holdout_rmse"]


def test_reading_ahead_off_where_it_would_change_the_run(events, tmp_path):
    from streamfm.training.loop import Trainer

    spec = spec_of(events, tmp_path, 3)
    assert Trainer(spec)._prefetch_depth == 3
    cadence = spec.model_copy(
        update={"validation": spec.validation.model_copy(update={"every_rows": 500})}
    )
    assert Trainer(cadence)._prefetch_depth == 0


@pytest.mark.parametrize(
    ("cache", "epoch", "rows"), [(True, 0, 4_000), (False, 0, 4_000), (False, 1, 13_000)]
)
def test_an_interrupted_run_keeps_the_chunks_read_ahead_and_resumes_exactly(
    events, tmp_path, cache, epoch, rows
):
    from streamfm.store.checkpoint import Checkpointer
    from streamfm.training.loop import Trainer, train

    ref = train(spec_of(events, tmp_path / "ref", 4, shuffle_buffer=700))
    spec = spec_of(events, tmp_path / "cut", 4, shuffle_buffer=700)
    spec = spec.model_copy(update={"cache": spec.cache.model_copy(update={"enabled": cache})})
    trainer = None

    def progress(event):
        # Stop once the reading thread has filled its queue: the checkpoint written then holds
        # chunks read ahead and not learnt (epoch 2 without a cache reads the files again).
        if trainer.run.epoch == epoch and trainer.run.rows_learnt >= rows:
            p = trainer._prefetcher
            deadline = time.monotonic() + 20
            while p is not None and len(p._pending) < 4 and time.monotonic() < deadline:
                time.sleep(0.005)
            trainer.request_stop()

    trainer = Trainer(spec, progress)
    cut = trainer.run_training()
    assert cut.summary["interrupted"]
    state = Checkpointer(spec.checkpoint_dir()).latest_good().state
    assert state["read_ahead"]["rows"] > 0
    resumed = train(spec, resume=True)
    assert_same(arrays(ref), arrays(resumed))
