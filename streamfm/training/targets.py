"""Targets: the spec's target column as float64 (0/1 for classification), and a batch's bad rows
(bad target, or values a builder cannot use) taken out under the source's bad-row policy."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamfm.errors import DataError, MissingInputError, SpecError
from streamfm.features.arrow import as_float, as_string_keys, dictionary_codes
from streamfm.features.pipeline import FeaturePipeline
from streamfm.numpy_arrow import from_numpy, to_numpy
from streamfm.spec import TargetConfig
from streamfm.text import number_or_nan


def target_values(
    batch: pa.RecordBatch,
    target: TargetConfig,
    task: str,
    path: str | None = None,
    lines: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(targets as float64 (classification: 0/1), mask of rows whose target is bad, the reason).

    A missing target column is an error for the whole batch (DataError naming the file). So is,
    for classification without `target.positive`, a label other than 0/1, -1/+1, true/false: a
    SpecError (the task is binary; skipping such rows would learn from a few classes only).
    lines(indices): where rows of the batch are in `path`, for that message (default: row i + 1).

    Task ranking: without a target every row is a positive (1); with one, rows whose target is
    in `target.positive` are 1, the others 0.
    """
    if task == "ranking":
        if target is None:
            n = batch.num_rows
            return np.ones(n), np.zeros(n, dtype=bool), ""
        task = "classification"
    idx = batch.schema.get_field_index(target.column)
    if idx < 0:
        raise MissingInputError(
            f"the target column '{target.column}' is not in the data (columns: "
            f"{', '.join(batch.schema.names)}); set target.column",
            path=path,
        )
    col = batch.column(idx)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if task == "classification" and target.positive is not None:
        keys = as_string_keys(col)
        bad = ~to_numpy(keys.is_valid())
        positive = pa.array(
            [str(v).lower() if isinstance(v, bool) else str(v) for v in target.positive]
        )
        y = to_numpy(pc.fill_null(pc.is_in(keys, value_set=positive), False))
        return y.astype(np.float64), bad, "the target is missing"
    try:
        y = as_float(col, target.column, "target")
    except DataError:
        # Text that is not a number: find the rows, one distinct value at a time.
        codes, uniques = dictionary_codes(as_string_keys(col))
        values = [number_or_nan(v) for v in uniques]
        if task == "classification":
            for j, v in enumerate(uniques):
                text = v.strip().lower() if v is not None else ""
                if text in ("true", "false"):
                    values[j] = float(text == "true")
                elif text and math.isnan(values[j]):
                    row = int(np.flatnonzero(codes == j)[0])
                    _not_binary(target, v, path, _line(lines, row))
        y = np.array([*values, np.nan], dtype=np.float64)[codes]  # code -1 (missing): NaN
    bad = ~np.isfinite(y)
    reason = "the target is missing or not a finite number"
    if task == "classification":
        wrong = ~bad & ~((y == 0) | (y == 1) | (y == -1))
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            _not_binary(target, col[i].as_py(), path, _line(lines, i))
        y = (y == 1).astype(np.float64)
    return y, bad, reason


def _line(lines: Callable[[np.ndarray], np.ndarray] | None, i: int) -> int:
    return int(lines(np.array([i]))[0]) if lines is not None else i + 1


def _not_binary(target: TargetConfig, value, path: str | None, row: int) -> None:
    where = f"{path}, row {row}" if path else f"row {row}"
    raise SpecError(
        f"task classification is binary, but the target column '{target.column}' holds the "
        f"label {value!r} ({where}), not 0/1, -1/+1 or true/false. To learn one class against "
        f"the rest, set target.positive to its labels (e.g. --set 'target.positive=[{value}]'); "
        "for more classes, train one model per class, or use streamfm.FMClassifier "
        "(one-vs-rest) in Python"
    )


def clean_batch(
    batch: pa.RecordBatch,
    pipeline: FeaturePipeline,
    target: TargetConfig,
    task: str,
    bad_rows,
    path: str | None,
    lines: Callable[[np.ndarray], np.ndarray],
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The batch without its bad rows (bad target, values a builder cannot use), and its targets.

    Bad rows go to `bad_rows` (a streamfm.training.badrows.BadRows: fail raises, skip counts, quarantine
    writes them). lines(indices): where rows of the batch are in `path` (`Reader.batch_lines`:
    the physical line for text formats, the row number for Parquet), asked for bad rows only.
    """
    y, bad, reason = target_values(batch, target, task, path, lines)
    reasons = np.where(bad, reason, None).astype(object)
    columns = np.where(bad, target.column if target is not None else None, None).astype(object)
    for b in pipeline.builders:
        for mask, column, why in b.invalid_rows(batch):
            new = mask & ~bad
            reasons[new], columns[new] = why, column
            bad |= mask
    if not bad.any():
        return batch, y
    bad_rows.from_batch(batch, bad, list(reasons[bad]), list(columns[bad]), path, lines)
    keep = ~bad
    return batch.filter(from_numpy(keep)), y[keep]


def numeric_columns(pipeline: FeaturePipeline, target: TargetConfig, task: str) -> dict:
    """Columns read as numbers whatever a file's first rows suggest (`Reader.column_types`):
    a regression target and the columns of `numeric` builders, as float64 (text in them that
    is not a number is a bad row, not an error of the whole file)."""
    columns = [target.column] if task == "regression" and target is not None else []
    for b in pipeline.builders:
        if b.kind == "numeric":
            columns += b.columns()
    return dict.fromkeys(columns, pa.float64())
