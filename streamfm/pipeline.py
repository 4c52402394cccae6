"""The training loop: source -> feature pipeline -> learner, chunk by chunk, resumable.

Memory stays bounded: one source batch (plus a shuffle window) is in flight; the chunk cache lives
on disk. Every piece of state that decides the next update is checkpointed, so a run killed at
any moment and resumed ends bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.badrows import BadRows
from streamfm.checkpoint import Checkpointer
from streamfm.chunks import ChunkCache, ShuffleWindow
from streamfm.config import GroupRegularization, SourceConfig
from streamfm.csr import CSRChunk
from streamfm.errors import CheckpointError, SpecError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.learners.sgd import SGDLearner
from streamfm.metrics import Metric, make_metric
from streamfm.model import FMParams
from streamfm.sources import STDIN, SourceStream
from streamfm.spec import Spec, load_spec
from streamfm.state import join_arrays, split_arrays
from streamfm.trained import TrainedModel, clean_batch

__all__ = ["TrainResult", "Trainer", "TrainedModel", "train"]

ProgressFn = Callable[[dict[str, Any]], None]
CHECKPOINT_FORMAT = "streamfm-checkpoint"
# Spec sections that must not change between a checkpoint and its resumption: they decide what
# the model is and how each update is made. Sources, validation, output may change.
_FIXED_SECTIONS = ("task", "target", "features", "model", "learner", "groups", "cache")


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
        self.spec = spec
        self.progress = progress
        self.resume = resume
        self.out_dir = spec.output_dir()
        self.pipeline = FeaturePipeline.from_specs(spec.features)
        names = [b.name for b in self.pipeline.builders]
        self.learner = SGDLearner(
            spec.model,
            spec.learner,
            task=spec.task,
            group_regularization=_group_regs(names, spec.groups),
        )
        for g, b in enumerate(self.pipeline.builders):
            p = b.params
            if p.reg_linear is not None or p.reg_factors is not None:
                self.learner.group_regularization.setdefault(
                    g, GroupRegularization(linear=p.reg_linear, factors=p.reg_factors)
                )
        self.columns = list(dict.fromkeys([*self.pipeline.columns(), spec.target.column]))
        self.model = TrainedModel(spec, self.pipeline, self.learner)
        self.checkpointer = Checkpointer(spec.checkpoint_dir(), spec.checkpoint.keep)
        self.bad = BadRows(spec.source.on_bad_rows, self.out_dir / spec.output.quarantine)
        self.cache = self._make_cache()
        # Builders that rebuild epochs > 1 from the source when there is no cache: the main
        # pipeline keeps the final state (for evaluation and the saved model).
        self.replay: FeaturePipeline | None = None
        # --- run state (all of it checkpointed)
        self.epoch = 0
        self.complete = False
        self.stream_state: dict[str, Any] = {"done": [], "current": None}
        self.replay_pos = {"chunks": 0, "bytes": 0}
        self.rows_read = 0
        self.rows_learnt = 0
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best: dict[str, Any] | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self.next_eval = spec.validation.every_rows or None
        self.progressive: dict[str, Metric] = self._metrics(window=None)
        self.window: dict[str, Metric] = (
            self._metrics(window=spec.output.window_rows) if spec.output.window_rows else {}
        )
        self.shuffle: ShuffleWindow | None = self._new_shuffle()
        self.initial_states = [b.state_dict() for b in self.pipeline.builders]
        # --- not checkpointed
        self._synced_ids = 0
        self._holdout_cache: list | bool | None = None
        self._stop = threading.Event()
        self._start = 0.0
        self._last_progress = 0.0
        self._last_ckpt_rows = 0
        self._last_ckpt_time = 0.0
        self.notes: list[str] = []

    # ----------------------------------------------------------------------------- set-up
    def _metrics(self, window: int | None) -> dict[str, Metric]:
        """Streaming metrics of the task (over the last `window` cases when given)."""
        return {n: make_metric(n, exact=False, window=window) for n in self.spec.metric_names()}

    def _make_cache(self) -> ChunkCache | None:
        enabled = self.spec.cache.enabled
        if enabled is None:
            enabled = self.spec.learner.epochs > 1
        if not enabled or self.spec.learner.epochs == 1:
            return None
        folder = Path(self.spec.cache.dir) if self.spec.cache.dir else self.spec.checkpoint_dir()
        return ChunkCache(folder / "chunks.npy")

    def _new_shuffle(self) -> ShuffleWindow | None:
        size = self.spec.learner.shuffle_buffer
        return ShuffleWindow(size, self.spec.model.seed, self.epoch) if size else None

    def _source_rows(self) -> int | None:
        """Rows per epoch when the files say so without reading them (Parquet), for the ETA."""
        if self.spec.source.follow or self.spec.source.path == STDIN:
            return None
        try:
            from streamfm.sources import open_source

            return open_source(self.spec.source).total_rows()
        except Exception:  # noqa: BLE001 - only an estimate; reading reports real problems
            return None

    def request_stop(self) -> None:
        """Finish the current chunk, write a checkpoint and return (used by signal handlers)."""
        self._stop.set()

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self._restore_latest()
        self._known_rows = self._source_rows()
        self._start = time.perf_counter()
        self._last_ckpt_time = time.monotonic()
        self._last_ckpt_rows = self.rows_learnt
        with _stop_on_signals(self):
            try:
                while not self.complete and not self._stop.is_set():
                    for chunk, y in self._epoch_stream():
                        self._learn(chunk, y)
                        if self._stop.is_set():
                            break
                        self._maybe_checkpoint()
                    if self._stop.is_set():
                        break
                    self._end_epoch()
            finally:
                self.bad.close()
                if self.cache is not None:
                    self.cache.finish()
        if not self.complete:
            return self._interrupted()
        return self._finish()

    def _epoch_stream(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """This epoch's (chunk, y) from where the run stands, through the shuffle window."""
        chunks = self._replayed() if self.epoch > 0 and self.cache is not None else self._read()
        if self.shuffle is None:
            yield from chunks
            return
        for chunk, y in chunks:
            yield from self.shuffle.push(chunk, y)
        yield from self.shuffle.flush()

    def _read(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        pipeline = self.pipeline
        if self.epoch > 0:
            # Without a cache, later epochs rebuild the rows exactly as the first did, with a
            # second set of builders restarted from their initial state (keys keep their ids).
            if self.replay is None:
                self.replay = FeaturePipeline(
                    FeaturePipeline.from_specs(self.spec.features).builders,
                    space=self.pipeline.space,
                )
                if self.stream_state["current"] is None and not self.stream_state["done"]:
                    for b, s in zip(self.replay.builders, self.initial_states, strict=True):
                        b.load_state_dict(s)
            pipeline = self.replay
        stream = SourceStream(
            self.spec.source,
            self.columns,
            on_bad_row=None if self.bad.policy == "fail" else self.bad.from_source,
            should_stop=self._stop.is_set,
            on_idle=self._idle,
        )
        for batch, pos in stream.batches(self.stream_state):
            if self.epoch == 0:
                self.rows_read += batch.num_rows
            first = pos.row - batch.num_rows + 1
            batch, y = clean_batch(
                batch, self.pipeline, self.spec.target, self.spec.task, self.bad, pos.path, first
            )
            chunk = pipeline.transform(batch, training=True)
            if self.cache is not None and self.epoch == 0:
                self.cache.append(chunk, y)
            yield chunk, y

    def _replayed(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        pos = self.replay_pos
        for chunk, y, n_chunks, n_bytes in self.cache.replay(pos["chunks"], pos["bytes"]):
            pos["chunks"], pos["bytes"] = n_chunks, n_bytes
            yield chunk, y

    def _learn(self, chunk: CSRChunk, y: np.ndarray) -> None:
        space, params = self.pipeline.space, self.learner.params
        if space.n_ids > self._synced_ids:
            params.ensure_features(space.n_ids)
            params.group[self._synced_ids : space.n_ids] = space.id_group[
                self._synced_ids : space.n_ids
            ]
            self._synced_ids = space.n_ids
        if not chunk.n_rows:
            return
        pred = self.learner.learn(chunk, y)
        for m in (*self.progressive.values(), *self.window.values()):
            m.update(y, pred)
        self.rows_learnt += chunk.n_rows
        if self.next_eval is not None and self.rows_learnt >= self.next_eval:
            self.next_eval += self.spec.validation.every_rows
            self._record(kind="cadence")
        self._report()

    def _end_epoch(self) -> None:
        self._record(kind="epoch")
        epochs = self.spec.learner.epochs
        if self.stopped_early or self.epoch + 1 >= epochs:
            self.complete = True
            return
        self.epoch += 1
        self.stream_state = {"done": [], "current": None}
        self.replay_pos = {"chunks": 0, "bytes": 0}
        if self.replay is not None:
            for b, s in zip(self.replay.builders, self.initial_states, strict=True):
                b.load_state_dict(s)
        for m in self.progressive.values():
            m.reset()
        self.shuffle = self._new_shuffle()
        self._maybe_checkpoint(force=self.spec.checkpoint.every_rows > 0)

    def _idle(self) -> None:
        """Follow mode is waiting for files: a good moment for a time-based checkpoint."""
        self._maybe_checkpoint()

    # ----------------------------------------------------------------------------- progress
    def _report(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.progress and (
            force or now - self._last_progress >= self.spec.output.progress_every_seconds
        ):
            self._last_progress = now
            self.progress(self._progress_event(now))

    def _progress_event(self, now: float) -> dict[str, Any]:
        seconds = max(now - self._start, 1e-9)
        epochs = self.spec.learner.epochs
        per_epoch = self.rows_read if self.epoch > 0 else self._known_rows
        rate = self.rows_learnt / seconds
        eta = (
            max(per_epoch * epochs - self.rows_learnt, 0) / rate if per_epoch and rate > 0 else None
        )
        metric = self.spec.metric_names()[0]
        shown = self.window.get(metric) if self.window else self.progressive[metric]
        return {
            "rows": self.rows_learnt,
            "epoch": self.epoch + 1,
            "epochs": epochs,
            "rows_per_second": rate,
            "metric": ("window_" if self.window else "") + metric,
            "value": shown.value(),
            "eta_seconds": eta,
            "total_rows": per_epoch * epochs if per_epoch else None,
        }

    # ----------------------------------------------------------------------------- evaluation
    def _record(self, kind: str) -> None:
        rec: dict[str, Any] = {
            "kind": kind,
            "epoch": self.epoch + 1,
            "rows": self.rows_learnt,
            "seconds": round(time.perf_counter() - self._start, 3),
        }
        rec.update({n: float(m.value()) for n, m in self.progressive.items()})
        rec.update({f"window_{n}": float(m.value()) for n, m in self.window.items()})
        val = self.spec.validation
        if val.source is not None:
            self.learner.check_finite()
            scores = self.model.evaluate(self._holdout(kind))
            rec.update({f"holdout_{n}": v for n, v in scores.items() if n != "rows"})
            self._early_stopping(scores[val.metric])
        self.history.append(rec)
        if self.progress:
            self.progress({**self._progress_event(time.perf_counter()), "record": rec})

    def _holdout(self, kind: str) -> SourceConfig | list[tuple[CSRChunk, np.ndarray]]:
        """The holdout source, or its built chunks kept in memory once features are final.

        From the end of the first epoch on, the main pipeline's state never changes, so the
        holdout is built once (if it has at most `validation.cache_rows` rows) and reused.
        """
        val = self.spec.validation
        if isinstance(self._holdout_cache, list):
            return self._holdout_cache
        if (
            self._holdout_cache is False
            or (self.epoch == 0 and kind != "epoch")
            or self.spec.source.follow
        ):
            return val.source
        chunks, rows = [], 0
        for chunk, y in self.model.holdout_chunks(val.source):
            rows += chunk.n_rows
            if rows > val.cache_rows:
                self._holdout_cache = False
                return val.source
            chunks.append((chunk, y))
        self._holdout_cache = chunks
        return chunks

    def _early_stopping(self, value: float) -> None:
        higher = make_metric(self.spec.validation.metric).higher_is_better
        if self.best_value is None or (
            value > self.best_value if higher else value < self.best_value
        ):
            self.best_value = value
            self.best = self._snapshot() if self.spec.validation.restore_best else None
            self.bad_evals = 0
            return
        self.bad_evals += 1
        patience = self.spec.validation.patience
        if patience and self.bad_evals >= patience:
            self.stopped_early = True
            self.complete = True

    def _snapshot(self) -> dict[str, Any]:
        return {
            "arrays": {k: v.copy() for k, v in self.learner.params.arrays().items()},
            "learner": self.learner.state(),
            "builders": [b.state_dict() for b in self.pipeline.builders],
        }

    def _restore_params(self, snap: dict[str, Any]) -> None:
        spec = self.spec
        self.learner.params = FMParams.from_arrays(
            snap["arrays"],
            seed=spec.model.seed,
            init_std=spec.model.init_std,
            adagrad_init=spec.learner.adagrad_init,
        )
        self.learner.load_state(snap["learner"])
        for b, s in zip(self.pipeline.builders, snap["builders"], strict=True):
            b.load_state_dict(s)

    # ----------------------------------------------------------------------------- the end
    def _summary(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self._start
        last = self.history[-1] if self.history else {}
        out = {
            "rows_read": self.rows_read,
            "rows_learnt": self.rows_learnt,
            "rows_skipped": self.bad.skipped,
            "rows_quarantined": self.bad.quarantined,
            "epochs": self.epoch + 1,
            "seconds": round(seconds, 3),
            "rows_per_second": round(self.rows_learnt / seconds, 1) if seconds > 0 else None,
            "features": int(self.learner.params.n_features),
            "stopped_early": self.stopped_early,
            **{f"progressive_{k}": v for k, v in last.items() if k in self.spec.metric_names()},
        }
        if self.best_value is not None:
            out["best_" + self.spec.validation.metric] = self.best_value
        return out

    def _saved_record(self) -> dict[str, Any]:
        """The history record of the model being saved: the best one when restored, else the last."""
        if self.best is not None and self.best_value is not None:
            key = "holdout_" + self.spec.validation.metric
            for rec in self.history:
                if rec.get(key) == self.best_value:
                    return rec
        return self.history[-1] if self.history else {}

    def _finish(self) -> TrainResult:
        self.learner.check_finite()
        if self.spec.checkpoint.enabled:
            # The final checkpoint keeps the training state (not the restored best model), so a
            # later --resume (new files, follow mode) continues learning where this run stopped.
            self.write_checkpoint()
        if self.cache is not None:
            self.cache.remove()
        if self.best is not None:
            self._restore_params(self.best)
        return self._save(interrupted=False)

    def _interrupted(self) -> TrainResult:
        path = self.write_checkpoint() if self.spec.checkpoint.enabled else None
        result = self._save(interrupted=True, publish=self.spec.checkpoint.publish)
        if path is not None:
            self.notes.append(f"interrupted after {self.rows_learnt:,} rows; checkpoint {path}")
        return result

    def _save(self, interrupted: bool, publish: bool = True) -> TrainResult:
        summary = {
            **self._summary(),
            "interrupted": interrupted,
            "model_record": self._saved_record(),
        }
        self.model.history = self.history
        self.model.summary = summary
        model_path = self.out_dir / self.spec.output.model
        if publish:
            self.model.save(model_path)
        write_history(self.history, self.out_dir)
        return TrainResult(self.model, model_path, self.history, summary)

    # ----------------------------------------------------------------------------- checkpoints
    def _maybe_checkpoint(self, force: bool = False) -> None:
        c = self.spec.checkpoint
        if not c.enabled:
            return
        due_rows = c.every_rows and self.rows_learnt - self._last_ckpt_rows >= c.every_rows
        due_time = c.every_seconds and time.monotonic() - self._last_ckpt_time >= c.every_seconds
        if force or due_rows or (due_time and self.rows_learnt > self._last_ckpt_rows):
            self.write_checkpoint()
            if c.publish:
                self.model.history = self.history
                self.model.summary = self._summary()
                self.model.save(self.out_dir / self.spec.output.model)

    def write_checkpoint(self) -> Path:
        """Write every piece of run state; returns the checkpoint's directory."""
        if self.cache is not None:
            self.cache.sync()
        arrays: dict[str, np.ndarray] = dict(self.learner.params.arrays())
        pmeta, parrays = self.pipeline.state()
        arrays.update(parrays)
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec.model_dump(mode="json"),
            "epoch": self.epoch,
            "complete": self.complete,
            "stream": self.stream_state,
            "replay_pos": self.replay_pos,
            "cache": {"chunks": self.cache.n_chunks, "bytes": self.cache.n_bytes}
            if self.cache
            else None,
            "rows_read": self.rows_read,
            "rows_learnt": self.rows_learnt,
            "bad_rows": self.bad.state(),
            "history": self.history,
            "best_value": self.best_value,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "next_eval": self.next_eval,
            "learner": self.learner.state(),
            "pipeline": pmeta,
            "initial_states": split_arrays(self.initial_states, "initial", arrays),
            "replay_states": split_arrays(
                [b.state_dict() for b in self.replay.builders], "replay", arrays
            )
            if self.replay is not None
            else None,
            "best": split_arrays(self.best, "best", arrays) if self.best is not None else None,
            "metrics": {n: m.state_dict() for n, m in self.progressive.items()},
            "window": {n: m.state_dict() for n, m in self.window.items()},
        }
        if self.shuffle is not None:
            smeta, sarrays = self.shuffle.state()
            state["shuffle"] = smeta
            arrays.update({f"shuffle/{k}": v for k, v in sarrays.items()})
        path = self.checkpointer.write(state, arrays)
        self._last_ckpt_rows = self.rows_learnt
        self._last_ckpt_time = time.monotonic()
        return path

    def _restore_latest(self) -> None:
        ck = self.checkpointer.latest_good()
        self.notes.extend(self.checkpointer.warnings)
        if ck is None:
            self.notes.append(
                f"no checkpoint in {self.checkpointer.dir}: starting from the beginning"
            )
            return
        s, arrays = ck.state, ck.arrays
        if s.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{ck.path} is not a streamfm checkpoint")
        _check_compatible(s["spec"], self.spec.model_dump(mode="json"), ck.path)
        spec = self.spec
        self.learner.params = FMParams.from_arrays(
            arrays,
            seed=spec.model.seed,
            init_std=spec.model.init_std,
            adagrad_init=spec.learner.adagrad_init,
        )
        self.learner.load_state(s["learner"])
        self.pipeline.load_state(s["pipeline"], arrays)
        self._synced_ids = self.pipeline.space.n_ids
        self.learner.params.ensure_features(self._synced_ids)
        self.epoch, self.complete = int(s["epoch"]), bool(s["complete"])
        self.stream_state = s["stream"]
        self.stream_state.pop("stdin_done", None)  # standard input is a new stream each run
        if self.stream_state.get("current") and self.stream_state["current"]["path"] == STDIN:
            self.stream_state["current"] = None
        self.replay_pos = s["replay_pos"]
        if self.cache is not None and s["cache"] is not None and not s["complete"]:
            self.cache.restore(s["cache"]["chunks"], s["cache"]["bytes"])
        self.rows_read, self.rows_learnt = int(s["rows_read"]), int(s["rows_learnt"])
        self.bad.load_state(s["bad_rows"])
        self.history = s["history"]
        self.best_value, self.bad_evals = s["best_value"], int(s["bad_evals"])
        self.stopped_early, self.next_eval = bool(s["stopped_early"]), s["next_eval"]
        self.initial_states = join_arrays(s["initial_states"], arrays)
        if s["replay_states"] is not None:
            self.replay = FeaturePipeline(
                FeaturePipeline.from_specs(self.spec.features).builders, space=self.pipeline.space
            )
            for b, st in zip(
                self.replay.builders, join_arrays(s["replay_states"], arrays), strict=True
            ):
                b.load_state_dict(st)
        self.best = join_arrays(s["best"], arrays) if s["best"] is not None else None
        for n, m in self.progressive.items():
            m.load_state_dict(s["metrics"][n])
        for n, m in self.window.items():
            if n in s["window"]:
                m.load_state_dict(s["window"][n])
        if self.shuffle is not None and "shuffle" in s:
            self.shuffle.epoch = self.epoch
            self.shuffle.load_state(
                s["shuffle"], {k[8:]: v for k, v in arrays.items() if k.startswith("shuffle/")}
            )
        if self.complete:
            if self.spec.learner.epochs > 1 or self.stopped_early:
                self.notes.append(f"the run in {ck.path} was complete: nothing to do")
            else:
                # A finished single-pass run: go on with files that were not there before.
                self.complete = False
        self.notes.append(
            f"resumed from {ck.path} at {self.rows_learnt:,} learnt rows (epoch {self.epoch + 1})"
        )


def _group_regs(
    names: list[str], groups: dict[str, GroupRegularization]
) -> dict[int, GroupRegularization]:
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise SpecError(f"groups: {unknown} name no feature builder (builders: {names})")
    return {names.index(n): r for n, r in groups.items()}


def _check_compatible(saved: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """CheckpointError naming the first key that differs in a section that must not change."""
    for section in _FIXED_SECTIONS:
        a, b = saved.get(section), now.get(section)
        if section == "learner":  # more or fewer epochs is fine
            a, b = ({k: v for k, v in d.items() if k != "epochs"} for d in (a, b))
        diff = _first_difference(a, b, section)
        if diff is not None:
            key, old, new = diff
            raise CheckpointError(
                f"the checkpoint {where} was written with {key}={old!r} but the spec says {new!r}: "
                "it cannot be resumed with this spec (use the original spec, or a new "
                "checkpoint.dir to start afresh)"
            )


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d is not None:
                return d
        return None
    return None if a == b else (path, a, b)


class _stop_on_signals:
    """Within the block, SIGINT and SIGTERM ask the trainer to stop after the current chunk."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.trainer._stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.trainer.request_stop()
        print(
            f"\n{signal.Signals(signum).name}: finishing the current chunk and writing a checkpoint...",
            file=sys.stderr,
        )

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def write_history(history: list[dict[str, Any]], out_dir: Path) -> None:
    """metrics.json (a list of records) and metrics.csv (one row per record) in `out_dir`."""
    (out_dir / "metrics.json").write_text(json.dumps(history, indent=1))
    keys: dict[str, None] = {}
    for rec in history:
        keys.update(dict.fromkeys(rec))
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(keys))
        w.writeheader()
        w.writerows(history)


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
    result = trainer.run()
    result.summary["notes"] = trainer.notes
    return result
