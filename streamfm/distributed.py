"""Data-parallel training on a Dask cluster: workers learn shares of the files, the driver averages.

Each epoch, the source's files are dealt round-robin into shares (`distributed.workers` of them,
or the N of `--cluster local:N`; at most one per file), the same for the whole run. Training goes in rounds: every share's task learns up to `distributed.sync_every_rows`
rows from where its share stands, starting from the driver's parameters, and returns its
parameters; the driver adds up the changes the tasks made and the next round starts from the
result. A task is a pure function of its inputs, so a task lost with its worker is run
again by Dask elsewhere with the same result; and since results are combined in share order, a
run is deterministic (same spec, data and number of shares: the same model). The driver
checkpoints after every round; `--resume` continues from the last one.

Combining rule (every task of a round starts from the same parameters): w, V and AdaGrad's
squared-gradient sums change by the sum of the tasks' changes, w0 (and its sum) by their mean
weighted by the rows each task learnt. Summing is what one process would have done to first
order: a coordinate only one share touched moves exactly as its task moved it, and the
squared-gradient sums hold the totals a single process would have accumulated, so step sizes
shrink at its pace. w0 is touched by every case of every task, each task's change is already the
whole correction towards the mean target, and summing them would overshoot (measured: test RMSE
2.76 after one epoch of 2M planted rows on 2 shares). Plain model averaging (the mean of the
tasks' parameters) divides every step by the number of shares: on the dense planted data of
tests/test_distributed.py it reached test RMSE 0.129 after 16 epochs where one process reaches
0.109 and this rule is within 0.01 of it. Tasks do not see each other's changes until the next
round (staleness), so `sync_every_rows` trades communication for accuracy in early epochs. The
case counter adds up; the target range is the union.

Feature ids are the same on every worker: a first pass (one task per file) collects every file's
keys, the driver gives them ids file by file (in each file's order of first sight, builder by
builder) and sends the vocabulary to every worker once. Builders whose state evolves along the
stream (causal `implicit` sets, `numeric` standardize) and the shuffle window are refused: a worker
sees only its share of the stream.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.errors import CheckpointError, SpecError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.metrics import MetricSet
from streamfm.sources import SourceStream, open_source, resolve_files
from streamfm.spec import DistributedConfig, Spec, load_spec, parse_spec, spec_difference
from streamfm.store.checkpoint import Checkpointer
from streamfm.store.state import copy_state
from streamfm.store.trained import TrainedModel
from streamfm.training.badrows import BadRows
from streamfm.training.evaluation import Evaluation, write_history
from streamfm.training.loop import ProgressFn, TrainResult
from streamfm.training.targets import clean_batch, numeric_columns

CHECKPOINT_FORMAT = "streamfm-distributed-checkpoint"
PARAM_ARRAYS = ("w0", "w", "V", "acc_w0", "acc_w", "acc_V")
VOCABULARY_KEYS = 1 << 20  # distinct keys of batches a vocabulary task holds before adding them


# ----------------------------------------------------------------------------- checks


def check_distributable(spec: Spec) -> None:
    """SpecError naming what a distributed run cannot do with this spec."""
    if spec.learner.method not in ("sgd", "adagrad"):
        raise SpecError("distributed: only the sgd and adagrad learners train on a cluster")
    if spec.source.follow or spec.source.path == "-":
        raise SpecError(
            "distributed: a cluster trains on files; for follow mode or standard input train "
            "in one process"
        )
    if spec.learner.shuffle_buffer:
        raise SpecError(
            "learner.shuffle_buffer: not supported in distributed mode (set it to 0; shares are "
            "learnt in file order)"
        )
    if spec.source.on_bad_rows == "quarantine":
        raise SpecError(
            "source.on_bad_rows: quarantine is not supported in distributed mode (use skip or fail)"
        )
    if spec.output.window_rows:
        raise SpecError("output.window_rows: not supported in distributed mode (set it to 0)")
    for b in spec.builders():
        p = b.params
        if b.cls.kind == "implicit" and getattr(p, "source", None) == "causal":
            raise SpecError(
                f"features: '{b.name}' (implicit, source: causal) learns each key's history along "
                "the stream, which a worker sees only a share of: use source: table, or train in "
                "one process"
            )
        if b.cls.kind == "numeric" and getattr(p, "transform", None) == "standardize":
            raise SpecError(
                f"features: '{b.name}' (numeric, transform: standardize) learns running statistics "
                "along the stream: use transform raw / log1p / bins, or train in one process"
            )


def connect(address: str | None, workers: int):
    """(dask Client, LocalCluster or None): `address` "local" / "local:N" / None starts a local
    cluster of N (default `workers`) single-threaded worker processes; else the scheduler there."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SpecError("distributed training needs dask: pip install 'streamfm[dask]'") from None
    if address is None or address == "local" or address.startswith("local:"):
        n = int(address.split(":", 1)[1]) if address and ":" in address else workers
        if n < 1:
            raise SpecError(f"--cluster {address}: need at least one worker")
        import dask

        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes
        # glibc's mmap threshold at 128 KiB: every batch's arrays are then mapped and unmapped
        # afresh, and a task learns 1.6x slower (measured: 500k planted rows in 0.40 s instead
        # of 0.25 s). The workers of a local cluster keep glibc's defaults (or the variable as
        # this process's environment has it).
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            )
        return Client(cluster), cluster
    return Client(address), None


