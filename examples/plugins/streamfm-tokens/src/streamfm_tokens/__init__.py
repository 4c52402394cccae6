"""`tokens`: bag of words of a text column, one feature per distinct word, 1/sqrt(n) scaled.

An example of a streamfm feature-builder plugin: a pydantic `Params` model, `columns`, and a
vectorised `build` that turns a RecordBatch into a Block of keys (pyarrow compute only; no Python
loop per row). Registered through the entry point group "streamfm.features" in pyproject.toml.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from streamfm.features.arrow import column, flatten_list, ragged_block_parts
from streamfm.features.base import Block, BuilderParams, FeatureBuilder


class TokensParams(BuilderParams):
    column: str = Field(description="text column")
    min_length: int = Field(1, ge=1, description="ignore shorter words")
    lowercase: bool = True
    normalize: Literal["none", "mean", "sqrt"] = "sqrt"


class TokensBuilder(FeatureBuilder):
    kind = "tokens"
    Params = TokensParams
    params: TokensParams

    def columns(self) -> list[str]:
        return [self.params.column]

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        text = column(batch, self.params.column, self.name)
        if self.params.lowercase:
            text = pc.utf8_lower(text)
        words = pc.split_pattern_regex(text, r"[^\w]+")  # list<string> per row, null stays null
        indptr, flat = flatten_list(words)
        keep = pc.greater_equal(pc.utf8_length(flat), self.params.min_length)
        # Re-count each row's kept words so indptr stays aligned with the filtered keys.
        kept = np.asarray(pc.fill_null(keep, False).to_numpy(zero_copy_only=False), dtype=np.int64)
        csum = np.concatenate([[0], np.cumsum(kept)])
        indptr = csum[indptr]
        flat = flat.filter(pa.array(kept.astype(bool)))
        indptr, keys, values = ragged_block_parts(indptr, flat, None, self.params.normalize)
        return Block(indptr, values, keys=keys)
