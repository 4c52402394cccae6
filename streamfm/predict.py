"""Streaming batch prediction into Parquet or CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamfm.config import SourceConfig
from streamfm.errors import SpecError
from streamfm.numpy_arrow import from_numpy
from streamfm.store.archive import write_atomic


def write_predictions(model, source: SourceConfig, output: Path | str, keep: list[str]) -> int:
    """Predict every row of `source` with `model` (a TrainedModel); write `keep` columns plus
    `prediction` (regression value or P(class 1)) to `output` (.parquet or .csv, or "-": CSV on
    standard output, batch by batch, for pipes). Returns rows."""
    to_stdout = str(output) == "-"
    suffix = ".csv" if to_stdout else Path(output).suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise SpecError(f"--output {output}: use a .parquet or .csv file name, or - for stdout")
    rows = 0

    def write(f) -> None:
        nonlocal rows
        writer = None
        for kept, pred in model.predict_source(source, keep):
            cols = {name: kept.column(name) for name in keep} if keep else {}
            table = pa.table({**cols, "prediction": from_numpy(np.asarray(pred, dtype=np.float64))})
            if writer is None:
                writer = (
                    pacsv.CSVWriter(f, table.schema)
                    if suffix == ".csv"
                    else pq.ParquetWriter(f, table.schema)
                )
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:  # no rows: still write a valid, empty file
            empty = pa.table(
                {
                    **{k: pa.array([], pa.string()) for k in keep},
                    "prediction": pa.array([], pa.float64()),
                }
            )
            writer = (
                pacsv.CSVWriter(f, empty.schema)
                if suffix == ".csv"
                else pq.ParquetWriter(f, empty.schema)
            )
        writer.close()

    if to_stdout:
        import sys

        sys.stdout.flush()
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return rows
    # Written to a temporary file and renamed: readers never see a half-written output.
    write_atomic(output, write)
    return rows
