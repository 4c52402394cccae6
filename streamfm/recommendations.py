"""Top-k items for contexts from a model of task ranking: `model.recommend` and `streamfm
recommend` (Parquet / CSV out).

A context row holds the columns of the context builders (the user, ...); item-side columns it
lacks are taken as missing. Per batch of contexts: the context part of the score
(`learners.item_scores.context_vectors`, item-side groups skipped), then `recommend.top_k` over
the catalogue's precomputed item vectors (blocked numba + BLAS, bounded memory). Output rows:
the context's key columns (the context builders' input columns), `rank` (1 = best), `item` (the
original item value, `ItemCatalogue.item_keys`) and `score` (the FM score of context + item);
a context with fewer than k candidate items gets fewer rows.

Exclude-seen: a history of (user, item) pairs — the `ranking.user` builder's key and the
`ranking.item` builder's item — whose items are never recommended to that user (items outside
the catalogue are ignored). It is held in memory: 8 bytes per pair plus the distinct users.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.errors import DataError, SpecError
from streamfm.numpy_arrow import from_numpy, to_numpy


def check_ranking(model, where: str = "the model") -> None:
    if model.task != "ranking":
        raise SpecError(
            f"{where} was trained for task {model.task}: recommendations need a model of task "
            "ranking (an item catalogue to rank)"
        )


class Recommender:
    """What a model needs to recommend: item vectors and keys computed once."""

    def __init__(self, model) -> None:
        from streamfm.learners.item_scores import item_vectors

        check_ranking(model)
        self.model = model
        learner = model.learner
        self.learner = learner
        self.catalogue = learner.catalogue
        self.item_bias, self.item_q = item_vectors(learner.params, self.catalogue)
        self.item_keys = self.catalogue.item_keys(model.pipeline, learner.item_group)
        builders = model.pipeline.builders
        item_side = set(learner.item_groups)
        item_cols = {c for g in item_side for c in builders[g].columns()}
        ctx: list[str] = []
        for g, b in enumerate(builders):
            if g not in item_side:
                ctx += [c for c in b.columns() if c not in item_cols]
        self.context_columns = list(dict.fromkeys(ctx))
        self.user_builder = builders[learner.user_group] if learner.user_group >= 0 else None
        self.item_builder = builders[learner.item_group]
        self._seen: tuple[pa.Array, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ exclusions
    def set_history(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Exclude-seen: (user, item) pairs; returns the pairs whose item is in the catalogue."""
        from streamfm.training.split import key_values

        if self.user_builder is None:
            raise SpecError("exclude-seen needs ranking.user (the builder of the user key)")
        where = {k: i for i, k in enumerate(self.item_keys.to_pylist())}
        users, items = [], []
        for batch in batches:
            u = key_values(self.user_builder, batch)
            it = key_values(self.item_builder, batch)
            codes, uniques = _codes(it)
            idx = np.array([where.get(v, -1) for v in uniques] + [-1], dtype=np.int64)[codes]
            ok = (idx >= 0) & to_numpy(u.is_valid())
            users.append(u.filter(from_numpy(ok)))
            items.append(idx[ok])
        if not users:
            self._seen = (pa.array([], pa.string()), np.zeros(1, np.int64), np.zeros(0, np.int64))
            return 0
        u = pa.concat_arrays([a.cast(pa.string()) for a in users])
        it = np.concatenate(items)
        enc = pc.dictionary_encode(u)
        codes = to_numpy(enc.indices).astype(np.int64)
        order = np.argsort(codes, kind="stable")
        ptr = np.zeros(len(enc.dictionary) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum(np.bincount(codes, minlength=len(enc.dictionary)))
        self._seen = (enc.dictionary, ptr, it[order])
        return len(it)

    def _exclusions(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self._seen is None:
            return None, None
        from streamfm.training.split import key_values

        users, ptr, items = self._seen
        at = pc.index_in(key_values(self.user_builder, batch).cast(pa.string()), value_set=users)
        at = to_numpy(pc.fill_null(at, -1)).astype(np.int64)
        counts = np.where(at >= 0, ptr[at + 1] - ptr[np.maximum(at, 0)], 0)
        out_ptr = np.zeros(len(at) + 1, dtype=np.int64)
        out_ptr[1:] = np.cumsum(counts)
        starts = np.where(at >= 0, ptr[np.maximum(at, 0)], 0)
        # gather each context's slice of the user's items
        offs = np.arange(out_ptr[-1]) - np.repeat(out_ptr[:-1], counts)
        return out_ptr, items[np.repeat(starts, counts) + offs]

    # ------------------------------------------------------------------ scoring
    def full_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`batch` with every column the builders read (missing item-side ones as nulls)."""
        missing = [c for c in self.context_columns if c not in batch.schema.names]
        if missing:
            raise DataError(
                f"the contexts lack the column(s) {missing} the model's context features read "
                f"(columns: {batch.schema.names})"
            )
        cols = {n: batch.column(n) for n in batch.schema.names}
        for c in self.model.pipeline.columns():
            if c not in cols:
                cols[c] = pa.nulls(batch.num_rows, pa.string())
        return pa.RecordBatch.from_pydict(cols)

    def top(self, batch: pa.RecordBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(catalogue indices (n, k), scores (n, k)) of the contexts of `batch` (-1 / -inf
        beyond a context's candidates)."""
        from streamfm.learners.item_scores import context_vectors
        from streamfm.recommend import top_k

        full = self.full_rows(batch)
        chunk = self.model.transform(full)
        cb, cq = context_vectors(
            self.learner.params, chunk.indptr, chunk.indices, chunk.values,
            self.learner.item_groups,
        )  # fmt: skip
        ptr, ex = self._exclusions(full)
        return top_k(cb, cq, self.item_bias, self.item_q, k, ptr, ex)

    def table(self, batch: pa.RecordBatch, k: int) -> pa.Table:
        """Long output of one batch: context key columns, rank, item, score."""
        items, scores = self.top(batch, k)
        ok = items >= 0
        rows = np.repeat(np.arange(batch.num_rows), ok.sum(axis=1))
        ranks = np.tile(np.arange(1, k + 1), batch.num_rows)[ok.reshape(-1)]
        out = {c: batch.column(c).take(from_numpy(rows)) for c in self.context_columns}
        out["rank"] = pa.array(ranks, pa.int32())
        out["item"] = self.item_keys.take(pa.array(items[ok], pa.int64()))
        out["score"] = pa.array(scores[ok], pa.float64())
        return pa.table(out)


def _codes(values: pa.Array) -> tuple[np.ndarray, list]:
    from streamfm.features.arrow import dictionary_codes

    return dictionary_codes(values)


def _history_batches(history: Any, model) -> Iterator[pa.RecordBatch]:
    """A history given as a path (file, glob, folder) or as rows in memory."""
    from streamfm.frames import to_table
    from streamfm.sources import open_source

    if history is None:
        return iter(())
    if isinstance(history, str | Path):
        return (b for b, _ in open_source(model.source_config(str(history))).batches())
    return iter(to_table(history, "exclude_seen").to_batches())


def recommend(model, data: Any, k: int, exclude_seen: Any = None) -> pa.Table:
    """Top-k items per context row of `data` (in memory: DataFrame, Table, mapping): a table
    of the context key columns, rank, item, score (see the module docstring)."""
    from streamfm.frames import to_table

    rec = Recommender(model)
    if exclude_seen is not None:
        rec.set_history(_history_batches(exclude_seen, model))
    table = to_table(data, "contexts")
    batches = table.to_batches(max_chunksize=4096) or [
        pa.RecordBatch.from_pylist([], schema=table.schema)
    ]
    return pa.concat_tables([rec.table(b, int(k)) for b in batches])


def write_recommendations(
    model, source, output: str | Path, k: int, exclude_seen: str | None = None
) -> tuple[int, int]:
    """`streamfm recommend`: top-k items of every context row of `source` (streamed batch by
    batch) into `output` (.parquet or .csv; "-": CSV on stdout). Returns (contexts, rows)."""

    from streamfm.sources import open_source
    from streamfm.store.archive import write_atomic

    to_stdout = str(output) == "-"
    suffix = ".csv" if to_stdout else Path(output).suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise SpecError(f"--output {output}: use a .parquet or .csv file name, or - for stdout")
    if int(k) < 1:
        raise SpecError(f"-k {k}: the number of items must be >= 1")
    rec = Recommender(model)
    if exclude_seen is not None:
        rec.set_history(_history_batches(exclude_seen, model))
    counts = [0, 0]

    def write(f) -> None:
        writer = None
        src = open_source(source)
        for batch, _pos in src.batches(columns=rec.context_columns):
            table = rec.table(batch, int(k))
            if writer is None:
                writer = _writer(f, table.schema, suffix)
            writer.write_table(table)
            counts[0] += batch.num_rows
            counts[1] += table.num_rows
        if writer is None:  # no contexts: still a valid, empty file
            schema = pa.schema(
                [*(pa.field(c, pa.string()) for c in rec.context_columns),
                 pa.field("rank", pa.int32()), pa.field("item", rec.item_keys.type),
                 pa.field("score", pa.float64())]
            )  # fmt: skip
            writer = _writer(f, schema, suffix)
        writer.close()

    if to_stdout:
        import sys

        sys.stdout.flush()
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        write_atomic(output, write)
    return counts[0], counts[1]


def _writer(f, schema: pa.Schema, suffix: str):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    return pacsv.CSVWriter(f, schema) if suffix == ".csv" else pq.ParquetWriter(f, schema)
