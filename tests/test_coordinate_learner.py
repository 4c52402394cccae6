"""ALS / MCMC as learners: the on-disk column store, the learner against the in-memory driver,
holdout averaging, thinned samples, unseen keys, and the training loop (spec, resume, warm start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import yaml

from streamfm.config import LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk, to_chunk
from streamfm.datasets import make_event_log, make_planted_fm
from streamfm.errors import CheckpointError, SpecError
from streamfm.features.space import UNSEEN_ID
from streamfm.learners import coordinate as cd
from streamfm.learners.base import make_learner
from streamfm.learners.columns import ColumnStore, canonical_rows
from streamfm.spec import load_spec, parse_spec
from streamfm.store.archive import read_archive
from streamfm.store.trained import TrainedModel
from streamfm.training.loop import train

EXE = Path(sys.executable).with_name("streamfm")


def chunks_of(X, y, size):
    for a in range(0, X.shape[0], size):
        chunk, _ = to_chunk(X[a : a + size])
        yield chunk, y[a : a + size]


# --- the column store ----------------------------------------------------------------------------


def random_rows(n_rows=300, n_features=50, seed=0):
    """CSR rows with repeated ids inside rows, empty rows and unused features."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 7, n_rows)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = rng.integers(0, n_features - 5, indptr[-1]).astype(np.int32)
    values = rng.normal(size=indptr[-1]).astype(np.float32)
    return CSRChunk(indptr, indices, values)


@pytest.mark.parametrize("on_disk", [False, True])
def test_transposed_cache_gives_exactly_the_csr_it_came_from(tmp_path, on_disk):
    rows = random_rows()
    y = np.arange(rows.n_rows, dtype=np.float64)
    store = ColumnStore(tmp_path / "cols" if on_disk else None)
    for a in range(0, rows.n_rows, 37):  # appended in chunks
        part = slice(a, min(a + 37, rows.n_rows))
        sub = sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(rows.n_rows, 50))[part]
        store.append(CSRChunk(sub.indptr.astype(np.int64), sub.indices, sub.data), y[part])
    store.finalize(50)
    a = store.arrays()
    csr = sp.csr_matrix((a["values"], a["indices"], a["indptr"]), shape=(rows.n_rows, 50)).copy()
    csc = sp.csc_matrix((a["col_values"], a["row_index"], a["col_ptr"]), shape=(rows.n_rows, 50))
    want = sp.csr_matrix((rows.values, rows.indices, rows.indptr), shape=(rows.n_rows, 50))
    want.sum_duplicates()  # repeated ids of a row are summed (float32, in row order)
    np.testing.assert_array_equal(csr.toarray(), want.toarray())
    back = csc.tocsr()  # the transposed copy, transposed back: exactly the stored CSR
    back.sort_indices()
    csr.sort_indices()
    np.testing.assert_array_equal(back.indptr, csr.indptr)
    np.testing.assert_array_equal(back.indices, csr.indices)
    np.testing.assert_array_equal(back.data, csr.data)
    for j in range(50):  # rows ascending within every column
        col = a["row_index"][a["col_ptr"][j] : a["col_ptr"][j + 1]]
        assert (np.diff(col) > 0).all()
    np.testing.assert_array_equal(a["y"], y)
    assert a["e"].shape == a["q"].shape == (rows.n_rows,)
    if on_disk:
        assert {p.name for p in (tmp_path / "cols").iterdir()} >= {
            "indptr.i64", "indices.i32", "values.f32", "y.f64", "col_ptr.i64",
            "row_index.i32", "col_values.f32", "e.f64", "q.f64",
        }  # fmt: skip


def test_duplicate_ids_are_summed_in_place():
    chunk = CSRChunk(
        np.array([0, 3, 3, 5], dtype=np.int64),
        np.array([4, 1, 4, 2, 2], dtype=np.int32),
        np.array([1, 2, 3, 4, 5], dtype=np.float32),
    )
    out = canonical_rows(chunk)
    assert out.indptr.tolist() == [0, 2, 2, 3]
    assert out.indices.tolist() == [4, 1, 2] and out.values.tolist() == [4.0, 2.0, 9.0]


