"""Data-parallel training on a local Dask cluster of two worker processes."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

pytest.importorskip("distributed")

from streamfm.datasets import make_planted_fm  # noqa: E402
from streamfm.distributed import (  # noqa: E402
    DistributedTrainer,
    combine_learners,
    connect,
    train_distributed,
)
from streamfm.errors import SpecError  # noqa: E402
from streamfm.spec import parse_spec  # noqa: E402
from streamfm.training.loop import train  # noqa: E402


def write_libfm(path, X, y):
    with open(path, "w") as f:
        for r in range(X.shape[0]):
            a, b = X.indptr[r], X.indptr[r + 1]
            f.write(
                f"{y[r]:.6g} "
                + " ".join(f"{j}:{v:.6g}" for j, v in zip(X.indices[a:b], X.data[a:b], strict=True))
                + "\n"
            )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    X, y, _truth = make_planted_fm(24_000, n_features=400, k=4, nnz_per_row=4, noise=0.1, seed=11)
    for i in range(4):  # four files: two shares of two files
        rows = slice(i * 5_000, (i + 1) * 5_000)
        write_libfm(folder / f"train-{i}.libfm", X[rows], y[rows])
    write_libfm(folder / "test.libfm", X[20_000:], y[20_000:])
    return folder


@pytest.fixture(scope="module")
def client():
    c, cluster = connect("local:2", 2)
    yield c
    c.close()
    cluster.close()


def spec_of(data, tmp_path, sync=2_000, **learner):
    return parse_spec(
        {
            "source": {"path": str(data / "train-*.libfm"), "batch_size": 1000},
            "model": {"k": 4, "seed": 1},
            "learner": {"optimizer": "adagrad", "learning_rate": 0.1, "epochs": 3, **learner},
            "validation": {"source": {"path": str(data / "test.libfm")}},
            "output": {"dir": str(tmp_path / "out")},
            "distributed": {"sync_every_rows": sync},
        }
    )


def test_distributed_model_is_close_to_the_single_process_one(data, tmp_path, client):
    spec = spec_of(data, tmp_path, sync=2_000, epochs=16)  # both near the noise floor (0.1)
    one = train(
        spec.model_copy(
            update={"output": spec.output.model_copy(update={"dir": str(tmp_path / "one")})}
        )
    )
    many = DistributedTrainer(spec, client).train()
    rmse_one = one.history[-1]["holdout_rmse"]
    rmse_many = many.history[-1]["holdout_rmse"]
    assert abs(rmse_many - rmse_one) <= 0.01, (rmse_one, rmse_many)
    s = many.summary
    assert s["rows_learnt"] == 16 * 20_000 and s["rows_read"] == 20_000
    assert s["distributed"]["shares"] == 2 and s["distributed"]["rounds"] >= 16 * 5
    # Every task used the vocabulary the driver assembled: one digest only.
    assert s["distributed"]["vocabularies_seen"] == 1
    assert many.model.learner.params.n_features == one.model.learner.params.n_features


def test_same_spec_same_model(data, tmp_path, client):
    a = DistributedTrainer(spec_of(data, tmp_path / "a", epochs=1), client).train()
    b = DistributedTrainer(spec_of(data, tmp_path / "b", epochs=1), client).train()
    np.testing.assert_array_equal(a.model.learner.params.V, b.model.learner.params.V)


@pytest.fixture()
def own_client():
    """A cluster of its own for a test that kills a worker (the shared one stays whole: a
    restarting worker on a loaded machine made later tests of the module wait for it)."""
    c, cluster = connect("local:2", 2)
    yield c
    c.close()
    cluster.close()


def test_a_killed_worker_does_not_lose_the_run(data, tmp_path, own_client):
    client = own_client
    ref = DistributedTrainer(spec_of(data, tmp_path / "ref", epochs=1), client).train()

    def kill_one(trainer, round_number):
        if round_number == 2:
            worker = sorted(trainer.client.scheduler_info()["workers"])[0]
            with contextlib.suppress(Exception):  # the worker dies while answering
                trainer.client.run(os._exit, 1, workers=[worker])

    got = DistributedTrainer(spec_of(data, tmp_path / "kill", epochs=1), client, on_round=kill_one)
    result = got.train()
    # Tasks are pure: the lost ones ran again elsewhere, and the model is the same.
    np.testing.assert_array_equal(result.model.learner.params.V, ref.model.learner.params.V)
    assert result.summary["rows_learnt"] == 20_000


def test_resume_from_a_round_checkpoint_ends_where_an_uninterrupted_run_ends(
    data, tmp_path, client
):
    ref = DistributedTrainer(spec_of(data, tmp_path / "ref", epochs=1), client).train()

    class Stop(Exception):
        pass

    def stop(trainer, round_number):
        if round_number == 3:
            raise Stop

    spec = spec_of(data, tmp_path / "cut", epochs=1)
    with pytest.raises(Stop):
        DistributedTrainer(spec, client, on_round=stop).train()
    trainer = DistributedTrainer(spec, client, resume=True)
    resumed = trainer.train()
    assert any("resumed from" in n for n in trainer.notes)
    np.testing.assert_array_equal(resumed.model.learner.params.V, ref.model.learner.params.V)


def test_each_worker_gets_its_own_copy_and_nothing_is_broadcast(
    data, tmp_path, client, monkeypatch
):
    """scatter(broadcast=True) and the Active Memory Manager (on by default) can wait on each
    other for ever (dask distributed #8796; it hung this suite once): rounds send one copy of
    the vocabulary and the parameters to each worker instead."""
    calls = []
    scatter = client.scatter

    def recording(data, *args, **kwargs):
        calls.append(kwargs)
        return scatter(data, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", recording)
    result = DistributedTrainer(spec_of(data, tmp_path, epochs=1), client).train()
    assert result.summary["rows_learnt"] == 20_000
    assert calls and not any(kw.get("broadcast") for kw in calls)
    workers = sorted(client.nthreads())
    sent_to = [tuple(kw["workers"]) for kw in calls]
    rounds = result.summary["distributed"]["rounds"]
    # the vocabulary once per worker, then each round's parameters once per worker
    assert sorted(sent_to) == sorted([(w,) for w in workers] * (rounds + 1))


def test_a_round_sent_to_a_worker_the_scheduler_just_dropped_is_sent_again(
    data, tmp_path, client, monkeypatch
):
    """The scheduler answers a scatter to a worker it has just removed with KeyError (a CI run
    after a worker was killed): the round's copies go out again to the workers listed anew."""
    ref = DistributedTrainer(spec_of(data, tmp_path / "ref", epochs=1), client).train()
    scatter = client.scatter
    calls = []

    def dropping(data, *args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 4:  # the first round's parameters, to the second worker
            raise KeyError(kwargs["workers"][0])
        return scatter(data, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", dropping)
    result = DistributedTrainer(spec_of(data, tmp_path / "again", epochs=1), client).train()
    assert len(calls) > 4
    np.testing.assert_array_equal(result.model.learner.params.V, ref.model.learner.params.V)
    assert result.summary["rows_learnt"] == 20_000


def test_causal_builders_are_refused(data, tmp_path):
    spec = parse_spec(
        {
            "source": {"path": str(data / "train-*.libfm")},
            "features": [{"type": "implicit", "key": "label", "items": "label"}],
            "output": {"dir": str(tmp_path / "out")},
        }
    )
    with pytest.raises(SpecError, match="source: causal"):
        train_distributed(spec, "local:1")


def test_a_round_adds_the_changes_of_every_task():
    def state(v, t, lo, hi):
        return {
            "t": t,
            "target_range": [lo, hi],
            "params": {
                "w0": np.array([v], np.float32),
                "w": np.full(2, v, np.float32),
                "V": np.full((2, 1), v, np.float32),
            },
        }

    base = state(0.0, 10, 1.0, 4.0)
    base["params"]["w0"][:] = 1.0
    out = combine_learners(
        base,
        [
            (1, state(1.0, 11, 1.0, 5.0)),
            (3, state(3.0, 13, 0.5, 4.0)),
            (0, state(9.0, 10, None, None)),
        ],
    )
    assert out["params"]["w"].tolist() == [4.0, 4.0]  # 0 + 1 + 3; the idle task adds nothing
    # w0: base 1 + (1 x (1 - 1) + 3 x (3 - 1)) / 4 = 2.5, the row-weighted mean change
    assert out["params"]["w0"].tolist() == [2.5]
    assert out["t"] == 14
    assert out["target_range"] == [0.5, 5.0]


def test_the_cli_trains_on_a_local_cluster(data, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    spec = {
        "source": {"path": str(data / "train-*.libfm")},
        "model": {"k": 4},
        "learner": {"optimizer": "adagrad", "learning_rate": 0.1, "epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    exe = Path(sys.executable).with_name("streamfm")
    r = subprocess.run(
        [str(exe), "train", str(tmp_path / "spec.yaml"), "-q", "--cluster", "local:2"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained 20,000 rows" in r.stdout
    assert (tmp_path / "out" / "model.sfm").exists()


def test_a_different_spec_on_the_same_cluster_is_not_learnt_with_the_last_one(
    data, tmp_path, client
):
    # Same files, so the same vocabulary: the workers' cached model must not be the last run's.
    fast = DistributedTrainer(spec_of(data, tmp_path / "a", epochs=1), client).train()
    slow_spec = spec_of(data, tmp_path / "b", epochs=1, learning_rate=0.02)
    slow = DistributedTrainer(slow_spec, client).train()
    assert not np.array_equal(fast.model.learner.params.V, slow.model.learner.params.V)
    fresh, cluster = connect("local:2", 2)  # workers that never saw the first run
    try:
        again = DistributedTrainer(slow_spec, fresh).train()
    finally:
        fresh.close()
        cluster.close()
    np.testing.assert_array_equal(slow.model.learner.params.V, again.model.learner.params.V)


def test_workers_of_two_threads_give_the_model_of_single_threaded_ones(data, tmp_path, client):
    from distributed import Client, LocalCluster

    ref = DistributedTrainer(spec_of(data, tmp_path / "ref", epochs=1), client).train()
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as threaded,
    ):
        got = DistributedTrainer(spec_of(data, tmp_path / "t", epochs=1), threaded).train()
    # Two shares' tasks ran side by side in one process, each with a learner of its own.
    np.testing.assert_array_equal(got.model.learner.params.V, ref.model.learner.params.V)


def _share_inputs(data, tmp_path):
    """What the driver sends a share's first task: spec, vocabulary, token, learner state."""
    from streamfm.distributed import file_vocabulary, merge_vocabularies
    from streamfm.store.trained import TrainedModel

    spec = spec_of(data, tmp_path, epochs=1)
    spec_json = spec.model_dump(mode="json")
    files = [str(data / "train-0.libfm"), str(data / "train-1.libfm")]
    model = TrainedModel.from_spec(spec)
    merge_vocabularies(model.pipeline, [file_vocabulary(spec_json, f) for f in files])
    space = model.pipeline.space
    model.learner.params.ensure_features(space.n_ids)
    model.learner.params.group[: space.n_ids] = space.id_group[: space.n_ids]
    features = model.pipeline.state_dict()
    return spec_json, features, model.learner.state_dict(), files


def test_a_share_s_next_task_reads_on_where_the_last_one_stopped(data, tmp_path, monkeypatch):
    import streamfm.distributed as dist
    from streamfm.sources.base import Reader

    spec_json, features, learner, files = _share_inputs(data, tmp_path)
    start = {"done": [], "current": None}
    opened = []
    real_read = Reader.read

    def read(self, path, columns=None, start=None, **kw):
        opened.append((path, None if start is None else start.row))
        return real_read(self, path, columns, start, **kw)

    monkeypatch.setattr(Reader, "read", read)
    dist._WORKER_RUNS.clear()
    first = dist.learn_share(spec_json, features, "run-a", learner, files, start, 3_000)
    assert first["stream"]["current"]["row"] == 3_000 and not first["finished"]
    assert opened == [(files[0], None)]
    second = dist.learn_share(
        spec_json, features, "run-a", first["learner"], files, first["stream"], 3_000
    )
    # The reader left open went on: the file was not opened again and read up to row 3,000.
    assert opened == [(files[0], None), (files[1], None)]
    current = second["stream"]["current"]
    assert (current["path"], current["row"]) == (files[1], 1_000)

    # A worker without that reader (a new one, or the task retried elsewhere) resumes at the
    # position and gives the same result.
    dist._WORKER_RUNS.clear()
    opened.clear()
    again = dist.learn_share(
        spec_json, features, "run-a", first["learner"], files, first["stream"], 3_000
    )
    assert opened == [(files[0], 3_000), (files[1], None)]
    assert again["stream"] == second["stream"] and again["read"] == second["read"] == 3_000
    for name in ("w0", "w", "V", "acc_w", "acc_V"):
        np.testing.assert_array_equal(
            again["learner"]["params"][name], second["learner"]["params"][name]
        )


@pytest.mark.parametrize("held", [1 << 20, 300])  # keys held before adding: the file's, or a few
def test_the_vocabulary_pass_gives_the_ids_a_training_transform_gives(tmp_path, monkeypatch, held):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import streamfm.distributed as dist
    from streamfm.distributed import file_vocabulary
    from streamfm.features.pipeline import FeaturePipeline

    monkeypatch.setattr(dist, "VOCABULARY_KEYS", held)

    rng = np.random.default_rng(3)
    n = 5_000
    table = pa.table(
        {
            "user": rng.integers(0, 700, n),
            "item": [f"i{v}" for v in rng.integers(0, 300, n)],
            "tags": [[f"t{t}" for t in rng.integers(0, 50, rng.integers(0, 4))] for _ in range(n)],
            "age": rng.uniform(10, 80, n),
            "y": rng.uniform(1, 5, n),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1_500)
    spec = parse_spec(
        {
            "source": {"path": str(tmp_path / "t.parquet"), "batch_size": 700},
            "target": "y",
            "features": [
                {"type": "categorical", "columns": ["user"]},
                {"type": "categorical", "columns": ["user", "item"]},  # a cross
                {"type": "set", "column": "tags"},  # several keys a row, some rows none
                {"type": "numeric", "columns": ["age"], "bins": [20, 40, 60]},  # reserved ids
                {"type": "categorical", "columns": ["item"]},
            ],
            "output": {"dir": str(tmp_path / "out")},
        }
    )
    got = file_vocabulary(spec.model_dump(mode="json"), str(tmp_path / "t.parquet"))
    pipeline = FeaturePipeline.from_specs(spec.builders())
    for batch in pq.ParquetFile(tmp_path / "t.parquet").iter_batches(batch_size=700):
        pipeline.transform(batch, training=True)
    for g, (ids, keys) in enumerate(got):
        want_ids, want_keys = pipeline.space.vocabulary(g)
        # Per group, the same keys in the same order of ids (the driver numbers them anew).
        assert keys.take(np.argsort(ids)).equals(want_keys.take(np.argsort(want_ids))), g


def test_local_workers_keep_glibc_s_malloc_defaults(monkeypatch):
    # Dask's nanny would set MALLOC_TRIM_THRESHOLD_=65536 (a task learnt 1.6x slower with it).
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    c, cluster = connect("local:1", 1)
    try:
        seen = c.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    finally:
        c.close()
        cluster.close()
    assert set(seen.values()) == {None}