# ----------------------------------------------------------------------------- worker tasks


class _WorkerRun:
    """What a worker process keeps of the run it works for between tasks: models with the
    vocabulary loaded (one per task running at a time: a worker of several threads runs tasks
    side by side, and a task's learner is its own), the vocabulary's digest, and the shares'
    readers left open where their last task stopped (`_OpenShare`)."""

    def __init__(self, spec_json: dict[str, Any], features: dict[str, Any]) -> None:
        self.spec = _spec_of(spec_json)
        self.features = features
        self.idle: list[tuple[TrainedModel, str]] = []  # models not in use, their digests
        self.open: dict[tuple[str, ...], _OpenShare] = {}  # by the share's files
        self.lock = threading.Lock()

    @contextmanager
    def model(self) -> Iterator[tuple[TrainedModel, str]]:
        """A model of the run for one task, and the digest of its vocabulary."""
        with self.lock:
            item = self.idle.pop() if self.idle else None
        if item is None:
            model = TrainedModel.from_spec(self.spec)
            model.pipeline.load_state_dict(self.features)
            item = (model, vocabulary_digest(model.pipeline.space))
        try:
            yield item
        finally:
            with self.lock:
                self.idle.append(item)


class _OpenShare:
    """A share's reader suspended after the batch its last task learnt last: `state` is the
    SourceStream state it is at (the generator updates it), `bad` the BadRows the reader reports
    skipped rows to (the current task's)."""

    def __init__(self, reader: SourceStream, state: dict[str, Any], bad: BadRows) -> None:
        self.reader = reader
        self.state = state
        self.bad = bad
        self.batches = reader.batches(state)


_WORKER_RUNS: dict[str, _WorkerRun] = {}  # per worker process: the run it works for, by token
_WORKER_LOCK = threading.Lock()


def _spec_of(spec_json: dict[str, Any]) -> Spec:
    return parse_spec(spec_json, name=spec_json.get("name", "run"))


def _bad_rows(spec: Spec) -> BadRows:
    return BadRows("fail" if spec.source.on_bad_rows == "fail" else "skip", None)


