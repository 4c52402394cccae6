"""A model trained from a spec: feature pipeline (vocabularies, builder states) + FM parameters.

Also the target column's extraction, shared by training and evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.config import SourceConfig
from streamfm.csr import CSRChunk
from streamfm.errors import DataError, SpecError
from streamfm.features.arrow import as_float, as_string_keys, dictionary_codes
from streamfm.features.pipeline import FeaturePipeline
from streamfm.learners.sgd import SGDLearner
from streamfm.metrics import make_metric
from streamfm.model import FMParams
from streamfm.persist import load_arrays, save_arrays
from streamfm.sources import open_source
from streamfm.spec import Spec, TargetConfig, parse_spec

# --------------------------------------------------------------------------------------------
# targets


def target_values(
    batch: pa.RecordBatch, target: TargetConfig, task: str, path: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(targets as float64 (classification: 0/1), mask of rows whose target is bad, the reason).

    A missing target column is an error for the whole batch (DataError naming the file).
    """
    idx = batch.schema.get_field_index(target.column)
    if idx < 0:
        raise DataError(
            f"the target column '{target.column}' is not in the data (columns: "
            f"{', '.join(batch.schema.names)}); set target.column",
            path=path,
        )
    col = batch.column(idx)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if task == "classification" and target.positive is not None:
        keys = as_string_keys(col)
        bad = ~keys.is_valid().to_numpy(zero_copy_only=False)
        positive = pa.array(
            [str(v).lower() if isinstance(v, bool) else str(v) for v in target.positive]
        )
        y = pc.fill_null(pc.is_in(keys, value_set=positive), False).to_numpy(zero_copy_only=False)
        return y.astype(np.float64), bad, "the target is missing"
    try:
        y = as_float(col, target.column, "target")
    except DataError:
        # Text that is not a number: find the rows, one distinct value at a time.
        codes, uniques = dictionary_codes(as_string_keys(col))
        values = np.array([_to_float(v) for v in uniques] + [np.nan], dtype=np.float64)
        y = values[codes]  # code -1 (missing) picks the trailing NaN
    bad = ~np.isfinite(y)
    reason = "the target is missing or not a finite number"
    if task == "classification":
        wrong = ~bad & ~((y == 0) | (y == 1) | (y == -1))
        if wrong.any():
            return (
                (y == 1).astype(np.float64),
                bad | wrong,
                ("classification labels must be 0/1, -1/+1 or true/false (or set target.positive)"),
            )
        y = (y == 1).astype(np.float64)
    return y, bad, reason


def _to_float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def clean_batch(
    batch: pa.RecordBatch,
    pipeline: FeaturePipeline,
    target: TargetConfig,
    task: str,
    bad_rows,
    path: str | None,
    first_row: int,
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The batch without its bad rows (bad target, values a builder cannot use), and its targets.

    Bad rows go to `bad_rows` (a streamfm.badrows.BadRows: fail raises, skip counts, quarantine
    writes them). first_row: 1-based row number of the batch's first row in `path`.
    """
    y, bad, reason = target_values(batch, target, task, path)
    reasons = np.where(bad, reason, None).astype(object)
    columns = np.where(bad, target.column, None).astype(object)
    for b in pipeline.builders:
        for mask, column, why in b.invalid_rows(batch):
            new = mask & ~bad
            reasons[new], columns[new] = why, column
            bad |= mask
    if not bad.any():
        return batch, y
    bad_rows.from_batch(batch, bad, list(reasons[bad]), list(columns[bad]), path, first_row)
    keep = ~bad
    return batch.filter(pa.array(keep)), y[keep]


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
        """Built (chunk, target) pairs of a source holding the target column (state frozen).
        Bad rows follow the source's `on_bad_rows` (quarantine counts as skip here)."""
        from streamfm.badrows import BadRows

        policy = "skip" if source.on_bad_rows == "quarantine" else source.on_bad_rows
        bad = BadRows(policy, None)
        src = open_source(source)
        if policy != "fail":
            src.on_bad_row = bad.from_source
        columns = [*self.pipeline.columns(), self.spec.target.column]
        for batch, pos in src.batches(columns=columns):
            first = pos.row - batch.num_rows + 1
            batch, y = clean_batch(
                batch, self.pipeline, self.spec.target, self.task, bad, pos.path, first
            )
            yield self.transform(batch), y

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
