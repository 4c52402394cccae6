"""The saved model of a spec: its feature pipeline (vocabularies, builder states) and learner (FM
parameters); predictions and evaluation on new data; the model file."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from streamfm.config import GroupRegularization, SourceConfig, format_validation_error
from streamfm.csr import CSRChunk
from streamfm.errors import CheckpointError, DataError, SpecError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.learners.base import Learner, make_learner, warm_start
from streamfm.metrics import make_metric
from streamfm.sources import open_source
from streamfm.spec import Spec, parse_spec
from streamfm.store.models import read_model_file, save_model_file


class TrainedModel:
    """A model trained from a spec: feature pipeline (with its vocabularies) and FM parameters."""

    def __init__(self, spec: Spec, pipeline: FeaturePipeline, learner: Learner, history=None):
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

    def predict(self, data: Any) -> np.ndarray:
        """Predictions (regression values, or P(class 1)) for rows in memory: a pandas
        DataFrame, a pyarrow Table or RecordBatch, anything with the Arrow stream interface, or a
        mapping of column names to values. Values never seen in training contribute nothing."""
        from streamfm.frames import to_table

        return self.predict_table(self._with_columns(to_table(data)))

    def recommend(self, data: Any, k: int = 10, exclude_seen: Any = None) -> pa.Table:
        """Task ranking: the top-k items of each context row of `data` (a pandas DataFrame, a
        pyarrow Table, a mapping of columns; the context builders' columns), as a table of the
        context key columns, `rank` (1 = best), `item` (original item values) and `score`.
        `exclude_seen`: (user, item) pairs (rows in memory, or a file path) whose items are
        never recommended to that user. SpecError for a model of another task."""
        from streamfm.recommendations import recommend

        return recommend(self, data, k, exclude_seen)

    def predict_one(self, x: Mapping[str, Any]) -> float:
        """The prediction for one row given as a dict of column values (River's predict_one)."""
        from streamfm.frames import rows_table

        return float(self.predict_table(self._with_columns(rows_table([x])))[0])

    def learn_one(self, x: Mapping[str, Any], y: Any) -> float:
        """Learn from one event given as a dict of column values and its target (River's
        learn_one), exactly as training would learn it as the next row of the stream: builder
        state (running statistics, histories, vocabularies) and parameters move on. Returns the
        prediction made before the update. Save the model to keep what it learnt."""
        from streamfm.frames import rows_table
        from streamfm.training.targets import target_values

        column = self.spec.target.column
        batch = next(iter(self._with_columns(rows_table([{**x, column: y}])).to_batches()))
        target, bad, reason = target_values(batch, self.spec.target, self.task)
        if bad[0]:
            raise DataError(reason, column=column, value=y)
        for b in self.pipeline.builders:
            for mask, col, why in b.invalid_rows(batch):
                if mask[0]:
                    raise DataError(why, column=col, value=x.get(col))
        chunk = self.pipeline.transform(batch, training=True)
        self.sync_features()
        return float(self.learner.learn(chunk, target)[0])

    def explain(self, data: Any):
        """Per-prediction contributions of rows in memory (see `streamfm.explain`): one row per
        term (bias, each feature's linear term, each pair's interaction; regression: clipping)
        whose contributions add up to the row's score. A pyarrow Table, or a pandas DataFrame
        when `data` is one."""
        from streamfm.explain import explain

        return explain(self, data)

    def sync_features(self, n_ids: int | None = None) -> None:
        """Make room in the parameters for ids the feature space allocated since the last chunk
        (with their feature groups): up to `n_ids` (default: every id allocated so far)."""
        space, params = self.pipeline.space, self.learner.params
        n = space.n_ids if n_ids is None else n_ids
        seen = params.n_features
        if n > seen:
            params.ensure_features(n)
            params.group[seen:n] = space.id_group[seen:n]

    def _with_columns(self, table: pa.Table) -> pa.Table:
        """`table`, checked to hold every column the builders read."""
        missing = [c for c in self.pipeline.columns() if c not in table.column_names]
        if missing:
            raise DataError(
                f"the rows lack the column(s) {missing} the model's features read (columns: "
                f"{table.column_names})"
            )
        return table

    def source_config(
        self, path: str | list[str], fmt: str | None = None, batch_size: int | None = None
    ) -> SourceConfig:
        """A SourceConfig for new data read like the training data (same CSV options);
        SpecError naming the option when `path` or `fmt` is not valid."""
        src = self.spec.source
        try:
            return SourceConfig(
                path=path, format=fmt, csv=src.csv, batch_size=batch_size or src.batch_size
            )
        except ValidationError as exc:
            detail = format_validation_error(exc, model=SourceConfig)
            raise SpecError(detail.replace("format:", "--format:", 1)) from None

    def predict_source(
        self, source: SourceConfig, keep_columns: list[str] | None = None
    ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        """Stream (kept columns, predictions) over a source, batch by batch."""
        columns = list(dict.fromkeys([*self.pipeline.columns(), *(keep_columns or [])]))
        for batch, _pos in open_source(source).batches(columns=columns):
            kept = batch.select(keep_columns) if keep_columns else None
            yield kept, self.predict_batch(batch)

    def holdout_chunks(
        self, source: SourceConfig | pa.Table
    ) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """Built (chunk, target) pairs of a source holding the target column (state frozen).
        Bad rows follow the source's `on_bad_rows` (quarantine counts as skip here). A table
        (the held-out rows of validation.split) is read in `source.batch_size` batches, its
        bad rows skipped."""
        from streamfm.training.badrows import BadRows
        from streamfm.training.targets import clean_batch, numeric_columns

        if isinstance(source, pa.Table):
            bad = BadRows("skip", None)
            for batch in source.to_batches(max_chunksize=self.spec.source.batch_size):
                batch, y = clean_batch(
                    batch, self.pipeline, self.spec.target, self.task, bad, None,
                    lambda idx: np.asarray(idx) + 1,
                )  # fmt: skip
                yield self.transform(batch), y
            return

        policy = "skip" if source.on_bad_rows == "quarantine" else source.on_bad_rows
        bad = BadRows(policy, None)
        src = open_source(source)
        src.column_types = numeric_columns(self.pipeline, self.spec.target, self.task)
        if policy != "fail":
            src.on_bad_row = bad.from_source
        columns = [*self.pipeline.columns(), *self.spec.target_columns()]
        for batch, pos in src.batches(columns=columns):
            batch, y = clean_batch(
                batch, self.pipeline, self.spec.target, self.task, bad, pos.path, src.batch_lines
            )
            yield self.transform(batch), y

    def evaluate(
        self,
        source: SourceConfig | pa.Table | list[tuple[CSRChunk, np.ndarray]],
        metrics: tuple[str, ...] | None = None,
        predict: Callable[[CSRChunk, int], np.ndarray] | None = None,
    ) -> dict[str, float]:
        """Exact metrics on a source (or table) holding the target column (or on already
        built chunks).

        `predict(chunk, first_row)` replaces the learner's `predict` (the training loop passes
        `learner.predict_holdout`)."""
        chunks = self.holdout_chunks(source) if not isinstance(source, list) else source
        if self.task == "ranking":
            return self.evaluate_ranking(chunks)
        names = metrics or self.spec.metric_names()
        found = [make_metric(n, exact=True) for n in names]
        n = 0
        for chunk, y in chunks:
            pred = self.learner.predict(chunk) if predict is None else predict(chunk, n)
            for m in found:
                m.update(y, pred)
            n += chunk.n_rows
        out = {m.name: float(m.value()) for m in found}
        out["rows"] = n
        return out

    def evaluate_ranking(self, chunks: Iterable[tuple[CSRChunk, np.ndarray]]) -> dict[str, float]:
        """Task ranking: each holdout positive's item ranked among ALL catalogue items for its
        context (`metrics.RankingMetrics` at ranking.k), the items of the user's recent
        training positives excluded (all but the held-out item itself)."""
        from streamfm.learners.item_scores import context_vectors, item_vectors, rank_counts
        from streamfm.metrics import RankingMetrics

        learner = self.learner
        p, cat = learner.params, learner.catalogue
        item_bias, item_q = item_vectors(p, cat)
        found = RankingMetrics(self.spec.ranking.k)
        for chunk, y in chunks:
            keep = np.flatnonzero(np.asarray(y) > 0)
            if len(keep) < chunk.n_rows:
                from streamfm.csr import take_rows

                chunk = take_rows(chunk, keep)
            items = first_of_group(chunk, p, learner.item_group)
            users = first_of_group(chunk, p, learner.user_group)
            cb, cq = context_vectors(
                p, chunk.indptr, chunk.indices, chunk.values, learner.item_groups
            )
            ex_ptr, ex = learner.recent.items_of(users)
            above, ties, n = rank_counts(
                cb, cq, item_bias, item_q, cat.item_index(items), ex_ptr, ex
            )
            found.update(above, ties, n, users=users)
        return found.values()

    # --- persistence
    def state_dict(self) -> dict[str, Any]:
        """The learner (parameters, counters) and the feature pipeline (space, builders)."""
        return {"learner": self.learner.state_dict(), "features": self.pipeline.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError when the parameters and the feature
        space do not describe the same features (a damaged or crafted file)."""
        self.learner.load_state_dict(state["learner"])
        self.pipeline.load_state_dict(state["features"])
        params, space = self.learner.params, self.pipeline.space
        n = params.n_features
        if n > space.n_ids:
            raise ValueError(f"the parameters hold {n} features, the feature space {space.n_ids}")
        if not np.array_equal(params.group[:n], space.id_group[:n]):
            raise ValueError("the features' groups differ between the parameters and the space")

    def save(self, path: str | Path) -> None:
        """One file: FM parameters, vocabularies and builder states, spec, metric history."""
        meta = {
            "kind": "pipeline",
            "spec": self.spec.model_dump(mode="json"),
            "history": self.history,
            "summary": self.summary,
        }
        save_model_file(path, meta, self.state_dict())

    def warm_start(self, path: str | Path) -> None:
        """Start from the model file `path` (written by `streamfm train`, any method): its
        feature vocabularies and builder states, and its parameters (`learners.base.warm_start`).
        SpecError naming model.init_from when it does not fit this spec."""
        meta, state = read_model_file(path)
        where = f"model.init_from: {path}"
        if meta.get("kind") != "pipeline":
            raise SpecError(
                f"{where} holds a {meta.get('kind')} saved by the Python API; a warm start needs "
                "a model written by `streamfm train`"
            )
        task = meta.get("spec", {}).get("task", "regression")
        if task != self.task:
            raise SpecError(f"{where} was trained for {task}, this spec is for {self.task}")
        try:
            self.pipeline.load_state_dict(state["features"])
            warm_start(self.learner, state["learner"])
        except (SpecError, ValueError) as exc:
            raise SpecError(
                f"{where} does not fit this spec ({exc}): a warm start needs the same features "
                "and model.k"
            ) from None

    @classmethod
    def from_spec(cls, spec: Spec) -> TrainedModel:
        """A model of the spec before any training (fresh builders and parameters)."""
        pipeline = FeaturePipeline.from_specs(spec.builders())
        learner = make_learner(
            spec.model,
            spec.learner,
            spec.task,
            group_regularization(spec),
            ranking=ranking_setup(spec),
        )
        return cls(spec, pipeline, learner)

    @classmethod
    def _from_saved(
        cls, meta: dict, state: dict[str, Any], path=None, *, trust_plugins: Iterable[str] = ()
    ) -> TrainedModel:
        from streamfm.features.registry import trusted_plugins

        if not isinstance(meta.get("spec"), dict):
            raise CheckpointError(f"{path}: the model file holds no spec")
        with trusted_plugins(trust_plugins):
            spec = parse_spec(meta["spec"], name=meta["spec"].get("name", "run"), origin=str(path))
            model = cls.from_spec(spec)
        try:
            model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{path} is damaged: {exc}") from None
        model.history = meta.get("history", [])
        model.summary = meta.get("summary", {})
        return model

    @classmethod
    def load(cls, path: str | Path, *, trust_plugins: Iterable[str] = ()) -> TrainedModel:
        """The model of a model file written by `save`; a "module:Class" feature builder of
        its spec is imported only if `trust_plugins` names it (see `store.models.load_model`)."""
        meta, state = read_model_file(path)
        if meta.get("kind") != "pipeline":
            raise SpecError(
                f"{path} holds a {meta.get('kind')} saved by the Python API, not a trained spec"
            )
        return cls._from_saved(meta, state, path, trust_plugins=trust_plugins)


def first_of_group(chunk: CSRChunk, params, group: int) -> np.ndarray:
    """Per row of `chunk`, the first feature id of feature group `group` (-1: none, or only
    ids never seen in training)."""
    out = np.full(chunk.n_rows, -1, dtype=np.int64)
    if group < 0 or chunk.n_rows == 0:
        return out
    idx = chunk.indices.astype(np.int64)
    seen = (idx >= 0) & (idx < params.n_features)
    hit = np.flatnonzero(seen & (params.group[np.where(seen, idx, 0)] == group))
    if len(hit):
        rows = np.searchsorted(chunk.indptr, hit, side="right") - 1
        first_rows, first = np.unique(rows, return_index=True)
        out[first_rows] = idx[hit[first]]
    return out


def ranking_setup(spec: Spec) -> dict[str, Any] | None:
    """Task ranking: the feature groups (builder indices) of the item, the item side and the
    user, as `learners.ranking.RankingLearner` takes them; None for other tasks."""
    if spec.task != "ranking":
        return None
    names = [b.name for b in spec.builders()]
    r = spec.ranking
    return {
        "config": r,
        "item_group": names.index(r.item),
        "item_groups": [names.index(n) for n in r.item_features],
        "user_group": names.index(r.user) if r.user is not None else None,
    }


def group_regularization(spec: Spec) -> dict[int, GroupRegularization]:
    """Per feature group (builder index) L2 overrides: the spec's `groups`, then the builders'
    own reg_linear / reg_factors."""
    names = [b.name for b in spec.builders()]
    unknown = sorted(set(spec.groups) - set(names))
    if unknown:
        raise SpecError(f"groups: {unknown} name no feature builder (builders: {names})")
    out = {names.index(n): r for n, r in spec.groups.items()}
    for g, b in enumerate(spec.builders()):
        p = b.params
        if p.reg_linear is not None or p.reg_factors is not None:
            out.setdefault(g, GroupRegularization(linear=p.reg_linear, factors=p.reg_factors))
    return out
