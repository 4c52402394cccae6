"""The feature-builder protocol and the Block it produces (the registry: `features.registry`).

A builder turns a pyarrow RecordBatch into a Block: for every row, some non-zeros, each named
either by a *key* (any int or string; the FeatureSpace maps keys to global ids, allocating new
ids on first sight) or by an *id* in a range the builder reserved up front (hashed features,
fixed numeric columns). Work is vectorised over the batch; no Python loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from streamfm.config import refuse_bool_for_numbers


@dataclass
class Block:
    """One builder's rows. indptr: int64 (n_rows+1); values: float32 (nnz).

    Exactly one of `keys` (one key per non-zero: a pyarrow Array or numpy array of ints/strings,
    no nulls) and `ids` (int64 offsets into the builder's reserved range, 0 <= id < reserved)
    is set.
    """

    indptr: np.ndarray
    values: np.ndarray
    keys: pa.Array | np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.keys is None) == (self.ids is None):
            raise ValueError("a Block has either keys or ids")
        self.indptr = np.asarray(self.indptr, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float32)
        nnz = len(self.keys) if self.keys is not None else len(self.ids)
        if nnz != len(self.values) or self.indptr[-1] != nnz:
            raise ValueError(
                f"Block: {nnz} keys/ids, {len(self.values)} values, indptr ends at {self.indptr[-1]}"
            )

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @classmethod
    def one_per_row(cls, present: np.ndarray, values: np.ndarray, *, keys=None, ids=None) -> Block:
        """At most one non-zero per row: rows where `present` is True get (key or id, value)."""
        present = np.asarray(present, dtype=bool)
        indptr = np.zeros(len(present) + 1, dtype=np.int64)
        np.cumsum(present, out=indptr[1:])
        return cls(indptr, np.asarray(values)[present], keys=keys, ids=ids)


class BuilderParams(BaseModel):
    """Base of every builder's parameter model: unknown keys are errors, numbers are finite and
    true/false are not numbers (as in the spec's own sections)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reg_linear: float | None = Field(None, ge=0.0, description="L2 on this group's linear weights")
    reg_factors: float | None = Field(None, ge=0.0, description="L2 on this group's factors")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_for_numbers(cls, value, info)


class FeatureBuilder:
    """Base class of feature builders. Subclasses set `Params` and implement `columns` and `build`.

    `name` is unique within a spec and names the builder's feature group (per-group
    regularisation, feature names). State that `build(training=True)` updates (running
    statistics, histories) must round-trip through `state_dict` / `load_state_dict`.
    """

    kind: ClassVar[str] = ""
    Params: ClassVar[type[BuilderParams]] = BuilderParams

    def __init__(self, name: str, params: BuilderParams) -> None:
        self.name = name
        self.params = params

    def columns(self) -> list[str]:
        """Input columns this builder reads."""
        raise NotImplementedError

    def reserved(self) -> int:
        """How many fixed ids this builder needs (0 when it only emits keys)."""
        return 0

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        """Features of every row of `batch`. With training=False, state is frozen."""
        raise NotImplementedError

    def invalid_rows(self, batch: pa.RecordBatch) -> list[tuple[np.ndarray, str, str]]:
        """Rows this builder cannot use, as (bool mask, column, reason) triples; they are failed,
        skipped or quarantined by the source's `on_bad_rows` policy before `build` sees the batch.
        Default: none."""
        return []

    def reserved_name(self, offset: int) -> str:
        """Human-readable name of reserved id `offset` (for inspect and explanations)."""
        return f"{self.name}[{offset}]"

    def key_name(self, key: Any) -> str:
        """Human-readable name of a key this builder emitted (default: the key itself)."""
        return str(key)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the state: JSON-able values and numpy arrays (copies, not views of
        live state). Empty for stateless builders."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
