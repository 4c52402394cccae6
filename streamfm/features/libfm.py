"""`libfm`: rows already in `idx:val` form (the libFM / libSVM text source's `idx` and `val` columns).

File indices are keys: they get compact global ids on first sight, so sparse or huge (hashed)
indices cost nothing, and indices never seen in training contribute nothing when predicting.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from streamfm.features.arrow import column, flatten_list
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.numpy_arrow import to_numpy


class LibFMParams(BuilderParams):
    index_column: str = "idx"
    value_column: str = "val"


class LibFMBuilder(FeatureBuilder):
    kind = "libfm"
    Params = LibFMParams
    params: LibFMParams

    def columns(self) -> list[str]:
        return [self.params.index_column, self.params.value_column]

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        indptr, idx = flatten_list(column(batch, self.params.index_column, self.name))
        vptr, val = flatten_list(column(batch, self.params.value_column, self.name))
        if not np.array_equal(indptr, vptr):
            raise ValueError(f"builder '{self.name}': index and value lists differ in length")
        values = np.asarray(to_numpy(val), dtype=np.float32)
        return Block(indptr, values, keys=idx)
