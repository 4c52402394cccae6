"""Training, prediction and evaluation loops: source -> feature pipeline -> learner, chunk by chunk.

Memory stays bounded: one source batch (plus a shuffle window) is in flight at a time; the chunk
cache lives on disk.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.chunks import ChunkCache, ShuffleWindow
from streamfm.config import GroupRegularization, SourceConfig
from streamfm.csr import CSRChunk
from streamfm.errors import DataError, SpecError
from streamfm.features.arrow import as_float, as_string_keys
from streamfm.features.pipeline import FeaturePipeline
from streamfm.learners.sgd import SGDLearner
from streamfm.metrics import Metric, make_metric
from streamfm.model import FMParams
from streamfm.persist import load_arrays, save_arrays
from streamfm.sources import Position, open_source
from streamfm.spec import Spec, TargetConfig, load_spec, parse_spec

ProgressFn = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------------
# targets


def extract_target(
    batch: pa.RecordBatch, target: TargetConfig, task: str, pos: Position | None = None
) -> np.ndarray:
    """Targets of a batch as float64 (classification: 0/1). DataError names file, row and value."""
    idx = batch.schema.get_field_index(target.column)
    if idx < 0:
        raise DataError(
            f"the target column '{target.column}' is not in the data (columns: "
            f"{', '.join(batch.schema.names)}); set target.column",
            path=pos.path if pos else None,
        )
    col = batch.column(idx)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()

    def fail(mask: np.ndarray, reason: str, values) -> None:
        i = int(np.flatnonzero(mask)[0])
        row = (pos.row - batch.num_rows + i + 1) if pos else i + 1
        raise DataError(
            reason, path=pos.path if pos else None, row=row, column=target.column, value=values[i]
        )

    if task == "classification" and target.positive is not None:
        keys = as_string_keys(col)
        if keys.null_count:
            fail(
                ~keys.is_valid().to_numpy(zero_copy_only=False),
                "the target is missing",
                [None] * len(keys),
            )
        positive = pa.array(
            [str(v).lower() if isinstance(v, bool) else str(v) for v in target.positive]
        )
        return pc.is_in(keys, value_set=positive).to_numpy(zero_copy_only=False).astype(np.float64)
    y = as_float(col, target.column, "target")
    bad = ~np.isfinite(y)
    if bad.any():
        fail(bad, "the target is missing or not a finite number", y)
    if task == "classification":
        ok = (y == 0) | (y == 1) | (y == -1)
        if not ok.all():
            fail(
                ~ok,
                "classification labels must be 0/1, -1/+1 or true/false (or set target.positive)",
                y,
            )
        y = (y == 1).astype(np.float64)
    return y


# --------------------------------------------------------------------------------------------
# the trained model


class TrainedModel:
    """A model trained from a spec: feature pipeline (with its vocabularies) and FM parameters."""

    def __init__(self, spec: Spec, pipeline: FeaturePipeline, learner: SGDLearner, history=None):
        self.spec = spec
        self.pipeline = pipeline
        self.learner = learner
        self.history: list[dict[str, Any]] = history or []
        self.summary: dict[str, Any] = {}

    @property
    def task(self) -> str:
        return self.spec.task

    def transform(self, batch: pa.RecordBatch) -> CSRChunk:
        """Design-matrix rows of `batch` (state frozen; unseen values contribute nothing)."""
        return self.pipeline.transform(batch, training=False)

    def predict_batch(self, batch: pa.RecordBatch) -> np.ndarray:
        """Predictions for a RecordBatch: regression values, or P(class 1)."""
        return self.learner.predict(self.transform(batch))

    def predict_table(self, table: pa.Table | pa.RecordBatch) -> np.ndarray:
        """Predictions for an in-memory table (any number of batches)."""
        if isinstance(table, pa.RecordBatch):
            return self.predict_batch(table)
        parts = [self.predict_batch(b) for b in table.to_batches()]
        return np.concatenate(parts) if parts else np.zeros(0)

    def source_config(
        self, path: str | list[str], fmt: str | None = None, batch_size: int | None = None
    ) -> SourceConfig:
        """A SourceConfig for new data read like the training data (same CSV options)."""
        src = self.spec.source
        return SourceConfig(
            path=path, format=fmt, csv=src.csv, batch_size=batch_size or src.batch_size
        )

    def predict_source(
        self, source: SourceConfig, keep_columns: list[str] | None = None
    ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Stream (kept columns, predictions) over a source, batch by batch."""
        columns = list(dict.fromkeys([*self.pipeline.columns(), *(keep_columns or [])]))
        for batch, _pos in open_source(source).batches(columns=columns):
            kept = batch.select(keep_columns) if keep_columns else None
            yield kept, self.predict_batch(batch)

    def holdout_chunks(self, source: SourceConfig) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """Built (chunk, target) pairs of a source holding the target column (state frozen)."""
        columns = [*self.pipeline.columns(), self.spec.target.column]
        for batch, pos in open_source(source).batches(columns=columns):
            yield self.transform(batch), extract_target(batch, self.spec.target, self.task, pos)

    def evaluate(
        self,
        source: SourceConfig | list[tuple[CSRChunk, np.ndarray]],
        metrics: tuple[str, ...] | None = None,
    ) -> dict[str, float]:
        """Exact metrics on a source holding the target column (or on already built chunks)."""
        names = metrics or self.spec.metric_names()
        found = [make_metric(n, exact=True) for n in names]
        chunks = self.holdout_chunks(source) if isinstance(source, SourceConfig) else source
        n = 0
        for chunk, y in chunks:
            pred = self.learner.predict(chunk)
            for m in found:
                m.update(y, pred)
            n += chunk.n_rows
        out = {m.name: float(m.value()) for m in found}
        out["rows"] = n
        return out

    # --- persistence
    def save(self, path: str | Path) -> None:
        """One file: FM parameters, vocabularies and builder states, spec, metric history."""
        pmeta, parrays = self.pipeline.state()
        fm = self.learner.params
        meta = {
            "kind": "pipeline",
            "spec": self.spec.model_dump(mode="json"),
            "learner_state": self.learner.state(),
            "pipeline": pmeta,
            "model": {"k": fm.k, "n_features": fm.n_features, "adagrad": fm.adagrad},
            "history": self.history,
            "summary": self.summary,
        }
        save_arrays(path, meta, {**fm.arrays(), **parrays})

    @classmethod
    def _from_saved(cls, meta: dict, arrays: dict[str, np.ndarray], path=None) -> TrainedModel:
        spec = parse_spec(meta["spec"], name=meta["spec"].get("name", "run"), origin=str(path))
        pipeline = FeaturePipeline.from_specs(spec.features)
        pipeline.load_state(meta["pipeline"], arrays)
        fm = FMParams.from_arrays(
            {k: v for k, v in arrays.items() if not k.startswith("space/")},
            seed=spec.model.seed,
            init_std=spec.model.init_std,
            adagrad_init=spec.learner.adagrad_init,
        )
        learner = SGDLearner(spec.model, spec.learner, task=spec.task, params=fm)
        learner.load_state(meta["learner_state"])
        model = cls(spec, pipeline, learner, meta.get("history", []))
        model.summary = meta.get("summary", {})
        return model

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        meta, arrays = load_arrays(path)
        if meta.get("kind") != "pipeline":
            raise SpecError(
                f"{path} holds a {meta.get('kind')} saved by the Python API, not a trained spec"
            )
        return cls._from_saved(meta, arrays, path)


