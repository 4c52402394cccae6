"""`join`: features of a key looked up in a side table, built by nested builders.

E.g. a movie's 19 genre flags and release date from ML-100K's u.item (no header, "|"-separated;
docs/features.md has the whole recipe), or a user's age and occupation from u.user:

    - type: join
      key: item                      # column of the events
      table:
        path: u.item
        format: csv
        csv: {delimiter: "|", header: false, quote_char: null, column_types: {item: string},
              column_names: [item, title, release_date, video_release_date, imdb_url, unknown,
                             action, adventure, ..., western]}   # all 24 columns
      table_key: item                # key column of the side table (default: key)
      features:
        - {type: numeric, name: genre, columns: [unknown, action, adventure, ..., western]}
        - {type: categorical, name: released, columns: [release_date]}

The side table is read once and built by the nested builders (state such as statistics learnt
over the whole table first); the result
is saved with the model, so predicting does not need the table. Keys missing from the table get no
features. All side features form one feature group (regularised together).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from streamfm.config import SourceConfig
from streamfm.csr import gather
from streamfm.errors import DataError
from streamfm.features.arrow import as_string_keys, column
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.features.implicit import Vocabulary
from streamfm.numpy_arrow import from_numpy


class JoinParams(BuilderParams):
    key: str = Field(description="column of the events that names a row of the table")
    table: SourceConfig = Field(description="the side table (read once, whole)")
    table_key: str | None = Field(None, description="key column of the table (default: key)")
    features: list[dict[str, Any]] = Field(
        min_length=1, description="nested builders over the table"
    )

    @field_validator("features")
    @classmethod
    def _nested(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from streamfm.features.registry import parse_builders

        parse_builders(v)  # errors name the nested entry
        return v


class JoinBuilder(FeatureBuilder):
    kind = "join"
    Params = JoinParams
    params: JoinParams

    def __init__(self, name: str, params: JoinParams) -> None:
        super().__init__(name, params)
        from streamfm.features.pipeline import FeaturePipeline

        self.nested = FeaturePipeline.from_specs(params.features)
        self.rows = Vocabulary()
        self._table = None  # (indptr, nested ids, values) of every table row

    def columns(self) -> list[str]:
        return [self.params.key]

    def key_name(self, key: Any) -> str:
        return self.nested.feature_name(int(key))

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        if self._table is None:
            self._load_table()
        t_indptr, t_ids, t_values = self._table
        rows = self.rows.lookup(
            as_string_keys(column(batch, self.params.key, self.name)), grow=False
        )
        indptr, src = gather(t_indptr, rows)
        return Block(indptr, t_values[src], keys=from_numpy(t_ids[src].astype(np.int64)))

    def _load_table(self) -> None:
        from streamfm.csr import concat
        from streamfm.sources import open_source

        p = self.params
        key_col = p.table_key or p.key
        columns = list(dict.fromkeys([key_col, *self.nested.columns()]))
        batches = [b for b, _pos in open_source(p.table).batches(columns=columns)]
        # The table is static, not a stream: learn the nested state (vocabularies, statistics)
        # over all of it first, then build every row with the final state.
        for batch in batches:
            self.nested.transform(batch, training=True)
        keys = [as_string_keys(column(b, key_col, self.name)) for b in batches]
        chunks = [self.nested.transform(b, training=False) for b in batches]
        if not chunks:
            raise DataError(
                f"feature builder '{self.name}': the side table is empty", path=str(p.table.path)
            )
        idx = self.rows.lookup(pa.concat_arrays(keys), grow=True)
        if len(self.rows) != len(idx):
            raise DataError(
                f"feature builder '{self.name}': the side table's key column '{key_col}' has repeated "
                "or missing values; each key must name one row",
                path=str(p.table.path),
            )
        table = concat(chunks)
        self._table = (table.indptr, table.indices, table.values)

    def state_dict(self) -> dict[str, Any]:
        if self._table is None:
            self._load_table()
        indptr, ids, values = self._table
        return {
            "rows": self.rows.state(),
            "nested": self.nested.state_dict(),
            "indptr": indptr.copy(),
            "ids": ids.copy(),
            "values": values.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = Vocabulary.from_state(state["rows"])
        self.nested.load_state_dict(state["nested"])
        self._table = (
            np.asarray(state["indptr"]),
            np.asarray(state["ids"]),
            np.asarray(state["values"]),
        )
