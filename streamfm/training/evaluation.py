"""Evaluation during training: holdout metrics, early stopping with the best model, the history
of records (metrics.json / metrics.csv)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.csr import CSRChunk
from streamfm.errors import OutputError
from streamfm.metrics import make_metric
from streamfm.spec import Spec
from streamfm.store.archive import write_atomic
from streamfm.store.state import copy_state
from streamfm.store.trained import TrainedModel


class Evaluation:
    """The run's history, holdout evaluation and early stopping (`best` is a snapshot of the
    model at the best holdout value when `validation.restore_best`)."""

    def __init__(self, spec: Spec, model: TrainedModel, split=None) -> None:
        self.spec = spec
        self.model = model
        self.split = split  # validation.split: a training.split.LeaveLastOut (its table)
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best: dict[str, Any] | None = None
        self.bad_evals = 0
        self.stopped_early = False
        self._holdout: list[tuple[CSRChunk, np.ndarray]] | bool | None = None  # not checkpointed

    def holdout_scores(self, kind: str, epoch: int) -> dict[str, float]:
        """Holdout metrics ("holdout_<name>") of the current model, if there is a holdout; the
        early-stopping bookkeeping follows the validation metric."""
        val = self.spec.validation
        if not self.spec.has_holdout():
            return {}
        learner = self.model.learner
        learner.check_finite()
        scores = self.model.evaluate(
            self._holdout_data(kind, epoch), predict=learner.predict_holdout
        )
        self._early_stopping(scores[val.metric])
        return {f"holdout_{n}": v for n, v in scores.items() if n not in ("rows", "unranked")}

    def _holdout_data(
        self, kind: str, epoch: int
    ) -> SourceConfig | pa.Table | list[tuple[CSRChunk, np.ndarray]]:
        """The holdout source (validation.split: the held-out rows), or its built chunks kept
        in memory once features are final.

        From the end of the first epoch on, the main pipeline's state never changes, so the
        holdout is built once (if it has at most `validation.cache_rows` rows) and reused.
        """
        val = self.spec.validation
        source = val.source if self.split is None else self._split_table()
        if isinstance(self._holdout, list):
            return self._holdout
        if self._holdout is False or (epoch == 0 and kind != "epoch") or self.spec.source.follow:
            return source
        chunks, rows = [], 0
        for chunk, y in self.model.holdout_chunks(source):
            rows += chunk.n_rows
            if rows > val.cache_rows:
                self._holdout = False
                return source
            chunks.append((chunk, y))
        self._holdout = chunks
        return chunks

    def _split_table(self) -> pa.Table:
        t = self.split.table
        if t is None:  # no key had a usable event: an empty holdout
            cols = [*self.model.pipeline.columns(), *self.spec.target_columns()]
            return pa.table({c: pa.array([], pa.string()) for c in dict.fromkeys(cols)})
        return t

    def _early_stopping(self, value: float) -> None:
        # ranking metrics (ndcg, recall, ...) are all higher-is-better
        higher = (
            self.spec.task == "ranking" or make_metric(self.spec.validation.metric).higher_is_better
        )
        if self.best_value is None or (
            value > self.best_value if higher else value < self.best_value
        ):
            self.best_value = value
            self.best = self._snapshot() if self.spec.validation.restore_best else None
            self.bad_evals = 0
            return
        self.bad_evals += 1
        patience = self.spec.validation.patience
        # A followed stream has no end to stop early at: running out of patience ends nothing
        # there (the best model is still kept with restore_best).
        if patience and self.bad_evals >= patience and not self.spec.source.follow:
            self.stopped_early = True

    def _snapshot(self) -> dict[str, Any]:
        return copy_state(
            {
                "learner": self.model.learner.state_dict(),
                "builders": [b.state_dict() for b in self.model.pipeline.builders],
            }
        )

    def restore_best(self) -> None:
        """Make the model the best one seen (if a snapshot was kept)."""
        if self.best is None:
            return
        self.model.learner.load_state_dict(copy_state(self.best["learner"]))
        for b, s in zip(self.model.pipeline.builders, self.best["builders"], strict=True):
            b.load_state_dict(copy_state(s))

    def saved_record(self) -> dict[str, Any]:
        """The history record of the model being saved: the best one when restored, else the last."""
        if self.best is not None and self.best_value is not None:
            key = "holdout_" + self.spec.validation.metric
            for rec in self.history:
                if rec.get(key) == self.best_value:
                    return rec
        return self.history[-1] if self.history else {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best_value": self.best_value,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "best": self.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = state["history"]
        self.best_value, self.bad_evals = state["best_value"], int(state["bad_evals"])
        self.stopped_early = bool(state["stopped_early"])
        self.best = state["best"]


def write_history(history: list[dict[str, Any]], out_dir: Path) -> None:
    """metrics.json (a list of records) and metrics.csv (one row per record) in `out_dir`,
    each written to a temporary file and renamed (a reader never sees half a file, and a
    symbolic link in their place is replaced, not written through)."""
    keys: dict[str, None] = {}
    for rec in history:
        keys.update(dict.fromkeys(rec))

    def csv_text(f) -> None:
        text = io.TextIOWrapper(f, newline="", encoding="utf-8")
        w = csv.DictWriter(text, fieldnames=list(keys))
        w.writeheader()
        w.writerows(history)
        text.flush()
        text.detach()

    try:
        write_atomic(
            out_dir / "metrics.json", lambda f: f.write(json.dumps(history, indent=1).encode())
        )
        write_atomic(out_dir / "metrics.csv", csv_text)
    except OSError as exc:
        raise OutputError(
            f"cannot write the metric history in {out_dir}: {exc.strerror or exc}"
        ) from exc