# --------------------------------------------------------------------------------------------
# training


@dataclass
class TrainResult:
    model: TrainedModel
    model_path: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """One training run of a spec: epochs over the source, validation, early stopping, output."""

    def __init__(self, spec: Spec, progress: ProgressFn | None = None) -> None:
        self.spec = spec
        self.progress = progress
        self.source = open_source(spec.source)
        self.pipeline = FeaturePipeline.from_specs(spec.features)
        names = [b.name for b in self.pipeline.builders]
        self.learner = SGDLearner(
            spec.model,
            spec.learner,
            task=spec.task,
            group_regularization=self._group_regs(names, spec.groups),
        )
        for g, b in enumerate(self.pipeline.builders):
            p = b.params
            if p.reg_linear is not None or p.reg_factors is not None:
                self.learner.group_regularization.setdefault(
                    g, GroupRegularization(linear=p.reg_linear, factors=p.reg_factors)
                )
        self.columns = list(dict.fromkeys([*self.pipeline.columns(), spec.target.column]))
        self.model = TrainedModel(spec, self.pipeline, self.learner)
        self.history: list[dict[str, Any]] = []
        self.progressive: dict[str, Metric] = {}
        self.rows_read = 0
        self.rows_learnt = 0
        self.epoch = 0
        self._synced_ids = 0
        self._start = 0.0
        self._last_progress = 0.0
        self._next_eval = spec.validation.every_rows or None
        self._best: tuple[float, dict] | None = None
        self._bad_evals = 0
        self._holdout_cache: list | bool | None = None
        self.stopped_early = False

    @staticmethod
    def _group_regs(
        names: list[str], groups: dict[str, GroupRegularization]
    ) -> dict[int, GroupRegularization]:
        unknown = sorted(set(groups) - set(names))
        if unknown:
            raise SpecError(f"groups: {unknown} name no feature builder (builders: {names})")
        return {names.index(n): r for n, r in groups.items()}

    # --- the loop
    def run(self) -> TrainResult:
        spec = self.spec
        out_dir = spec.output_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        cache = self._make_cache(out_dir)
        self._start = time.perf_counter()
        self._initial_states = [b.state_dict() for b in self.pipeline.builders]
        try:
            for epoch in range(spec.learner.epochs):
                self.epoch = epoch
                self.progressive = {n: make_metric(n, exact=False) for n in spec.metric_names()}
                for chunk, y in self._shuffled(self._epoch_chunks(epoch, cache), epoch):
                    self._learn(chunk, y)
                self._record(kind="epoch")
                if self.stopped_early:
                    break
        finally:
            if cache is not None:
                cache.remove()
        if self._best is not None and spec.validation.restore_best:
            self._restore(self._best[1])
        self.learner.check_finite()
        seconds = time.perf_counter() - self._start
        summary = {
            "rows_read": self.rows_read,
            "rows_learnt": self.rows_learnt,
            "epochs": self.epoch + 1,
            "seconds": round(seconds, 3),
            "rows_per_second": round(self.rows_learnt / seconds, 1) if seconds > 0 else None,
            "features": int(self.learner.params.n_features),
            "stopped_early": self.stopped_early,
            **{
                f"progressive_{k}": v
                for k, v in self.history[-1].items()
                if k in spec.metric_names()
            },
        }
        if self._best is not None:
            summary["best_" + spec.validation.metric] = self._best[0]
        self.model.history = self.history
        self.model.summary = summary
        model_path = out_dir / spec.output.model
        self.model.save(model_path)
        write_history(self.history, out_dir)
        return TrainResult(self.model, model_path, self.history, summary)

    def _make_cache(self, out_dir: Path) -> ChunkCache | None:
        enabled = self.spec.cache.enabled
        if enabled is None:
            enabled = self.spec.learner.epochs > 1
        if not enabled:
            return None
        folder = Path(self.spec.cache.dir) if self.spec.cache.dir else out_dir
        return ChunkCache(folder / f".chunks-{time.time_ns()}.npy")

    def _epoch_chunks(
        self, epoch: int, cache: ChunkCache | None
    ) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        if epoch > 0 and cache is not None:
            yield from cache.replay()
            return
        if epoch > 0:
            # Without a cache, later epochs rebuild the rows exactly as the first did: builder
            # state (running statistics, causal histories) restarts from where it started, and
            # every key maps to the id it got then. Cache on or off gives the same model.
            for b, state in zip(self.pipeline.builders, self._initial_states, strict=True):
                b.load_state_dict(state)
        for batch, pos in self.source.batches(columns=self.columns):
            y = extract_target(batch, self.spec.target, self.spec.task, pos)
            chunk = self.pipeline.transform(batch, training=True)
            if epoch == 0:
                self.rows_read += batch.num_rows
            if cache is not None:
                cache.append(chunk, y)
            yield chunk, y

    def _shuffled(self, chunks, epoch: int):
        size = self.spec.learner.shuffle_buffer
        if not size:
            yield from chunks
            return
        window = ShuffleWindow(size, self.spec.model.seed, epoch)
        for chunk, y in chunks:
            yield from window.push(chunk, y)
        yield from window.flush()

    def _learn(self, chunk: CSRChunk, y: np.ndarray) -> None:
        space, params = self.pipeline.space, self.learner.params
        if space.n_ids > self._synced_ids:
            params.ensure_features(space.n_ids)
            params.group[self._synced_ids : space.n_ids] = space.id_group[
                self._synced_ids : space.n_ids
            ]
            self._synced_ids = space.n_ids
        pred = self.learner.learn(chunk, y)
        for m in self.progressive.values():
            m.update(y, pred)
        self.rows_learnt += chunk.n_rows
        if self._next_eval is not None and self.rows_learnt >= self._next_eval:
            self._next_eval += self.spec.validation.every_rows
            self._record(kind="cadence")
        now = time.perf_counter()
        if self.progress and now - self._last_progress >= self.spec.output.progress_every_seconds:
            self._last_progress = now
            self.progress(self._progress_event(now))

    def _progress_event(self, now: float) -> dict[str, Any]:
        seconds = now - self._start
        epochs = self.spec.learner.epochs
        per_epoch = self.rows_read if self.epoch > 0 else self.source.total_rows()
        eta = None
        rate = self.rows_learnt / seconds if seconds > 0 else 0.0
        if per_epoch and rate > 0:
            eta = max(per_epoch * epochs - self.rows_learnt, 0) / rate
        metric = self.spec.metric_names()[0]
        return {
            "rows": self.rows_learnt,
            "epoch": self.epoch + 1,
            "epochs": epochs,
            "rows_per_second": rate,
            "metric": metric,
            "value": self.progressive[metric].value(),
            "eta_seconds": eta,
            "total_rows": per_epoch * epochs if per_epoch else None,
        }

    # --- evaluation, history, early stopping
    def _record(self, kind: str) -> None:
        rec: dict[str, Any] = {
            "kind": kind,
            "epoch": self.epoch + 1,
            "rows": self.rows_learnt,
            "seconds": round(time.perf_counter() - self._start, 3),
        }
        for name, m in self.progressive.items():
            rec[name] = float(m.value())
        val = self.spec.validation
        if val.source is not None:
            self.learner.check_finite()
            scores = self.model.evaluate(self._holdout(kind))
            for name, v in scores.items():
                if name != "rows":
                    rec["holdout_" + name] = v
            self._early_stopping(scores[val.metric])
        self.history.append(rec)
        if self.progress:
            self.progress({**self._progress_event(time.perf_counter()), "record": rec})

    def _holdout(self, kind: str) -> SourceConfig | list[tuple[CSRChunk, np.ndarray]]:
        """The holdout source, or its built chunks kept in memory once features are final.

        At the end of the first epoch every vocabulary and statistic is complete and never
        changes again, so the holdout is built once then (if it has at most
        `validation.cache_rows` rows) and reused by every later evaluation.
        """
        val = self.spec.validation
        if isinstance(self._holdout_cache, list):
            return self._holdout_cache
        if kind != "epoch" or self._holdout_cache is False:
            return val.source
        if self._holdout_cache is None:
            chunks, rows = [], 0
            for chunk, y in self.model.holdout_chunks(val.source):
                rows += chunk.n_rows
                if rows > val.cache_rows:
                    self._holdout_cache = False
                    return val.source
                chunks.append((chunk, y))
            self._holdout_cache = chunks
        return self._holdout_cache

    def _early_stopping(self, value: float) -> None:
        higher = make_metric(self.spec.validation.metric).higher_is_better
        if self._best is None or (value > self._best[0] if higher else value < self._best[0]):
            self._best = (value, self._snapshot())
            self._bad_evals = 0
            return
        self._bad_evals += 1
        patience = self.spec.validation.patience
        if patience and self._bad_evals >= patience:
            self.stopped_early = True

    def _snapshot(self) -> dict[str, Any]:
        if not self.spec.validation.restore_best:
            return {}
        params = self.learner.params
        return {
            "arrays": {k: v.copy() for k, v in params.arrays().items()},
            "learner": self.learner.state(),
            "builders": [b.state_dict() for b in self.pipeline.builders],
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        if not snap:
            return
        spec = self.spec
        fm = FMParams.from_arrays(
            snap["arrays"],
            seed=spec.model.seed,
            init_std=spec.model.init_std,
            adagrad_init=spec.learner.adagrad_init,
        )
        self.learner.params = fm
        self.learner.load_state(snap["learner"])
        for b, s in zip(self.pipeline.builders, snap["builders"], strict=True):
            b.load_state_dict(s)


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
    spec: Spec | str | Path, overrides: list[str] | None = None, progress: ProgressFn | None = None
) -> TrainResult:
    """Run a spec (a Spec, or the path of a spec.yaml) and write its model and metric history."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    elif overrides:
        raise SpecError("overrides apply to a spec file; change the Spec object instead")
    return Trainer(spec, progress).run()
