"""The training loop: source -> feature pipeline -> learner, chunk by chunk, resumable.

Memory stays bounded: one source batch (plus a shuffle window) is in flight; the chunk cache lives
on disk. Every part whose state decides the next update has `state_dict()` / `load_state_dict()`
and is in every checkpoint (`Trainer.parts`), so a run killed at any moment and resumed ends
bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.csr import CSRChunk, slice_rows
from streamfm.errors import CheckpointError, DataError, SpecError
from streamfm.metrics import MetricSet
from streamfm.sources import STDIN, SourceStream, open_source
from streamfm.spec import Spec, load_spec, spec_difference
from streamfm.store.checkpoint import Checkpointer
from streamfm.store.state import copy_state
from streamfm.store.trained import TrainedModel
from streamfm.training.badrows import BadRows
from streamfm.training.evaluation import Evaluation, write_history
from streamfm.training.lock import DirectoryLock, remove_stale_temp_files
from streamfm.training.prefetch import Prefetcher, ReadAhead
from streamfm.training.replay import ChunkCache, Rebuild
from streamfm.training.runstate import RunState
from streamfm.training.shuffle import ShuffleWindow
from streamfm.training.signals import stop_on_signals
from streamfm.training.split import LeaveLastOut
from streamfm.training.targets import clean_batch, numeric_columns

__all__ = ["TrainResult", "Trainer", "TrainedModel", "train"]

ProgressFn = Callable[[dict[str, Any]], None]
CHECKPOINT_FORMAT = "streamfm-checkpoint"


@dataclass
class TrainResult:
    model: TrainedModel
    model_path: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """One training run of a spec: epochs over the source, validation and early stopping,
    checkpoints, and the final model and metric history."""

    def __init__(
        self, spec: Spec, progress: ProgressFn | None = None, *, resume: bool = False
    ) -> None:
        if spec.task == "ranking" and spec.distributed is not None:
            raise SpecError("distributed: task ranking trains on one machine only")
        self.spec = spec
        self.progress = progress
        self.resume = resume
        self.out_dir = spec.output_dir()
        self.model = TrainedModel.from_spec(spec)
        self.pipeline, self.learner = self.model.pipeline, self.model.learner
        self.columns = list(dict.fromkeys([*self.pipeline.columns(), *spec.target_columns()]))
        self.checkpointer = Checkpointer(spec.checkpoint_dir(), spec.checkpoint.keep)
        # A learner that keeps on-disk data of the run (ALS, MCMC: the training rows) keeps it in
        # the cache folder.
        self.learner.set_storage(self._cache_folder() / "learner")
        # --- the parts of the run state (all checkpointed)
        self.run = RunState(next_eval=spec.validation.every_rows or None)
        self.split = (
            LeaveLastOut(spec, self.pipeline) if spec.validation.split is not None else None
        )
        self.evaluation = Evaluation(spec, self.model, self.split)
        self.bad = BadRows(spec.source.on_bad_rows, self.out_dir / spec.output.quarantine)
        self.cache = self._make_cache()
        initial = copy_state([b.state_dict() for b in self.pipeline.builders])
        self.rebuild = Rebuild(spec.builders(), initial, self.pipeline.space)
        names = spec.metric_names()
        self.progressive = MetricSet(names)
        self.window = MetricSet(
            names if spec.output.window_rows else (), window=spec.output.window_rows
        )
        self.shuffle = self._new_shuffle()
        self.read_ahead = ReadAhead()
        # --- not checkpointed
        self._prefetch_depth = self._prefetch_depth_of(spec)
        self._prefetcher: Prefetcher | None = None
        self._paused = False
        # Reading ahead: (first id, groups) of the ids each chunk handed to the learner since
        # its last sync allocated, as the reading thread sent them.
        self._groups_read: list[tuple[int, np.ndarray]] = []
        self._stop = threading.Event()
        self._start = 0.0
        self._last_progress = 0.0
        self._last_ckpt_rows = 0
        self._last_ckpt_epoch = 0
        self._last_ckpt_time = 0.0
        self._known_rows: int | None = None
        self._rows_estimated = False
        self._locks: list[DirectoryLock] = []
        # A resumed run that was complete: what it had counted, to tell whether it learnt more.
        self._resumed_counts: tuple[int, ...] | None = None
        self._learnt_nothing = False
        # Set when a DataError stops the run with every part's state as it was after the last
        # chunk learnt (the error came before the failing batch changed anything).
        self._consistent_failure = False
        self.notes: list[str] = []
        if spec.learner.threads > 1 and spec.learner.method in ("sgd", "adagrad"):
            self.notes.append(
                f"learner.threads = {spec.learner.threads}: Hogwild training, the model is not "
                "bit for bit reproducible (threads: 1 is)"
            )

    def parts(self) -> dict[str, Any]:
        """Every stateful part of the run by name (what a checkpoint holds)."""
        parts = {
            "run": self.run,
            "learner": self.learner,
            "features": self.pipeline,
            "rebuild": self.rebuild,
            "evaluation": self.evaluation,
            "progressive": self.progressive,
            "window": self.window,
            "bad_rows": self.bad,
        }
        if self.cache is not None:
            parts["cache"] = self.cache
        if self.shuffle is not None:
            parts["shuffle"] = self.shuffle
        if self._prefetch_depth:
            parts["read_ahead"] = self.read_ahead
        if self.split is not None:
            parts["split"] = self.split
        for name, part in self.learner.training_parts().items():
            parts[f"learner_{name}"] = part
        return parts

    # ----------------------------------------------------------------------------- set-up
    def _cache_folder(self) -> Path:
        return Path(self.spec.cache.dir) if self.spec.cache.dir else self.spec.checkpoint_dir()

    def _make_cache(self) -> ChunkCache | None:
        enabled = self.spec.cache.enabled
        if enabled is None:
            enabled = self.spec.learner.epochs > 1
        if not enabled or self.spec.learner.epochs == 1 or not self.learner.replays_rows:
            return None
        return ChunkCache(self._cache_folder() / "chunks.npy")

    @staticmethod
    def _prefetch_depth_of(spec: Spec) -> int:
        """Batches to read ahead: source.prefetch, or 0 where reading ahead would change what
        the run does (follow mode and standard input check for checkpoints while waiting for
        rows; a cadence evaluation would see features of rows not learnt yet)."""
        paths = spec.source.path if isinstance(spec.source.path, list) else [spec.source.path]
        if spec.source.follow or STDIN in paths or spec.validation.every_rows:
            return 0
        return spec.source.prefetch

    def _new_shuffle(self) -> ShuffleWindow | None:
        size = self.spec.learner.shuffle_buffer
        return ShuffleWindow(size, self.spec.model.seed, self.run.epoch) if size else None

    def _source_rows(self) -> int | None:
        """Rows per epoch, for the percentage and ETA: as the files say without reading them
        (Parquet), or estimated from the size of text files (`_rows_estimated` is then True)."""
        if self.spec.source.follow or self.spec.source.path == STDIN:
            return None
        try:
            source = open_source(self.spec.source)
            rows = source.total_rows()
            if rows is None:
                from streamfm.progress import estimate_rows

                header = source.format == "csv" and self.spec.source.csv.header
                rows = estimate_rows(source.files, header=header)
                self._rows_estimated = rows is not None
            return rows
        except Exception:  # noqa: BLE001 - only an estimate; reading reports real problems
            return None

    def request_stop(self) -> None:
        """Finish the current chunk, write a checkpoint and return (used by signal handlers)."""
        self._stop.set()

    # ----------------------------------------------------------------------------- the loop
    def run_training(self) -> TrainResult:
        self._lock_directories()
        try:
            return self._run_locked()
        finally:
            for lock in self._locks:
                lock.release()
            self._locks = []

    def _lock_directories(self) -> None:
        """Lock every directory this run writes to (one trainer each), then remove what
        killed runs of ours left there (temporary files of atomic writes)."""
        dirs = [self.out_dir]
        if self.spec.checkpoint.enabled:
            dirs.append(self.checkpointer.dir)
        if self.cache is not None:
            dirs.append(self.cache.path.parent)
        seen: set[Path] = set()
        for d in dirs:
            key = d.resolve()
            if key in seen:
                continue
            seen.add(key)
            lock = DirectoryLock(d)
            lock.acquire()
            self._locks.append(lock)
        stale = remove_stale_temp_files(
            self.out_dir, [self.spec.output.model, "metrics.json", "metrics.csv"]
        ) + remove_stale_temp_files(self.checkpointer.dir, ["latest"])
        if stale:
            self.notes.append(
                f"removed {len(stale)} temporary file(s) a killed run left: "
                + ", ".join(p.name for p in stale)
            )

    def _run_locked(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        restored = self._restore_latest() if self.resume else False
        if not restored and self.spec.model.init_from:
            self._warm_start(self.spec.model.init_from)
        if self.split is not None and not self.split.scanned:
            self._scan_split()
        self._known_rows = self._source_rows()
        self._start = time.perf_counter()
        self._last_ckpt_time = time.monotonic()
        self._last_ckpt_rows = self.run.rows_learnt
        self._last_ckpt_epoch = self.run.epoch
        with stop_on_signals(self._stop):
            try:
                while not self.run.complete and not self._stop.is_set():
                    for chunk, y in self._epoch_stream():
                        self._learn(chunk, y)
                        if self._stop.is_set():
                            break
                        self._maybe_checkpoint()
                    if self._stop.is_set():
                        break
                    self._end_epoch()
            except DataError:
                self._checkpoint_before_failing()
                raise
            finally:
                self._stop_prefetch()
                self.bad.close()
                if self.cache is not None:
                    self.cache.finish()
        if not self.run.complete:
            return self._interrupted()
        return self._finish()

    def _checkpoint_before_failing(self) -> None:
        """A DataError stops the run: keep what was learnt up to the last good row (standard
        input cannot be read again), if the state is still that of a chunk boundary."""
        if not (self._consistent_failure and self.spec.checkpoint.enabled):
            return
        if self.run.rows_learnt == self._last_ckpt_rows:
            return  # nothing learnt since the last checkpoint (or the start)
        try:
            path = self.write_checkpoint()
        except CheckpointError as exc:
            self.notes.append(f"no checkpoint could be written before stopping: {exc}")
            return
        self.notes.append(
            f"checkpoint {path} keeps the {self.run.rows_learnt:,} rows learnt before the bad "
            "one; fix the data (or set source.on_bad_rows) and resume with --resume"
        )

    def _scan_split(self) -> None:
        """validation.split: the first pass over the source (each key's last event)."""
        stream = SourceStream(
            self.spec.source,
            self.columns,
            on_bad_row=None if self.bad.policy == "fail" else (lambda row: None),
            should_stop=self._stop.is_set,
            column_types=numeric_columns(self.pipeline, self.spec.target, self.spec.task),
        )
        self.split.scan(stream.batches({"done": [], "current": None}))
        if self._stop.is_set():  # stopped during the pass: a resumed run passes again
            self.split.scanned = False
            return
        self.notes.append(
            f"leave_last_out: {self.split.n_held_out:,} events held out (the last of each "
            f"{self.spec.validation.key})"
        )

    def _epoch_stream(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """This epoch's (chunk, y) from where the run stands, through the shuffle window."""
        if self.run.epoch > 0 and not self.learner.replays_rows:
            return  # the learner took every row in the first epoch
        replaying = self.run.epoch > 0 and self.cache is not None
        if replaying:
            chunks = self._replayed()
        elif self._prefetch_depth:
            chunks = self._prefetched()
        else:
            chunks = self._read()
        if self.shuffle is None:
            yield from chunks
            return
        for chunk, y in chunks:
            yield from self.shuffle.push(chunk, y)
        yield from self.shuffle.flush()

    def _read(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        run = self.run
        pipeline = self.pipeline
        if run.epoch > 0:
            # Without a cache, later epochs rebuild the rows exactly as the first did.
            fresh = run.stream["current"] is None and not run.stream["done"]
            pipeline = self.rebuild.start(fresh_epoch=fresh)
        # Bad rows are counted (and quarantined) once: later epochs that read the source again
        # meet the same ones.
        bad = self.bad if run.epoch == 0 or self.bad.policy == "fail" else BadRows("skip", None)

        def from_source(row) -> None:
            if run.epoch == 0:
                run.rows_read += 1  # rows read = learnt + skipped + quarantined
            bad.from_source(row)

        stream = SourceStream(
            self.spec.source,
            self.columns,
            on_bad_row=None if bad.policy == "fail" else from_source,
            should_stop=self._stop.is_set,
            on_idle=self._maybe_checkpoint,
            column_types=numeric_columns(self.pipeline, self.spec.target, self.spec.task),
            learnt_sizes=run.learnt_sizes,
        )
        batches = stream.batches(run.stream)
        while True:
            # The position before this batch: a bad row in it must not move the run past it.
            before = (run.stream.get("current"), len(run.stream["done"]), run.rows_read)
            split_before = None if self.split is None else self.split.state_position()
            try:
                batch, pos = next(batches)
            except StopIteration:
                return
            except DataError:
                self._consistent_failure = True  # the reader stopped before the bad row
                raise
            if run.epoch == 0:
                run.rows_read += batch.num_rows
            lines = stream.batch_lines
            if self.split is not None:
                batch, lines = self.split.take(batch, run.epoch, lines)
            try:
                batch, y = clean_batch(
                    batch, self.pipeline, self.spec.target, self.spec.task, bad, pos.path, lines
                )
            except DataError as exc:
                # Nothing of this batch was learnt: the run stands before it.
                run.stream["current"], done, run.rows_read = before
                if split_before is not None:
                    self.split.epoch, self.split.position = split_before
                for path in run.stream["done"][done:]:
                    run.learnt_sizes.pop(path, None)
                del run.stream["done"][done:]
                self._consistent_failure = True
                good = getattr(exc, "batch_index", 0)
                if pos.path == STDIN and good and run.epoch == 0:
                    # Standard input cannot be read again: learn the rows before the bad one.
                    run.rows_read += good
                    head, y = clean_batch(
                        batch.slice(0, good),
                        self.pipeline,
                        self.spec.target,
                        self.spec.task,
                        bad,
                        pos.path,
                        lines,
                    )
                    yield pipeline.transform(head, training=True), y
                raise
            chunk = pipeline.transform(batch, training=True)
            if self.cache is not None and run.epoch == 0:
                self.cache.append(chunk, y)
            yield chunk, y

    def _prefetched(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """`_read` running up to source.prefetch batches ahead in a background thread (pyarrow
        and the numba builders release the GIL): the same chunks in the same order. Chunks read
        ahead by an interrupted run (checkpoint part `read_ahead`) come first."""
        for chunk, y, *_ in self.read_ahead.take():
            yield chunk, y  # (a resumed run's parameters already hold their ids)
        # Ids the space holds already (reserved blocks, earlier epochs): synced here, before the
        # reading thread starts; it sends the groups of the ids it allocates.
        self.model.sync_features()
        self._prefetcher = Prefetcher(self._built_ahead(), self._prefetch_depth)
        for chunk, y, start, groups in self._prefetcher:
            self._groups_read.append((start, groups))
            yield chunk, y
        self._stop_prefetch()

    def _built_ahead(self) -> Iterator[tuple[CSRChunk, np.ndarray, int, np.ndarray]]:
        """In the reading thread: each chunk with the first id it allocated and the groups of
        the ids it allocated (copied here: the learner's thread never reads the space's arrays
        while this thread may grow them)."""
        space = self.pipeline.space
        last = space.n_ids
        for chunk, y in self._read():
            n = space.n_ids
            yield chunk, y, last, space.id_group[last:n].copy()
            last = n

    def _stop_prefetch(self) -> None:
        """Stop the reading thread; what it read ahead is kept for the next checkpoint."""
        if self._prefetcher is not None:
            pending = self._prefetcher.close()
            self._prefetcher = None
            self.read_ahead.items.extend(pending)

    def _replayed(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        pos = self.run.replay
        for chunk, y, n_chunks, n_bytes in self.cache.replay(pos["chunks"], pos["bytes"]):
            pos["chunks"], pos["bytes"] = n_chunks, n_bytes
            yield chunk, y

    def _sync_features(self) -> None:
        """Make room in the parameters for ids the feature space allocated since the last chunk
        (reading ahead: up to the last chunk handed to the learner, with the groups the reading
        thread sent along)."""
        if self._prefetcher is None:  # no thread grows the space: read it
            self._groups_read.clear()
            self.model.sync_features()
            return
        params = self.learner.params
        for start, groups in self._groups_read:  # contiguous, from the last full sync on
            seen, stop = params.n_features, start + len(groups)
            if stop > seen:
                params.ensure_features(stop)
                params.group[seen:stop] = groups[seen - start :]
        self._groups_read.clear()

    def _learn(self, chunk: CSRChunk, y: np.ndarray) -> None:
        self._sync_features()
        run = self.run
        every = self.spec.validation.every_rows
        if not every:  # (a run resumed with every_rows changed to 0)
            run.next_eval = None
        elif run.next_eval is None or run.next_eval <= run.rows_learnt:  # changed from 0
            run.next_eval = (run.rows_learnt // every + 1) * every
        start = 0
        # validation.every_rows: the chunk is cut where an evaluation is due, so that it comes
        # after exactly that many rows (per-case learning makes the cut change nothing else).
        while start < chunk.n_rows:
            stop = chunk.n_rows
            if run.next_eval is not None:
                stop = min(stop, start + max(run.next_eval - run.rows_learnt, 1))
            part = chunk if stop - start == chunk.n_rows else slice_rows(chunk, start, stop)
            pred = self.learner.learn(part, y[start:stop])
            if self.spec.task == "ranking":
                # progressive ranking: each positive among its sampled negatives
                auc, has = self.learner.last_sampled
                self._update_progressive(np.ones(int(has.sum())), auc[has])
            else:
                self._update_progressive(y[start:stop], pred)
            run.rows_learnt += stop - start
            if run.next_eval is not None and run.rows_learnt >= run.next_eval:
                run.next_eval += every
                self._record(kind="cadence")
            start = stop
        if chunk.n_rows:
            self._report()

    def _update_progressive(self, y: np.ndarray, pred: np.ndarray) -> None:
        self.progressive.update(y, pred)
        self.window.update(y, pred)

    def _counts(self) -> tuple[int, ...]:
        return (self.run.rows_read, self.run.rows_learnt, self.bad.skipped, self.bad.quarantined)

    def _end_epoch(self) -> None:
        if self._resumed_counts is not None and self._counts() == self._resumed_counts:
            # A finished run resumed with nothing new: no evaluation, no record, no checkpoint.
            self._learnt_nothing = True
            self.run.complete = True
            return
        extra = self.learner.end_pass()
        history = self.evaluation.history
        last = history[-1] if history else None
        if (
            not extra
            and last
            and last["kind"] == "cadence"
            and last["rows"] == self.run.rows_learnt
        ):
            last["kind"] = "epoch"  # evaluated right at the epoch's end: that is its record
        else:
            self._record(kind="epoch", extra=extra)
        if self.evaluation.stopped_early or self.run.epoch + 1 >= self.spec.learner.epochs:
            self.run.complete = True
            return
        self.run.next_epoch()
        self.rebuild.reset()
        self.progressive.reset()
        self.shuffle = self._new_shuffle()
        self._maybe_checkpoint(force=self.spec.checkpoint.every_rows > 0)

    # ----------------------------------------------------------------------------- progress
    def _report(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.progress and (
            force or now - self._last_progress >= self.spec.output.progress_every_seconds
        ):
            self._last_progress = now
            self.progress(self._progress_event(now))

    def _progress_event(self, now: float) -> dict[str, Any]:
        run = self.run
        seconds = max(now - self._start, 1e-9)
        epochs = self.spec.learner.epochs
        per_epoch = run.rows_read if run.epoch > 0 else self._known_rows
        rate = run.rows_learnt / seconds
        passes = epochs if self.learner.replays_rows else 1  # rows read once
        eta = (
            max(per_epoch * passes - run.rows_learnt, 0) / rate if per_epoch and rate > 0 else None
        )
        metric = self.spec.metric_names()[0]
        shown = self.window[metric] if self.window else self.progressive[metric]
        return {
            "rows": run.rows_learnt,
            "epoch": run.epoch + 1,
            "epochs": epochs,
            "rows_per_second": rate,
            "metric": ("window_" if self.window else "") + metric,
            "value": shown.value(),
            "eta_seconds": eta,
            "total_rows": per_epoch * passes if per_epoch else None,
            "total_estimated": self._rows_estimated and run.epoch == 0,
        }

    def _record(self, kind: str, extra: dict[str, Any] | None = None) -> None:
        # Progressive metrics are predictions made before each case's update: only a learner
        # that learns case by case has them.
        progressive = self.learner.replays_rows
        rec: dict[str, Any] = {
            "kind": kind,
            "epoch": self.run.epoch + 1,
            "rows": self.run.rows_learnt,
            "seconds": round(time.perf_counter() - self._start, 3),
            **(self.progressive.values() if progressive else {}),
            **{f"window_{n}": v for n, v in self.window.values().items() if progressive},
            **(extra or {}),
            **self.evaluation.holdout_scores(kind, self.run.epoch),
        }
        if self.evaluation.stopped_early:
            self.run.complete = True
        self.evaluation.history.append(rec)
        if self.progress:
            self.progress({**self._progress_event(time.perf_counter()), "record": rec})

    # ----------------------------------------------------------------------------- the end
    def _summary(self) -> dict[str, Any]:
        run, ev = self.run, self.evaluation
        seconds = time.perf_counter() - self._start
        last = ev.history[-1] if ev.history else {}
        out = {
            "rows_read": run.rows_read,
            "rows_learnt": run.rows_learnt,
            "rows_skipped": self.bad.skipped,
            "rows_quarantined": self.bad.quarantined,
            **({"rows_held_out": self.split.n_held_out} if self.split is not None else {}),
            "epochs": run.epoch + 1,
            "seconds": round(seconds, 3),
            "rows_per_second": round(run.rows_learnt / seconds, 1) if seconds > 0 else None,
            "features": int(self.learner.params.n_features),
            "stopped_early": ev.stopped_early,
            **{f"progressive_{k}": v for k, v in last.items() if k in self.spec.metric_names()},
        }
        if ev.best_value is not None:
            out["best_" + self.spec.validation.metric] = ev.best_value
        return out

    def _finish(self) -> TrainResult:
        self.learner.check_finite()
        model_path = self.out_dir / self.spec.output.model
        if self._learnt_nothing:
            self.notes.append("nothing new to learn: the model and the checkpoints are unchanged")
            self.evaluation.restore_best()
            return self._save(interrupted=False, publish=not model_path.exists())
        if self.spec.checkpoint.enabled:
            # The final checkpoint keeps the training state (not the restored best model), so a
            # later --resume (new files, follow mode) continues learning where this run stopped.
            self.write_checkpoint()
        self.learner.end_training()
        if self.cache is not None:
            self.cache.remove()
        self.evaluation.restore_best()
        return self._save(interrupted=False)

    def _interrupted(self) -> TrainResult:
        path = self.write_checkpoint() if self.spec.checkpoint.enabled else None
        result = self._save(interrupted=True, publish=self.spec.checkpoint.publish)
        if path is not None:
            self.notes.append(f"interrupted after {self.run.rows_learnt:,} rows; checkpoint {path}")
        return result

    def _save(self, interrupted: bool, publish: bool = True) -> TrainResult:
        history = self.evaluation.history
        summary = {
            **self._summary(),
            "interrupted": interrupted,
            "model_record": self.evaluation.saved_record(),
            "threads": self.spec.learner.threads,
            "reproducible": self.spec.learner.threads == 1
            or self.spec.learner.method not in ("sgd", "adagrad"),
        }
        self.model.history = history
        self.model.summary = summary
        model_path = self.out_dir / self.spec.output.model
        if publish:
            self.model.save(model_path)
        write_history(history, self.out_dir)
        return TrainResult(self.model, model_path, history, summary)

    # ----------------------------------------------------------------------------- checkpoints
    def _maybe_checkpoint(self, force: bool = False) -> None:
        c = self.spec.checkpoint
        if not c.enabled:
            return
        learnt = self.run.rows_learnt
        due_rows = c.every_rows and learnt - self._last_ckpt_rows >= c.every_rows
        due_time = c.every_seconds and time.monotonic() - self._last_ckpt_time >= c.every_seconds
        progress = learnt > self._last_ckpt_rows or self.run.epoch > self._last_ckpt_epoch
        if force or due_rows or (due_time and progress):
            with self._reading_paused():
                self.write_checkpoint()
                if c.publish:
                    self.model.history = self.evaluation.history
                    self.model.summary = self._summary()
                    self.model.save(self.out_dir / self.spec.output.model)

    @contextmanager
    def _reading_paused(self) -> Iterator[None]:
        """Hold the reading thread (if any) between two batches: the source positions, builder
        states and feature space are then those after the batches read ahead, which
        `read_ahead` holds meanwhile. Parameters are made for every feature the space knows, so
        that a checkpoint and a model published with it agree (ids read ahead start at their
        initial values, as they would later)."""
        if self._prefetcher is None or self._paused:
            self.model.sync_features()
            yield
            return
        with self._prefetcher.paused() as pending:
            self._paused = True
            self.read_ahead.items.extend(pending)
            try:
                self.model.sync_features()
                yield
            finally:
                del self.read_ahead.items[len(self.read_ahead.items) - len(pending) :]
                self._paused = False

    def write_checkpoint(self) -> Path:
        """Write every part's state; returns the checkpoint's directory."""
        with self._reading_paused():
            return self._write_checkpoint()

    def _write_checkpoint(self) -> Path:
        state = {name: part.state_dict() for name, part in self.parts().items()}
        state["format"] = CHECKPOINT_FORMAT
        state["spec"] = self.spec.model_dump(mode="json")
        path = self.checkpointer.write(state)
        self._last_ckpt_rows = self.run.rows_learnt
        self._last_ckpt_epoch = self.run.epoch
        self._last_ckpt_time = time.monotonic()
        return path

    def _warm_start(self, path: str) -> None:
        """model.init_from: start from a saved model's vocabularies and parameters."""
        self.model.warm_start(path)
        self.rebuild.initial = copy_state([b.state_dict() for b in self.pipeline.builders])
        self._sync_features()
        self.notes.append(f"warm start from {path} ({self.learner.params.n_features:,} features)")

    def _restore_latest(self) -> bool:
        """Load the latest good checkpoint; False if there is none."""
        ck = self.checkpointer.latest_good()
        self.notes.extend(self.checkpointer.warnings)
        if ck is None:
            self.notes.append(
                f"no checkpoint in {self.checkpointer.dir}: starting from the beginning"
            )
            return False
        state = ck.state
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{ck.path} is not a streamfm checkpoint")
        diff = spec_difference(state["spec"], self.spec.model_dump(mode="json"))
        if diff is not None:
            key, old, new = diff
            raise CheckpointError(
                f"the checkpoint {ck.path} was written with {key}={old!r} but the spec says "
                f"{new!r}: it cannot be resumed with this spec (use the original spec, or a new "
                "checkpoint.dir to start afresh)"
            )
        parts = self.parts()
        if "read_ahead" not in state:  # written without reading ahead
            parts.pop("read_ahead", None)
        missing = sorted(set(parts) - set(state))
        if missing:
            raise CheckpointError(f"{ck.path} lacks the state of {', '.join(missing)}")
        for name, part in parts.items():
            try:
                part.load_state_dict(state[name])
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise CheckpointError(
                    f"{ck.path}: the state of {name} is not usable ({exc}); move the checkpoint "
                    "away to resume from an older one"
                ) from None
        self._sync_features()
        run = self.run
        run.stream.pop("stdin_done", None)  # standard input is a new stream each run
        current = run.stream.get("current")
        if current and current["path"] == STDIN:
            run.stream["current"] = None
        if run.complete:
            if self.spec.learner.epochs > 1 or not self.learner.replays_rows:
                self.notes.append(f"the run in {ck.path} was complete: nothing to do")
            else:
                # A finished single-pass run: go on with files that were not there before.
                # An early stop ended that run, not the stream: patience is counted afresh.
                run.complete = False
                self._resumed_counts = self._counts()
                if self.evaluation.stopped_early:
                    self.evaluation.stopped_early = False
                    self.evaluation.bad_evals = 0
                    self.notes.append(
                        "the resumed run had stopped early; it goes on with the data added "
                        "since, and patience is counted afresh"
                    )
        self.notes.append(
            f"resumed from {ck.path} at {run.rows_learnt:,} learnt rows (epoch {run.epoch + 1})"
        )
        return True


def train(
    spec: Spec | str | Path,
    overrides: list[str] | None = None,
    progress: ProgressFn | None = None,
    *,
    resume: bool = False,
) -> TrainResult:
    """Run a spec (a Spec, or the path of a spec.yaml); writes its model and metric history.
    With resume=True, continue from the latest good checkpoint of the spec's checkpoint.dir."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    elif overrides:
        raise SpecError("overrides apply to a spec file; change the Spec object instead")
    trainer = Trainer(spec, progress, resume=resume)
    try:
        result = trainer.run_training()
    except Exception as exc:
        # Which checkpoint was used or skipped matters most when the run fails: keep the notes.
        exc.run_notes = list(trainer.notes)
        raise
    result.summary["notes"] = trainer.notes
    return result
