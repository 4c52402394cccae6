"""In-memory tables as sources: pandas DataFrames, pyarrow Tables and RecordBatches, anything with
the Arrow stream interface (polars, DuckDB, ...), mappings of columns; one-row dicts (per-event
serving); and the builders a table's columns get when no `features` are given.

pandas is never imported here: a DataFrame is recognised by its type's module and converted by
pyarrow (`pa.Table.from_pandas`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.errors import DataError, SpecError


def is_pandas(data: Any) -> bool:
    """True for a pandas DataFrame (or Series), without importing pandas."""
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


def is_table(data: Any) -> bool:
    """True when `data` is a table with named columns that `to_table` converts."""
    if hasattr(data, "tocsr"):  # scipy.sparse (a dok_matrix is a dict)
        return False
    return (
        isinstance(data, pa.Table | pa.RecordBatch)
        or is_pandas(data)
        or hasattr(data, "__arrow_c_stream__")
        or (isinstance(data, Mapping) and not isinstance(data, str))
    )


def to_table(data: Any, what: str = "data") -> pa.Table:
    """A pyarrow Table of `data` (see `is_table`). Columns of only missing values (type null)
    become float64, so that every builder reads them as missing."""
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif is_pandas(data):
        table = _from_pandas(data, what)
    elif isinstance(data, Mapping):
        try:
            table = pa.table({str(k): _column(v) for k, v in data.items()})
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise DataError(f"{what}: the columns do not make a table ({exc})") from None
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
    else:
        raise DataError(
            f"{what}: expected a pandas DataFrame, a pyarrow Table or RecordBatch, or a mapping "
            f"of column names to values, got {type(data).__name__}"
        )
    for i, field in enumerate(table.schema):
        target = _PLAIN.get(field.type)
        if pa.types.is_dictionary(field.type) and field.type.value_type in _PLAIN:
            target = pa.dictionary(field.type.index_type, _PLAIN[field.type.value_type])
        if target is not None:
            table = table.set_column(i, field.name, table.column(i).cast(target))
    return table


# Column types read as the types files give (pandas 3 keeps text as large_string).
_PLAIN = {
    pa.null(): pa.float64(),
    pa.large_string(): pa.string(),
    pa.large_binary(): pa.binary(),
}


def rows_table(rows: Sequence[Mapping[str, Any]], what: str = "x") -> pa.Table:
    """A table of rows given as dicts (River-style `x`), columns in first-seen order."""
    try:
        table = pa.Table.from_pylist([dict(r) for r in rows])
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise DataError(f"{what}: not a mapping of column names to values ({exc})") from None
    return to_table(table, what)


def batches(table: pa.Table, size: int = 65536) -> Iterator[pa.RecordBatch]:
    """The table as RecordBatches of at most `size` rows (one empty batch for an empty table)."""
    if table.num_rows == 0:
        yield pa.RecordBatch.from_pylist([], schema=table.schema)
        return
    yield from table.combine_chunks().to_batches(max_chunksize=size)


def default_features(schema: pa.Schema, *, standardize: bool) -> list[dict[str, Any]]:
    """One builder per column, named after it, as a spec would write them: text, categorical
    and boolean columns one-hot (`categorical`), numbers `numeric` (with `transform:
    standardize` when `standardize`), timestamps and dates `time` (hour, weekday, month), lists
    `set`. Other types are a SpecError naming the column."""
    out: list[dict[str, Any]] = []
    for field in schema:
        t = field.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        name = field.name
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
            out.append({"type": "categorical", "name": name, "columns": [name]})
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            transform = "standardize" if standardize else "raw"
            out.append({"type": "numeric", "name": name, "columns": [name], "transform": transform})
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            out.append(
                {
                    "type": "time",
                    "name": name,
                    "column": name,
                    "encodings": ["hour", "weekday", "month"],
                }
            )
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            out.append({"type": "set", "name": name, "column": name})
        else:
            raise SpecError(
                f"column '{name}' has type {field.type}, which has no default feature builder: "
                "pass features=[...] (builders as in a spec's `features`) or drop the column"
            )
    return out


def _from_pandas(df: Any, what: str) -> pa.Table:
    if not hasattr(df, "iloc") or getattr(df, "ndim", 2) != 2:
        raise DataError(f"{what}: expected a DataFrame, got a {type(df).__name__}")
    df = df.copy(deep=False)
    df.columns = [str(c) for c in df.columns]
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        column = _bad_pandas_column(df)
        where = f"column '{column}'" if column else "a column"
        raise DataError(
            f"{what}: {where} mixes types that do not make one column ({exc}); convert it, "
            "e.g. df[col] = df[col].astype(str)"
        ) from None


def _bad_pandas_column(df: Any) -> str | None:
    for name in df.columns:
        try:
            pa.array(df[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return str(name)
    return None


def _column(values: Any) -> Any:
    if isinstance(values, np.ndarray | pa.Array | pa.ChunkedArray):
        return values
    return list(values) if not isinstance(values, str) else [values]