def file_vocabulary(spec_json: dict[str, Any], path: str) -> dict[str, Any]:
    """Task: per feature group, the (ids, keys) one file's rows give (first-sight order).

    Only the keys are needed, not the design matrix: each batch's keys of a group are reduced
    to their distinct values in order of first appearance (Arrow's hash `unique`, on the form
    the space's key index compares: int64 or text), those of up to VOCABULARY_KEYS keys'
    worth of batches again, and only the result is looked up and added, so a group's ids come
    in the order `pipeline.transform(batch, training=True)` would give them."""
    spec = _spec_of(spec_json)
    pipeline = FeaturePipeline.from_specs(spec.builders())
    source = open_source(spec.source.model_copy(update={"path": path, "follow": False}))
    bad = _bad_rows(spec)
    if bad.policy != "fail":
        source.on_bad_row = bad.from_source
    columns = list(dict.fromkeys([*pipeline.columns(), spec.target.column]))
    source.column_types = numeric_columns(pipeline, spec.target, spec.task)
    space = pipeline.space
    pending: list[list[pa.Array]] = [[] for _ in space.groups]  # per group: distinct keys

    def add(g: int) -> None:
        parts = pending[g]
        if len(parts) > 1 and all(p.type == parts[0].type for p in parts):
            parts = [pc.unique(pa.concat_arrays(parts))]
        for part in parts:
            space.extend(g, part)
        pending[g] = []

    for batch, pos in source.batches(columns):
        batch, _y = clean_batch(
            batch, pipeline, spec.target, spec.task, bad, pos.path, source.batch_lines
        )
        for g, builder in enumerate(pipeline.builders):
            block = builder.build(batch, training=True)
            if block.keys is not None:
                pending[g].append(_distinct_keys(block.keys, space.groups[g]))
                if sum(len(p) for p in pending[g]) >= VOCABULARY_KEYS:
                    add(g)
    for g in range(len(space.groups)):
        add(g)
    return [space.vocabulary(g) for g in range(len(space.groups))]


def _distinct_keys(keys: pa.Array | np.ndarray, group: str) -> pa.Array:
    """The distinct keys of `keys` in order of first appearance, as the key index compares them
    (integers and booleans by int64 value, text and bytes by their bytes, anything else as
    text); ValueError on a null key, as `FeatureSpace.to_chunk` gives."""
    arr = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError(f"builder {group!r} emitted null keys")
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        arr = pc.cast(arr, pa.int64())
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)):
        arr = pc.cast(arr, pa.string())
    return pc.unique(arr)


def _worker_run(spec_json: dict[str, Any], features: dict[str, Any], token: str) -> _WorkerRun:
    with _WORKER_LOCK:
        run = _WORKER_RUNS.get(token)
        if run is None:
            _WORKER_RUNS.clear()  # one run per process at a time
            run = _WORKER_RUNS[token] = _WorkerRun(spec_json, features)
        return run


def _open_share(
    run: _WorkerRun,
    pipeline: FeaturePipeline,
    files: list[str],
    stream: dict[str, Any],
    bad: BadRows,
) -> _OpenShare:
    """The share's reader at `stream`: the one the last task on this worker left there if it is
    (then reading goes on without reopening and seeking the file), else a new one resuming at
    `stream`. Either yields the same batches (SourceStream resumes exactly after a batch)."""
    with run.lock:
        share = run.open.pop(tuple(files), None)
    if share is not None and share.state == stream:
        share.bad = bad
        return share
    spec = run.spec
    config = spec.source.model_copy(update={"path": list(files), "follow": False})
    columns = list(dict.fromkeys([*pipeline.columns(), spec.target.column]))
    holder: list[_OpenShare] = []
    reader = SourceStream(
        config,
        columns,
        on_bad_row=None if bad.policy == "fail" else (lambda row: holder[0].bad.from_source(row)),
        column_types=numeric_columns(pipeline, spec.target, spec.task),
    )
    share = _OpenShare(reader, copy_state(stream), bad)
    holder.append(share)
    return share


