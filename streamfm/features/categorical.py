"""`categorical`: one-hot of a column's value, or of several columns crossed (e.g. user × time bin).

Exact vocabulary (ids allocated on first sight, growing) or hashed into 2**hash_bits fixed ids.
At predict time, values never seen in training contribute nothing.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from streamfm.config import MAX_SEED
from streamfm.features.arrow import as_string_keys, column
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.features.keyindex import key_hashes
from streamfm.numpy_arrow import to_numpy
from streamfm.rng import splitmix64

MISSING_KEY = "\x00missing"


class CategoricalParams(BuilderParams):
    columns: list[str] = Field(min_length=1, description="one column, or several to cross")
    hash_bits: int | None = Field(None, ge=1, le=30, description="hash into 2**hash_bits ids")
    hash_seed: int = Field(0, ge=0, le=MAX_SEED)
    missing: Literal["ignore", "category"] = Field(
        "ignore", description="a missing value gives no feature, or its own category"
    )
    value: float = Field(1.0, description="value of the one-hot entry")
    prefix: int | None = Field(
        None,
        ge=1,
        description="use only the first N characters of each value (e.g. zip code areas)",
    )

    @field_validator("columns", mode="before")
    @classmethod
    def _one_column(cls, v):
        return [v] if isinstance(v, str) else v


class CategoricalBuilder(FeatureBuilder):
    kind = "categorical"
    Params = CategoricalParams
    params: CategoricalParams

    def columns(self) -> list[str]:
        return list(self.params.columns)

    def reserved(self) -> int:
        return 0 if self.params.hash_bits is None else 1 << self.params.hash_bits

    def keys(self, batch: pa.RecordBatch) -> pa.Array:
        """The category key of every row as a string (null where missing)."""
        cols = [as_string_keys(column(batch, c, self.name)) for c in self.params.columns]
        if self.params.prefix is not None:
            cols = [pc.utf8_slice_codeunits(c, 0, self.params.prefix) for c in cols]
        if len(cols) == 1:
            return cols[0]
        return pc.binary_join_element_wise(*cols, "|")

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        keys = self.keys(batch)
        if self.params.missing == "category":
            keys = pc.fill_null(keys, MISSING_KEY)
        present = to_numpy(keys.is_valid())
        keys = keys.drop_null() if keys.null_count else keys
        values = np.full(len(present), self.params.value, dtype=np.float32)
        if self.params.hash_bits is None:
            return Block.one_per_row(present, values, keys=keys)
        return Block.one_per_row(present, values, ids=self._hash(keys))

    def _hash(self, keys: pa.Array) -> np.ndarray:
        """Bucket of every key: its 64-bit hash (stable across runs and machines) mixed with
        hash_seed, modulo 2**hash_bits."""
        h1, _h2, _valid = key_hashes(keys)
        salt = splitmix64(np.array([self.params.hash_seed], dtype=np.uint64))[0]
        mask = np.uint64((1 << self.params.hash_bits) - 1)
        return (splitmix64(h1 ^ salt) & mask).astype(np.int64)

    def reserved_name(self, offset: int) -> str:
        return f"{self.name}#hash{offset}"
