"""`numeric`: one feature per numeric column, raw or transformed.

Transforms: raw, log1p (sign-preserving), standardize. Standardising uses the running mean and
variance of the values seen so far *including* the current row, computed per row with prefix
sums (so results do not depend on batch boundaries), and frozen when predicting; or, with `mean`
and `std` given, those fixed statistics (e.g. of the training data: what the estimators do).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from streamfm.errors import DataError
from streamfm.features.arrow import as_float, column, dictionary_codes
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.text import is_number


class NumericParams(BuilderParams):
    columns: list[str] = Field(min_length=1)
    transform: Literal["raw", "log1p", "standardize"] = "raw"
    clip: tuple[float | None, float | None] | None = Field(
        None, description="[low, high] applied to the raw value before the transform"
    )
    scale: float = Field(1.0, description="multiplies the transformed value")
    mean: float | None = Field(
        None, description="standardize: this mean instead of the running one (with std)"
    )
    std: float | None = Field(
        None, gt=0.0, description="standardize: this standard deviation instead of the running one"
    )
    bins: list[float] | None = Field(
        None,
        description="increasing edges: one-hot of the bucket each value falls in (e.g. age "
        "groups) instead of the value itself; transform/scale are then not used",
    )
    missing: Literal["zero", "indicator", "error"] = Field(
        "zero",
        description="missing/NaN: no feature; or a 'column=missing' indicator feature; or an error",
    )

    @field_validator("columns", mode="before")
    @classmethod
    def _one_column(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("bins")
    @classmethod
    def _increasing(cls, v):
        if v is not None and (not v or any(b <= a for a, b in zip(v, v[1:], strict=False))):
            raise ValueError("must be a non-empty list of strictly increasing edges")
        return v

    @model_validator(mode="after")
    def _fixed_statistics(self):
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std: give both (fixed statistics) or neither (running ones)")
        if self.mean is not None and self.transform != "standardize":
            raise ValueError("mean and std: only for transform standardize")
        return self


class NumericBuilder(FeatureBuilder):
    kind = "numeric"
    Params = NumericParams
    params: NumericParams

    def __init__(self, name: str, params: NumericParams) -> None:
        super().__init__(name, params)
        n = len(params.columns)
        # Shifted sums (shift = first value seen) keep the variance accurate for large values.
        self.shift = np.full(n, np.nan)
        self.count = np.zeros(n)
        self.sum = np.zeros(n)
        self.sumsq = np.zeros(n)

    def columns(self) -> list[str]:
        return list(self.params.columns)

    def _slots(self) -> int:
        """Reserved ids per column for values: 1, or one per bucket with `bins`."""
        return 1 if self.params.bins is None else len(self.params.bins) + 1

    def reserved(self) -> int:
        n = len(self.params.columns) * self._slots()
        return n + len(self.params.columns) if self.params.missing == "indicator" else n

    def reserved_name(self, offset: int) -> str:
        cols, slots = self.params.columns, self._slots()
        if offset >= len(cols) * slots:
            return f"{cols[offset - len(cols) * slots]}=missing"
        col, bucket = divmod(offset, slots)
        if self.params.bins is None:
            return cols[col]
        edges = [-np.inf, *self.params.bins, np.inf]
        return f"{cols[col]}[{edges[bucket]:g},{edges[bucket + 1]:g})"

    def invalid_rows(self, batch: pa.RecordBatch) -> list[tuple[np.ndarray, str, str]]:
        """Text that is not a number; and missing values when `missing: error`."""
        out = []
        for name in self.params.columns:
            col = column(batch, name, self.name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                codes, uniques = dictionary_codes(pc.utf8_trim_whitespace(col))
                bad_value = np.array(
                    [v not in (None, "") and not is_number(v) for v in uniques] + [False],
                    dtype=bool,
                )
                mask = bad_value[codes]
                if mask.any():
                    out.append((mask, name, f"feature builder '{self.name}': not a number"))
                    continue
            if self.params.missing == "error":
                x = as_float(col, name, self.name) if not out else None
                if x is not None and (~np.isfinite(x)).any():
                    out.append(
                        (~np.isfinite(x), name, f"feature builder '{self.name}': missing value")
                    )
        return out

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        n_rows = batch.num_rows
        n_cols = len(self.params.columns)
        values = np.zeros((n_rows, n_cols), dtype=np.float64)
        present = np.zeros((n_rows, n_cols), dtype=bool)
        missing = np.zeros((n_rows, n_cols), dtype=bool)
        bucket_of = np.zeros((n_rows, n_cols), dtype=np.int64)
        for c, name in enumerate(self.params.columns):
            x = as_float(column(batch, name, self.name), name, self.name)
            bad = ~np.isfinite(x)
            if bad.any() and self.params.missing == "error":
                row = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"feature builder '{self.name}': missing or non-finite value (set missing: zero "
                    "or indicator to accept it)",
                    row=row + 1,
                    column=name,
                )
            missing[:, c] = bad
            if self.params.bins is None:
                x = self._transform(x, c, bad, training)
                values[:, c] = x
                present[:, c] = ~bad & (x != 0)
            else:
                bucket_of[:, c] = np.searchsorted(self.params.bins, x, side="right")
                values[:, c] = 1.0
                present[:, c] = ~bad
        # Reserved ids: per column its value slot(s) (the bucket with bins), then indicators.
        ids = np.arange(n_cols)[None, :] * self._slots() + bucket_of
        if self.params.missing == "indicator":
            values = np.concatenate([values, np.ones_like(values)], axis=1)
            present = np.concatenate([present, missing], axis=1)
            indicator = n_cols * self._slots() + np.arange(n_cols)
            ids = np.concatenate([ids, np.broadcast_to(indicator, (n_rows, n_cols))], axis=1)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(present.sum(axis=1), out=indptr[1:])
        return Block(indptr, values[present].astype(np.float32), ids=ids[present].astype(np.int64))

    def _transform(self, x: np.ndarray, c: int, bad: np.ndarray, training: bool) -> np.ndarray:
        p = self.params
        x = np.where(bad, 0.0, x)
        if p.clip is not None:
            lo, hi = p.clip
            x = np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)
        if p.transform == "log1p":
            x = np.sign(x) * np.log1p(np.abs(x))
        elif p.transform == "standardize" and p.mean is not None:
            x = (x - p.mean) / p.std
        elif p.transform == "standardize":
            x = self._standardize(x, c, ~bad, training)
        return np.where(bad, 0.0, x * p.scale)

    def _standardize(self, x: np.ndarray, c: int, ok: np.ndarray, training: bool) -> np.ndarray:
        if np.isnan(self.shift[c]) and ok.any():
            if not training:
                return np.zeros_like(x)
            self.shift[c] = x[ok][0]
        if np.isnan(self.shift[c]):
            return np.zeros_like(x)
        d = np.where(ok, x - self.shift[c], 0.0)
        if training and len(x):
            # Per-row running statistics, seeded with the totals so far: the first element of each
            # cumulative sum is the running total, so the additions happen in stream order.
            n = np.cumsum(np.concatenate([[self.count[c]], ok.astype(np.float64)]))[1:]
            s1 = np.cumsum(np.concatenate([[self.sum[c]], d]))[1:]
            s2 = np.cumsum(np.concatenate([[self.sumsq[c]], d * d]))[1:]
            self.count[c], self.sum[c], self.sumsq[c] = n[-1], s1[-1], s2[-1]
        else:  # frozen, or nothing to learn from
            n, s1, s2 = self.count[c], self.sum[c], self.sumsq[c]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
            z = np.where(std > 0, (d - mean) / std, 0.0)
        return np.where(ok, z, 0.0)

    def state_dict(self) -> dict:
        return {
            "shift": [None if np.isnan(v) else float(v) for v in self.shift],
            "count": self.count.tolist(),
            "sum": self.sum.tolist(),
            "sumsq": self.sumsq.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.shift = np.array(
            [np.nan if v is None else v for v in state["shift"]], dtype=np.float64
        )
        self.count = np.array(state["count"], dtype=np.float64)
        self.sum = np.array(state["sum"], dtype=np.float64)
        self.sumsq = np.array(state["sumsq"], dtype=np.float64)