def learn_share(
    spec_json: dict[str, Any],
    features: dict[str, Any],
    token: str,
    learner_state: dict[str, Any],
    files: list[str],
    stream: dict[str, Any],
    max_rows: int,
) -> dict[str, Any]:
    """Task: learn up to `max_rows` rows of `files` from `stream` (a SourceStream state),
    starting from `learner_state`. Returns the learner's state, the stream's, the rows read and
    learnt, the skipped rows, the progressive metrics' state, whether the share is finished, and
    a digest of the vocabulary used (the same on every worker).

    `token` names the run (its spec and vocabulary): a worker builds the model once per run and
    keeps each share's reader open where its task stopped, for the share's next task."""
    run = _worker_run(spec_json, features, token)
    with run.model() as (model, vocabulary):
        spec, pipeline, learner = run.spec, model.pipeline, model.learner
        learner.load_state_dict(copy_state(learner_state))  # the task's input stays as it was
        space, params = pipeline.space, learner.params
        params.ensure_features(space.n_ids)
        params.group[: space.n_ids] = space.id_group[: space.n_ids]
        bad = _bad_rows(spec)
        share = _open_share(run, pipeline, files, stream, bad)
        progressive = MetricSet(spec.metric_names())
        read = learnt = 0
        finished = True
        for batch, pos in share.batches:
            read += batch.num_rows
            batch, y = clean_batch(
                batch, pipeline, spec.target, spec.task, bad, pos.path, share.reader.batch_lines
            )
            chunk = pipeline.transform(batch, training=False)
            if chunk.n_rows:
                progressive.update(y, learner.learn(chunk, y))
                learnt += chunk.n_rows
            if learnt >= max_rows:
                finished = False
                with run.lock:
                    run.open[tuple(files)] = share  # the share's next task goes on from here
                break
        learner.check_finite()
        return {
            "learner": copy_state(learner.state_dict()),
            "stream": copy_state(share.state),
            "read": read,
            "learnt": learnt,
            "skipped": bad.skipped,
            "metrics": progressive.state_dict(),
            "finished": finished,
            "vocabulary": vocabulary,
        }