def test_store_resumes_mid_pass_and_refuses_changed_files(tmp_path):
    rows = random_rows(200)
    y = np.ones(200)
    half = [CSRChunk(rows.indptr[:101], rows.indices, rows.values)]
    rest_ptr = rows.indptr[100:] - rows.indptr[100]
    rest = CSRChunk(rest_ptr, rows.indices[rows.indptr[100] :], rows.values[rows.indptr[100] :])

    def full(folder):
        s = ColumnStore(folder)
        s.append(half[0], y[:100])
        s.append(rest, y[100:])
        s.finalize(50)
        return s

    straight = full(tmp_path / "straight")
    s = ColumnStore(tmp_path / "resumed")
    s.append(half[0], y[:100])
    state = s.state_dict()
    s.append(rest, y[100:])  # appended after the checkpoint, then the process dies
    s.close()
    again = ColumnStore(tmp_path / "resumed")
    again.load_state_dict(state)  # cuts the files back to the checkpoint
    again.append(rest, y[100:])
    again.finalize(50)
    for name, arr in straight.arrays().items():
        if name not in ("e", "q"):
            np.testing.assert_array_equal(again.arrays()[name], arr, err_msg=name)
    done = again.state_dict()

    def reopen(state):
        store = ColumnStore(tmp_path / "resumed")
        store.load_state_dict(state)  # verified and mapped when first used
        return store.arrays()

    np.testing.assert_array_equal(reopen(done)["row_index"], straight.arrays()["row_index"])
    # A changed byte, a missing or shorter file: refused, naming the file.
    path = tmp_path / "resumed" / "col_values.f32"
    blob = bytearray(path.read_bytes())
    blob[5] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"col_values\.f32.*checksum"):
        reopen(done)
    (tmp_path / "resumed" / "y.f64").write_bytes(b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"y\.f64.*has 8 bytes"):
        reopen(done)
    (tmp_path / "resumed" / "indices.i32").unlink()
    with pytest.raises(CheckpointError, match=r"indices\.i32.*missing"):
        reopen(done)


# --- the learner against the in-memory driver ----------------------------------------------------


def new_learner(method, task="regression", k=3, folder=None, **learner):
    lrn = make_learner(ModelConfig(k=k, seed=2), LearnerConfig(method=method, **learner), task)
    lrn.set_storage(folder)
    return lrn


@pytest.mark.parametrize(
    "method,task", [("als", "regression"), ("mcmc", "regression"), ("mcmc", "classification")]
)
@pytest.mark.parametrize("on_disk", [False, True])
def test_learner_equals_the_in_memory_driver(tmp_path, method, task, on_disk):
    X, y, _ = make_planted_fm(600, n_features=40, k=3, nnz_per_row=4, task=task, seed=11)
    groups = np.arange(40) % 3
    results = []
    for size in (600, 77):  # chunking changes nothing
        lrn = new_learner(
            method, task, folder=tmp_path / f"{size}" if on_disk else None, epochs=6,
            reg_linear=0.1, reg_factors=0.2,
        )  # fmt: skip
        lrn.params.ensure_features(40)
        lrn.params.group[:40] = groups
        for chunk, yy in chunks_of(X, y, size):
            lrn.learn(chunk, yy)
        records = [lrn.end_pass() for _ in range(6)]
        results.append((lrn, records))
    state = cd.initial_state(40, 3, 3, init_std=0.1, seed=2, reg=(0.0, 0.1, 0.2))
    kw = dict(method=method, task=task, k=3, seed=2, groups=groups, reg=(0.0, 0.1, 0.2))
    ref = cd.fit_coordinate(X, y, n_iter=6, state=state, **kw)
    for lrn, records in results:
        np.testing.assert_array_equal(lrn.params.V[:40], ref.state.V)
        np.testing.assert_array_equal(lrn.params.w[:40], ref.state.w)
        np.testing.assert_array_equal(lrn.params.w0, ref.state.w0)
        if method == "mcmc":
            np.testing.assert_array_equal(lrn.hyper["v_lambda"], ref.state.v_lambda)
        assert [r["iteration"] for r in records] == list(range(1, 7))
        if task == "regression":
            assert records[-1]["train_rmse"] == pytest.approx(ref.history[-1]["train"], rel=0.05)
    np.testing.assert_array_equal(results[0][0].params.V, results[1][0].params.V)


