"""`time`: one-hot encodings of a timestamp, optionally crossed with other columns.

Encodings (each its own non-zero per row): `hour` of day, `weekday` (0 = Monday), `month`
(1..12), `day` (days since `origin`), `bin` (`bin_days`-wide global time bins since `origin`, as
timeSVD's item-bias bins). With `cross: [user]` every encoding becomes user × encoding (timeSVD's
user × day). The column may be a timestamp, a date, integer/float seconds (or `unit`), ISO text,
or text in a strptime `format`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from streamfm.errors import DataError
from streamfm.features.arrow import as_string_keys, column
from streamfm.features.base import Block, BuilderParams, FeatureBuilder
from streamfm.numpy_arrow import from_numpy, to_numpy

_SCALE = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
# Integer keys: encoding number in the high bits, value (shifted to be non-negative) below.
_SHIFT = 1 << 40


class TimeParams(BuilderParams):
    column: str
    encodings: list[Literal["hour", "weekday", "month", "day", "bin"]] = Field(
        default_factory=lambda: ["day"], min_length=1
    )
    bin_days: float = Field(30.0, gt=0, description="width of a `bin` in days")
    origin: str = Field("1970-01-01", description="ISO date: day and bin 0 start here")
    unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of numeric time columns")
    format: str | None = Field(
        None, description="strptime format of text columns, e.g. '%d-%b-%Y' (default: ISO 8601)"
    )
    utc_offset_hours: float = Field(0.0, description="shift applied before hour/weekday/day")
    cross: list[str] = Field(default_factory=list, description="columns crossed with each encoding")

    @field_validator("origin")
    @classmethod
    def _iso(cls, v: str) -> str:
        datetime.fromisoformat(v)
        return v


class TimeBuilder(FeatureBuilder):
    kind = "time"
    Params = TimeParams
    params: TimeParams

    def columns(self) -> list[str]:
        return [self.params.column, *self.params.cross]

    def seconds(self, batch: pa.RecordBatch) -> np.ndarray:
        """Unix seconds (float64, NaN where missing) of every row, with utc_offset applied."""
        p = self.params
        col = column(batch, p.column, self.name)
        t = col.type
        try:
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                if p.format is None:
                    col = pc.cast(col, pa.timestamp("s"))  # ISO 8601, "T" or space
                else:
                    col = pc.strptime(col, format=p.format, unit="s")
                t = col.type
            if pa.types.is_timestamp(t) or pa.types.is_date(t):
                if pa.types.is_timestamp(t) and t.tz is not None:
                    col = pc.cast(col, pa.timestamp(t.unit))
                secs = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
                values = to_numpy(pc.fill_null(pc.cast(secs, pa.float64()), np.nan))
            elif pa.types.is_integer(t) or pa.types.is_floating(t):
                values = to_numpy(pc.fill_null(pc.cast(col, pa.float64()), np.nan))
                values = values / _SCALE[p.unit]
            else:
                raise DataError(
                    f"feature builder '{self.name}': column '{p.column}' has type {t}, not a time"
                )
        except pa.ArrowInvalid as exc:
            raise DataError(
                f"feature builder '{self.name}': column '{p.column}' is not a time: {exc}"
            ) from None
        return np.asarray(values, dtype=np.float64) + 3600.0 * p.utc_offset_hours

    def encode(self, secs: np.ndarray) -> np.ndarray:
        """(n_rows, n_encodings) int64 values of every encoding (garbage where secs is NaN)."""
        p = self.params
        origin = datetime.fromisoformat(p.origin).replace(tzinfo=timezone.utc).timestamp()
        s = np.nan_to_num(secs)
        days_since_epoch = np.floor(s / 86400.0)
        out = []
        for enc in p.encodings:
            if enc == "hour":
                v = np.floor((s % 86400.0) / 3600.0)
            elif enc == "weekday":
                v = (days_since_epoch + 3) % 7  # 1970-01-01 was a Thursday
            elif enc == "month":
                v = s.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12 + 1
            elif enc == "day":
                v = np.floor((s - origin) / 86400.0)
            else:
                v = np.floor((s - origin) / (86400.0 * p.bin_days))
            out.append(np.asarray(v, dtype=np.int64))
        return np.stack(out, axis=1)

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        p = self.params
        secs = self.seconds(batch)
        present = np.isfinite(secs)
        values = self.encode(secs)  # (n, e)
        n, e = values.shape
        codes = np.arange(e, dtype=np.int64) * (2 * _SHIFT) + _SHIFT + values
        cross_ok = np.ones(n, dtype=bool)
        if p.cross:
            cols = [as_string_keys(column(batch, c, self.name)) for c in p.cross]
            cross = pc.binary_join_element_wise(*cols, "|") if len(cols) > 1 else cols[0]
            cross_ok = to_numpy(cross.is_valid())
        rows = present & cross_ok
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.where(rows, e, 0), out=indptr[1:])
        flat = codes[rows].ravel()
        if not p.cross:
            keys = from_numpy(flat)
        else:
            # Key "<cross value>|<encoding code>": one string per non-zero.
            cross_rows = cross.filter(from_numpy(rows))
            repeated = cross_rows.take(from_numpy(np.repeat(np.arange(len(cross_rows)), e)))
            keys = pc.binary_join_element_wise(
                repeated, pc.cast(from_numpy(flat), pa.string()), "|"
            )
        return Block(indptr, np.ones(len(flat), dtype=np.float32), keys=keys)

    def key_name(self, key: Any) -> str:
        prefix = ""
        if isinstance(key, str):
            prefix, _, key = key.rpartition("|")
            prefix += "|"
        code = int(key)
        enc, value = divmod(code, 2 * _SHIFT)
        return f"{prefix}{self.params.encodings[enc]}={value - _SHIFT}"