def vocabulary_digest(space) -> str:
    """sha256 of a feature space's groups, keys and ids (equal digests: equal vocabularies)."""
    h = hashlib.sha256()
    for g, name in enumerate(space.groups):
        ids, keys = space.vocabulary(g)
        h.update(f"{name}\0".encode())
        h.update(ids.tobytes())
        h.update("\0".join(map(str, keys.to_pylist())).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the driver


def merge_vocabularies(
    pipeline: FeaturePipeline, per_file: list[list[tuple[np.ndarray, pa.Array]]]
) -> None:
    """Give `pipeline`'s space ids for every file's keys (per group: ids, keys), file by file."""
    space = pipeline.space
    for groups in per_file:
        for g, (ids, keys) in enumerate(groups):
            space.extend(g, keys.take(pa.array(np.argsort(ids, kind="stable"))))


def combine_learners(base: dict[str, Any], results: list[tuple[int, dict[str, Any]]]) -> dict:
    """The learner state after a round (see the module docstring). results: per task, (rows
    learnt, learner state); every task started from `base`."""
    results = [r for r in results if r[0] > 0]
    if not results:
        return base
    first = results[0][1]
    # The first task's state but for the arrays replaced below (not copied only to be dropped).
    out = copy_state({k: v for k, v in first.items() if k != "params"})
    params = out["params"] = {
        k: v if k in PARAM_ARRAYS else copy_state(v) for k, v in first["params"].items()
    }
    rows = np.array([r[0] for r in results], dtype=np.float64)
    for name in PARAM_ARRAYS:
        if name not in params:
            continue
        dtype = np.asarray(params[name]).dtype
        before = np.asarray(base["params"][name], dtype=np.float64)
        if name in ("w0", "acc_w0"):  # every case's coordinate: the row-weighted mean change
            deltas = np.array([np.asarray(r[1]["params"][name], np.float64) for r in results])
            deltas -= before
            params[name] = (before + np.tensordot(rows / rows.sum(), deltas, axes=1)).astype(dtype)
            continue
        # The sum of the changes, task by task (as a sum over a stacked axis adds them, without
        # stacking them): what one process would have done, to first order.
        change = np.asarray(results[0][1]["params"][name], dtype=np.float64) - before
        for r in results[1:]:
            delta = np.asarray(r[1]["params"][name], dtype=np.float64)
            delta -= before
            change += delta
        change += before
        params[name] = change.astype(dtype)
    out["t"] = int(base["t"]) + sum(int(r[1]["t"]) - int(base["t"]) for r in results)
    lows = [r[1]["target_range"][0] for r in results if r[1]["target_range"][0] is not None]
    highs = [r[1]["target_range"][1] for r in results if r[1]["target_range"][1] is not None]
    out["target_range"] = [min(lows) if lows else None, max(highs) if highs else None]
    return out


class DistributedTrainer:
    """One distributed run of a spec (see the module docstring)."""

    def __init__(
        self,
        spec: Spec,
        client,
        progress: ProgressFn | None = None,
        *,
        resume: bool = False,
        on_round=None,
        shares: int | None = None,
    ) -> None:
        check_distributable(spec)
        self.spec = spec
        self.client = client
        self.progress = progress
        self.resume = resume
        self.on_round = on_round  # called with (trainer, round number) after each round (tests)
        self.config = spec.distributed or DistributedConfig()
        self.shares = shares or self.config.workers
        self.out_dir = spec.output_dir()
        self.model = TrainedModel.from_spec(spec)
        self.evaluation = Evaluation(spec, self.model)
        self.checkpointer = Checkpointer(spec.checkpoint_dir(), spec.checkpoint.keep)
        self.spec_json = spec.model_dump(mode="json")
        self.files = resolve_files(spec.source)[0]
        self.progressive = MetricSet(spec.metric_names())
        self.run: dict[str, Any] = {
            "epoch": 0,
            "round": 0,
            "shares": None,  # [[files], ...], fixed for the whole run
            "streams": None,  # per share: SourceStream state of this epoch
            "finished": None,  # per share: done with this epoch
            "rows_read": 0,
            "rows_learnt": 0,
            "rows_skipped": 0,
            "complete": False,
        }
        self.vocabularies: set[str] = set()
        self._features_futures: dict[str, Any] = {}
        self.notes: list[str] = []
        self._start = 0.0

    # --- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec_json,
            "run": self.run,
            "learner": self.model.learner.state_dict(),
            "features": self.model.pipeline.state_dict(),
            "evaluation": self.evaluation.state_dict(),
            "progressive": self.progressive.state_dict(),
        }

    def _restore(self) -> bool:
        ck = self.checkpointer.latest_good()
        self.notes.extend(self.checkpointer.warnings)
        if ck is None:
            self.notes.append(
                f"no checkpoint in {self.checkpointer.dir}: starting from the beginning"
            )
            return False
        state = ck.state
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{ck.path} is not a checkpoint of a distributed run")
        diff = spec_difference(state["spec"], self.spec_json)
        if diff is not None:
            key, old, new = diff
            raise CheckpointError(
                f"the checkpoint {ck.path} was written with {key}={old!r} but the spec says "
                f"{new!r}: it cannot be resumed with this spec"
            )
        self.run = state["run"]
        self.model.pipeline.load_state_dict(state["features"])
        self.model.learner.load_state_dict(state["learner"])
        self.evaluation.load_state_dict(state["evaluation"])
        self.progressive.load_state_dict(state["progressive"])
        self.notes.append(
            f"resumed from {ck.path} at {self.run['rows_learnt']:,} learnt rows "
            f"(epoch {self.run['epoch'] + 1}, round {self.run['round']})"
        )
        return True

    # --- the run
    def train(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._start = time.perf_counter()
        if not (self.resume and self._restore()):
            self._collect_vocabulary()
        features = copy_state(self.model.pipeline.state_dict())
        vocabulary = vocabulary_digest(self.model.pipeline.space)
        self.vocabularies.add(vocabulary)
        # The run's name for the workers' caches (model, open readers): its vocabulary and spec.
        token = hashlib.sha256(
            (vocabulary + json.dumps(self.spec_json, sort_keys=True)).encode()
        ).hexdigest()
        run = self.run
        if run["shares"] is None:
            n = max(1, min(len(self.files), self.shares))
            run["shares"] = [self.files[i::n] for i in range(n)]
        while not run["complete"]:
            if run["streams"] is None:
                run["streams"] = [{"done": [], "current": None} for _ in run["shares"]]
                run["finished"] = [False for _ in run["shares"]]
            while not all(run["finished"]):
                self._round(features, token)
            self._end_epoch()
        self.model.learner.check_finite()
        if self.spec.checkpoint.enabled:
            self.checkpointer.write(self.state_dict())
        self.evaluation.restore_best()
        return self._save()

    def _collect_vocabulary(self) -> None:
        futures = [
            self.client.submit(file_vocabulary, self.spec_json, path, pure=False, retries=3)
            for path in self.files
        ]
        merge_vocabularies(self.model.pipeline, self.client.gather(futures))
        learner, space = self.model.learner, self.model.pipeline.space
        learner.params.ensure_features(space.n_ids)
        learner.params.group[: space.n_ids] = space.id_group[: space.n_ids]

    def _round(self, features: dict[str, Any], token: str) -> None:
        run = self.run
        # Views of the live arrays: they stay as they are until the merged state replaces them.
        base = self.model.learner.state_dict()
        todo = [i for i, done in enumerate(run["finished"]) if not done]
        results = self._gather_round(features, token, base, todo)
        for i, res in zip(todo, results, strict=True):
            run["streams"][i] = res["stream"]
            run["finished"][i] = res["finished"]
            if run["epoch"] == 0:
                run["rows_read"] += res["read"]
                run["rows_skipped"] += res["skipped"]
            run["rows_learnt"] += res["learnt"]
            self.progressive.merge_state_dict(res["metrics"])
            self.vocabularies.add(res["vocabulary"])
        merged = combine_learners(base, [(r["learnt"], r["learner"]) for r in results])
        self.model.learner.load_state_dict(merged)
        run["round"] += 1
        if self.spec.checkpoint.enabled:
            self.checkpointer.write(self.state_dict())
            if self.spec.checkpoint.publish:
                self._publish()
        self._report()
        if self.on_round is not None:
            self.on_round(self, run["round"])

    def _gather_round(self, features, token, base, todo) -> list[dict[str, Any]]:
        """The results of one round's tasks. The vocabulary is sent to each worker once, the
        round's starting parameters once per worker (not inside every task); a round whose copy
        of either went with a dead worker is run again with new ones (tasks are pure: the same
        results). Share i's tasks go to the i-th worker (by address) while it lives, where the
        share's reader stands open after its last task; any worker gives the same result.

        Each worker gets its own copy, scattered to it alone, rather than one copy broadcast
        to all: `scatter(broadcast=True)` and the Active Memory Manager's ReduceReplicas policy
        (on by default) undo each other's work, and the scatter can wait for ever (dask
        distributed #8796, seen here in the test suite)."""
        from distributed.client import FutureCancelledError

        for attempt in range(3):
            workers = self._workers()
            try:
                if attempt or set(self._features_futures) != set(workers):
                    self._features_futures = self._scatter_to_each(features, workers)
                base_futures = self._scatter_to_each(base, workers)
            # A worker left between listing and sending: a timeout, a closed connection, or the
            # scheduler's KeyError naming a worker it has already removed (seen in CI after a
            # worker was killed).
            except (TimeoutError, OSError, KeyError):
                if attempt == 2:
                    raise
                continue
            futures = []
            for i in todo:
                worker = workers[i % len(workers)]
                futures.append(
                    self.client.submit(
                        learn_share,
                        self.spec_json,
                        self._features_futures[worker],
                        token,
                        base_futures[worker],
                        self.run["shares"][i],
                        self.run["streams"][i],
                        self.config.sync_every_rows,
                        pure=False,
                        retries=3,
                        workers=[worker],
                        allow_other_workers=True,
                    )
                )
            try:
                return self.client.gather(futures)
            except FutureCancelledError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _workers(self) -> list[str]:
        """The addresses of the cluster's workers, sorted; waits for one if there is none."""
        workers = sorted(self.client.nthreads())
        if not workers:
            self.client.wait_for_workers(1)
            workers = sorted(self.client.nthreads())
        return workers

    def _scatter_to_each(self, data: Any, workers: list[str]) -> dict[str, Any]:
        """{address: future of `data` held by that worker}: one copy sent to each worker."""
        return {
            worker: self.client.scatter([data], workers=[worker], hash=False)[0]
            for worker in workers
        }

    def _end_epoch(self) -> None:
        run = self.run
        rec: dict[str, Any] = {
            "kind": "epoch",
            "epoch": run["epoch"] + 1,
            "rows": run["rows_learnt"],
            "seconds": round(time.perf_counter() - self._start, 3),
            **self.progressive.values(),
            **self.evaluation.holdout_scores("epoch", run["epoch"]),
        }
        self.evaluation.history.append(rec)
        if self.progress:
            self.progress({**self._event(), "record": rec})
        if self.evaluation.stopped_early or run["epoch"] + 1 >= self.spec.learner.epochs:
            run["complete"] = True
            return
        run["epoch"] += 1
        run["streams"] = run["finished"] = None
        self.progressive.reset()

    # --- output
    def _event(self) -> dict[str, Any]:
        run = self.run
        seconds = max(time.perf_counter() - self._start, 1e-9)
        metric = self.spec.metric_names()[0]
        return {
            "rows": run["rows_learnt"],
            "epoch": run["epoch"] + 1,
            "epochs": self.spec.learner.epochs,
            "rows_per_second": run["rows_learnt"] / seconds,
            "metric": metric,
            "value": self.progressive[metric].value(),
            "eta_seconds": None,
            "total_rows": None,
        }

    def _report(self) -> None:
        if self.progress:
            self.progress(self._event())

    def _summary(self) -> dict[str, Any]:
        run, ev = self.run, self.evaluation
        seconds = time.perf_counter() - self._start
        last = ev.history[-1] if ev.history else {}
        out = {
            "rows_read": run["rows_read"],
            "rows_learnt": run["rows_learnt"],
            "rows_skipped": run["rows_skipped"],
            "rows_quarantined": 0,
            "epochs": run["epoch"] + 1,
            "seconds": round(seconds, 3),
            "rows_per_second": round(run["rows_learnt"] / seconds, 1) if seconds > 0 else None,
            "features": int(self.model.learner.params.n_features),
            "stopped_early": ev.stopped_early,
            "distributed": {
                "shares": len(run["shares"] or []),
                "rounds": run["round"],
                "sync_every_rows": self.config.sync_every_rows,
                "vocabularies_seen": len(self.vocabularies),
            },
            **{f"progressive_{k}": v for k, v in last.items() if k in self.spec.metric_names()},
        }
        if ev.best_value is not None:
            out["best_" + self.spec.validation.metric] = ev.best_value
        return out

    def _publish(self) -> None:
        self.model.history = self.evaluation.history
        self.model.summary = self._summary()
        self.model.save(self.out_dir / self.spec.output.model)

    def _save(self) -> TrainResult:
        summary = {**self._summary(), "interrupted": False}
        summary["model_record"] = self.evaluation.saved_record()
        self.model.history = self.evaluation.history
        self.model.summary = summary
        path = self.out_dir / self.spec.output.model
        self.model.save(path)
        write_history(self.evaluation.history, self.out_dir)
        return TrainResult(self.model, path, self.evaluation.history, summary)


def train_distributed(
    spec: Spec | str | Path,
    cluster: str | None = None,
    overrides: list[str] | None = None,
    progress: ProgressFn | None = None,
    *,
    resume: bool = False,
    on_round=None,
) -> TrainResult:
    """Run a spec on a Dask cluster: `cluster` is a scheduler address, "local:N", or None for
    the spec's `distributed` section (a local cluster of `distributed.workers` by default)."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    check_distributable(spec)
    config = spec.distributed
    address = cluster if cluster is not None else (config.scheduler if config else None)
    workers = config.workers if config else 2
    client, local = connect(address, workers)
    try:
        local_n = (
            int(address.split(":", 1)[1]) if address and address.startswith("local:") else None
        )
        trainer = DistributedTrainer(
            spec, client, progress, resume=resume, on_round=on_round, shares=local_n
        )
        result = trainer.train()
    finally:
        client.close()
        if local is not None:
            local.close()
    result.summary["notes"] = trainer.notes
    return result