def test_holdout_average_is_libfms_running_mean_and_samples_are_thinned():
    X, y, _ = make_planted_fm(700, n_features=40, k=3, nnz_per_row=4, noise=0.3, seed=3)
    train_X, train_y, test_X = X[:600], y[:600], X[600:]
    lrn = new_learner("mcmc", epochs=12, mcmc={"burn_in": 2, "samples_kept": 4})
    lrn.params.ensure_features(40)
    for chunk, yy in chunks_of(train_X, train_y, 600):
        lrn.learn(chunk, yy)
    lo, hi = train_y.min(), train_y.max()
    per_sample, seen = [], []
    for it in range(12):
        lrn.end_pass()
        current = np.clip(lrn.decision_function(to_chunk(test_X)[0]), lo, hi) if it < 2 else None
        chunks = list(chunks_of(test_X, np.zeros(100), 30))
        avg = np.concatenate([lrn.predict_holdout(c, 30 * i) for i, (c, _) in enumerate(chunks)])
        again = np.concatenate(  # evaluated twice: each sample is added once
            [lrn.predict_holdout(c, 30 * i) for i, (c, _) in enumerate(chunks)]
        )
        np.testing.assert_array_equal(avg, again)
        p = lrn.params
        raw = np.empty(100)
        cd.predict_rows(*to_chunk(test_X)[0], p.w0, p.w, p.V, 0, lo, hi, False, raw)
        if it < 2:  # burn-in: the current parameters
            np.testing.assert_allclose(avg, current)
            continue
        per_sample.append(raw)
        seen.append(it)
        np.testing.assert_allclose(avg, np.mean(per_sample, axis=0), rtol=1e-12)
    # 10 samples after burn-in, 4 kept, spread evenly: thinning 3 keeps iterations 4, 7, 10 (and
    # would keep 13); the ring holds the latest four of the kept ones.
    assert lrn.thinning() == 3
    assert sorted(lrn.samples["iterations"]) == [4, 7, 10]
    state = lrn.state_dict()
    assert state["samples"]["V"].shape == (3, 40, 3) and state["samples"]["V"].dtype == np.float32
    pred = lrn.predict(to_chunk(test_X)[0])
    kept = [per_sample[seen.index(i)] for i in (4, 7, 10)]
    np.testing.assert_allclose(pred, np.mean(kept, axis=0), atol=1e-5)  # float32 samples


def test_unseen_keys_get_their_groups_prior_mean():
    X, y, _ = make_planted_fm(300, n_features=6, k=2, nnz_per_row=2, seed=3)
    lrn = new_learner("mcmc", k=2, epochs=3)
    lrn.params.ensure_features(6)
    lrn.params.group[:6] = [0, 0, 0, 1, 1, 1]
    for chunk, yy in chunks_of(X, y, 300):
        lrn.learn(chunk, yy)
    for _ in range(3):
        lrn.end_pass()
    h, p = lrn.hyper, lrn.params
    # Row: seen feature 0 (value 1) and an unseen key of group 1 (value 2).
    row = CSRChunk(
        np.array([0, 2], dtype=np.int64),
        np.array([0, UNSEEN_ID - 1], dtype=np.int32),
        np.array([1.0, 2.0], dtype=np.float32),
    )
    want = p.w0[0] + p.w[0] + 2 * h["w_mu"][1] + 2 * p.V[0] @ h["v_mu"][1]
    assert lrn._predict_params(row, raw=True)[0] == pytest.approx(want, rel=1e-12)
    als = new_learner("als", k=2, epochs=1)
    als.params.ensure_features(6)
    for chunk, yy in chunks_of(X, y, 300):
        als.learn(chunk, yy)
    als.end_pass()
    q = als.params
    assert als.decision_function(row)[0] == pytest.approx(q.w0[0] + q.w[0], rel=1e-12)


def test_a_learner_takes_its_rows_once():
    lrn = new_learner("als", epochs=2)
    lrn.params.ensure_features(3)
    chunk = CSRChunk(np.array([0, 1]), np.array([1], dtype=np.int32), np.ones(1, np.float32))
    lrn.learn(chunk, np.ones(1))
    lrn.end_pass()
    with pytest.raises(RuntimeError, match="fixed set of training rows"):
        lrn.learn(chunk, np.ones(1))
    with pytest.raises(IndexError, match="not allocated"):
        new_learner("als").learn(chunk, np.ones(1))


