"""Parquet reader: row groups streamed with `ParquetFile.iter_batches`.

A Parquet file is structurally valid (typed columns, no ragged rows): there are no bad rows to
skip, so `Reader.on_bad_row` is never called; an unreadable file is a DataError.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfm.errors import DataError
from streamfm.sources.base import Piece, Reader, check_columns


def _open(path: str) -> pq.ParquetFile:
    try:
        # pre_buffer=False: pyarrow would otherwise keep each read's buffered column chunks until
        # the whole file is read, so memory would grow with the file (measured: +100 MB per 20M rows).
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read as Parquet: {e}", path=path) from e


class ParquetReader(Reader):
    """Parquet files; Position.offset is the row group holding the next row."""

    format = "parquet"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._group_ends: tuple[str, np.ndarray] | None = None  # of the file read last

    def _ends(self, path: str, pf: pq.ParquetFile | None = None) -> np.ndarray:
        """Cumulative row counts at the end of each row group of `path` (from the footer of `pf`,
        the file opened to read it, or the last one read)."""
        if pf is not None or self._group_ends is None or self._group_ends[0] != path:
            meta = (pf or _open(path)).metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self._group_ends = (path, np.cumsum(np.asarray(sizes, dtype=np.int64)))
        return self._group_ends[1]

    def schema(self, path: str) -> pa.Schema:
        schema = self._cached_schema(path)
        if schema is None:
            schema = self._cache_schema(path, _open(path).schema_arrow)
        return schema

    def rows(self, path: str) -> int | None:
        return _open(path).metadata.num_rows

    def _resume_offset(self, path: str, row: int, end: int | None) -> int:
        # Row groups fully consumed = index of the group holding the next row.
        return int(np.searchsorted(self._ends(path), row, side="right"))

    def _pieces(
        self,
        path: str,
        columns: list[str] | None,
        offset: int,
        row: int,
        schema: pa.Schema | None,
    ) -> Iterator[Piece]:
        pf = _open(path)
        check_columns(path, columns, pf.schema_arrow.names)
        ends = self._ends(path, pf)
        # The row count decides; `offset` (the row group) follows from it and the footer.
        group = int(np.searchsorted(ends, row, side="right"))
        if group >= len(ends):
            if row > (int(ends[-1]) if len(ends) else 0):
                raise DataError(f"cannot resume at row {row}: the file has fewer rows", path=path)
            return
        skip = row - (int(ends[group - 1]) if group else 0)
        try:
            it = pf.iter_batches(
                batch_size=self.batch_size,
                row_groups=list(range(group, len(ends))),
                columns=columns,
                use_threads=True,
            )
            for batch in it:
                if skip:
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch = batch.slice(skip)
                    skip = 0
                if columns is not None and batch.schema.names != columns:
                    batch = batch.select(columns)
                yield batch, None
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"cannot read Parquet data: {e}", path=path) from e