# --- through the training loop -------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coord-data")
    events, _ = make_event_log(n_users=200, n_items=100, n_events=12_000, seed=5)
    for i in range(2):
        pq.write_table(
            events.slice(5_000 * i, 5_000), folder / f"train-{i}.parquet", row_group_size=700
        )
    pq.write_table(events.slice(10_000), folder / "test.parquet")
    return folder


def spec_dict(data, out: Path, method="mcmc", **learner):
    return {
        "source": {"path": str(data / "train-*.parquet"), "batch_size": 900},
        "target": "rating",
        "features": [
            {"type": "mf"},
            {"type": "time", "column": "timestamp", "encodings": ["weekday"]},
        ],
        "model": {"k": 3, "seed": 3},
        "learner": {"method": method, "epochs": 8, **learner},
        "validation": {"source": {"path": str(data / "test.parquet")}},
        "checkpoint": {"every_rows": 1, "keep": 2},
        "output": {"dir": str(out)},
    }


def write_spec(data, folder: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict(data, folder / "out", **kw)))
    return path


@pytest.fixture(scope="module")
def mcmc_run(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcmc-run")
    spec = load_spec(write_spec(data, folder, mcmc={"burn_in": 2, "samples_kept": 3}))
    return folder, train(spec)


def test_a_spec_trains_mcmc_with_a_holdout_record_per_iteration(mcmc_run, data):
    folder, result = mcmc_run
    hist = result.history
    assert [r["iteration"] for r in hist] == list(range(1, 9))
    assert all("holdout_rmse" in r and "train_rmse" in r and "alpha" in r for r in hist)
    assert not any("rmse" in r or "window_rmse" in r for r in hist)  # no progressive metrics
    assert hist[-1]["holdout_rmse"] < hist[0]["holdout_rmse"]
    assert result.summary["rows_learnt"] == 10_000
    ckpt = folder / "out" / "checkpoints"
    assert not (ckpt / "learner").exists(), "the training rows are removed at the end"
    # The model file holds the thinned samples; predicting with it averages over them.
    model = TrainedModel.load(folder / "out" / "model.sfm")
    assert len(model.learner.samples["iterations"]) == 3
    scores = model.evaluate(load_spec(folder / "spec.yaml").validation.source)
    assert abs(scores["rmse"] - hist[-1]["holdout_rmse"]) < 0.02


def test_predict_and_evaluate_commands_average_the_samples(mcmc_run, data, tmp_path):
    folder, _ = mcmc_run
    model_file = folder / "out" / "model.sfm"
    env = {**os.environ}
    out = tmp_path / "pred.parquet"
    r = subprocess.run(
        [str(EXE), "predict", str(model_file), str(data / "test.parquet"), "-o", str(out)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = TrainedModel.load(model_file)
    want = model.predict_table(pq.read_table(data / "test.parquet"))
    np.testing.assert_array_equal(pq.read_table(out)["prediction"].to_numpy(), want)


def run_cli(*args, env=None):
    return subprocess.run(
        [str(EXE), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def model_arrays(folder: Path) -> dict:
    return read_archive(folder / "out" / "model.sfm")[1]


@pytest.mark.parametrize("seq,stage", [(4, "arrays"), (15, "latest")])
def test_kill_inside_a_checkpoint_then_resume_is_bit_identical(
    mcmc_run, data, tmp_path, seq, stage
):
    # Checkpoints 1-12 are written while the rows are read (after every chunk), the later ones
    # at iteration boundaries: a crash in the first pass, and one after iteration 3.
    ref_folder, _ = mcmc_run
    spec = write_spec(data, tmp_path, mcmc={"burn_in": 2, "samples_kept": 3})
    r = run_cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": f"{seq}:{stage}"})
    assert r.returncode == -signal.SIGKILL
    r = run_cli("train", spec, "--resume", "-q")
    assert r.returncode == 0, r.stderr
    ref, got = model_arrays(ref_folder), model_arrays(tmp_path)
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def kill_at_random_then_finish(spec: Path, timeouts) -> int:
    """`streamfm train spec --resume`, SIGKILLed when it runs longer than the next timeout (a
    run that finishes before two kills starts over from nothing); then, unless the last of them
    finished, one more resume that is left to finish. Returns the number of kills.

    Whatever the timeouts, the run ends with a resume that finished: under load, every attempt
    can be killed (the start-up alone can outlast the timeout), and the model file is then the
    one a killed run published with its last checkpoint (in the first pass: no MCMC
    hyper-parameters yet), not the final model."""
    out = spec.parent / "out"
    kills, finished = 0, False
    for timeout in timeouts:
        proc = subprocess.Popen(
            [str(EXE), "train", str(spec), "--resume", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            finished = False
            continue
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        finished = True
        if kills >= 2:
            break
        for p in out.rglob("*"):  # finished too soon: start over
            if p.is_file():
                p.unlink()
    if not finished:
        r = run_cli("train", spec, "--resume", "-q")
        assert r.returncode == 0, r.stderr
    return kills


def assert_same_model_and_history(ref_folder: Path, ref_history, folder: Path) -> None:
    import json

    ref, got = model_arrays(ref_folder), model_arrays(folder)
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    history = json.loads((folder / "out" / "metrics.json").read_text())
    assert [h["holdout_rmse"] for h in history] == [h["holdout_rmse"] for h in ref_history]


def test_sigkill_at_random_moments_then_resume_is_bit_identical(mcmc_run, data, tmp_path):
    ref_folder, ref_result = mcmc_run
    spec = write_spec(data, tmp_path, mcmc={"burn_in": 2, "samples_kept": 3})
    t0 = time.monotonic()
    timing = run_cli("train", spec, "-q", "--set", f"output.dir={tmp_path / 'timing'}")
    assert timing.returncode == 0, timing.stderr
    whole = time.monotonic() - t0
    rng = np.random.default_rng(7)
    kills = kill_at_random_then_finish(
        spec, (float(rng.uniform(0.3, 0.8 * whole)) for _ in range(30))
    )
    assert kills >= 2
    assert_same_model_and_history(ref_folder, ref_result.history, tmp_path)


def test_random_kills_that_stop_all_progress_still_end_with_a_finished_run(
    mcmc_run, data, tmp_path
):
    # What a loaded machine did to the test above: every attempt killed, the last model file
    # one published in the first pass (no learner/hyper/*). A crash after checkpoint 3, then
    # two attempts killed long before they can learn anything.
    ref_folder, ref_result = mcmc_run
    spec = write_spec(data, tmp_path, mcmc={"burn_in": 2, "samples_kept": 3})
    r = run_cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": "3:latest"})
    assert r.returncode == -signal.SIGKILL
    assert "learner/hyper/alpha" not in model_arrays(tmp_path)
    assert kill_at_random_then_finish(spec, [0.01, 0.01]) == 2
    assert_same_model_and_history(ref_folder, ref_result.history, tmp_path)


def test_resume_refuses_a_damaged_training_rows_file(data, tmp_path):
    spec = write_spec(data, tmp_path, method="als")
    r = run_cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": "15:latest"})
    assert r.returncode == -signal.SIGKILL
    path = tmp_path / "out" / "checkpoints" / "learner" / "row_index.i32"
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))
    r = run_cli("train", spec, "--resume", "-q")
    assert r.returncode == 1
    assert "row_index.i32" in r.stderr and "checksum" in r.stderr


def test_follow_and_stdin_are_refused_for_als_and_mcmc(data, tmp_path):
    base = spec_dict(data, tmp_path, method="als")
    with pytest.raises(SpecError, match="learner.method: als.*source.follow.*sgd, adagrad"):
        parse_spec({**base, "source": {**base["source"], "follow": True}, "learner": {
            "method": "als", "epochs": 1}})  # fmt: skip
    with pytest.raises(SpecError, match="standard input.*model.init_from"):
        parse_spec({**base, "source": {"path": "-", "format": "csv"}})
    r = run_cli("train", write_spec(data, tmp_path, method="mcmc", epochs=1), "--follow")
    assert r.returncode == 2 and "continual learning" in r.stderr


def test_optimizer_is_an_alias_of_method():
    assert LearnerConfig(optimizer="adagrad").method == "adagrad"
    assert LearnerConfig(method="adagrad").optimizer == "adagrad"
    assert LearnerConfig(method="mcmc").optimizer is None
    with pytest.raises(ValueError, match="older name of method"):
        LearnerConfig(optimizer="sgd", method="als")


def test_warm_start_from_sgd_into_mcmc_and_from_mcmc_into_sgd(mcmc_run, data, tmp_path):
    folder, _ = mcmc_run
    sgd_spec = spec_dict(data, tmp_path / "sgd", method="adagrad", epochs=2, learning_rate=0.05)
    sgd = train(parse_spec(sgd_spec))
    warm = spec_dict(data, tmp_path / "warm", method="mcmc", epochs=2)
    warm["model"]["init_from"] = str(sgd.model_path)
    result = train(parse_spec(warm))
    assert any("warm start" in n for n in result.summary["notes"])
    # Continual SGD from the MCMC model: the first holdout record is already good.
    cont = spec_dict(data, tmp_path / "cont", method="sgd", epochs=1, learning_rate=0.001)
    cont["model"]["init_from"] = str(folder / "out" / "model.sfm")
    cold = spec_dict(data, tmp_path / "cold", method="sgd", epochs=1, learning_rate=0.001)
    a, b = train(parse_spec(cont)), train(parse_spec(cold))
    assert a.history[-1]["holdout_rmse"] < b.history[-1]["holdout_rmse"] - 0.05
    bad = spec_dict(data, tmp_path / "bad", method="sgd", epochs=1)
    bad["model"] = {"k": 5, "init_from": str(folder / "out" / "model.sfm")}
    with pytest.raises(SpecError, match="model.init_from.*model.k"):
        train(parse_spec(bad))


def test_estimators_fit_mcmc_and_als(tmp_path):
    from streamfm.estimators import FMClassifier, FMRegressor

    X, y, truth = make_planted_fm(3000, n_features=60, k=3, nnz_per_row=4, noise=0.3, seed=2)
    trivial = np.sqrt(np.mean((y[2500:] - y[:2500].mean()) ** 2))
    m = FMRegressor(k=3, method="mcmc", n_iter=30, burn_in=10, samples_kept=5, seed=1)
    m.fit(X[:2500], y[:2500])
    rmse = np.sqrt(np.mean((m.predict(X[2500:]) - y[2500:]) ** 2))
    assert rmse < 0.6 * trivial and len(m.learner_.samples["iterations"]) == 5
    m.save(tmp_path / "m.sfm")
    again = FMRegressor.load(tmp_path / "m.sfm")
    np.testing.assert_array_equal(again.predict(X[2500:]), m.predict(X[2500:]))
    als = FMRegressor(k=3, method="als", n_iter=8, reg_factors=0.5).fit(X[:2500], y[:2500])
    assert np.sqrt(np.mean((als.predict(X[2500:]) - y[2500:]) ** 2)) < 0.6 * trivial
    with pytest.raises(SpecError, match="partial_fit"):
        FMRegressor(method="mcmc").partial_fit(X[:10], y[:10])
    Xc, yc, _ = make_planted_fm(3000, n_features=60, k=3, task="classification", seed=4)
    c = FMClassifier(k=3, method="mcmc", n_iter=20, burn_in=5).fit(Xc[:2500], yc[:2500])
    proba = c.predict_proba(Xc[2500:])[:, 1]
    assert ((proba > 0.5) == (yc[2500:] > 0)).mean() > 0.7


def test_resuming_a_complete_run_needs_no_training_rows(data, tmp_path):
    spec = write_spec(data, tmp_path, method="als", epochs=2)
    assert run_cli("train", spec, "-q").returncode == 0
    learner_dir = tmp_path / "out" / "checkpoints" / "learner"
    assert not learner_dir.exists()  # removed with the run complete
    r = run_cli("train", spec, "--resume", "-q")
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stderr and not learner_dir.exists()


def test_mcmc_on_two_threads_trains_the_model_of_one_thread(mcmc_run, data, tmp_path):
    """learner.threads: 2 runs each sweep's waves on two threads; the model file's arrays and
    the history's metrics are those of the one-thread run, bit for bit."""
    folder, result = mcmc_run
    spec = write_spec(data, tmp_path, mcmc={"burn_in": 2, "samples_kept": 3}, threads=2)
    two = train(load_spec(spec))
    want, got = model_arrays(folder), model_arrays(tmp_path)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert [r["holdout_rmse"] for r in two.history] == [r["holdout_rmse"] for r in result.history]
