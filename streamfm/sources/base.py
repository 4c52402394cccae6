"""Position, BadRow, batch cutting, the Source base class and `open_source`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.errors import CheckpointError, DataError
from streamfm.sources._io import DEFAULT_BLOCK
from streamfm.sources.discovery import STDIN, resolve_files


@dataclass(frozen=True)
class Position:
    """Where reading resumes: the row right after the batch this position came with.

    ``row`` counts the good data rows of this file yielded so far: rows skipped as bad (see
    `Source.on_bad_row`) are not counted, in any format.
    ``offset`` is format-specific: the row-group index for Parquet, the byte offset of the next
    unread line for libFM and JSON lines. CSV resumes by counting records: past the header, past
    ``row`` good records (records of the wrong column count in between are stepped over, as
    pyarrow skips them), then past ``offset`` more records, the bad records right after the last
    good row that were already reported when this position was yielded (0 without bad rows).
    For every format, the bad rows reported before a position was yielded are exactly those
    before it: resuming there reports each later bad row again and no earlier one.
    """

    file_index: int
    path: str
    offset: int
    row: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for checkpoints."""
        return {
            "file_index": self.file_index,
            "path": self.path,
            "offset": self.offset,
            "row": self.row,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Position:
        """Inverse of `to_dict`; CheckpointError if a key is missing or of the wrong kind."""
        try:
            return cls(int(d["file_index"]), str(d["path"]), int(d["offset"]), int(d["row"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"invalid source position {d!r}: {e}") from e


# BadRow.text keeps at most this many characters of the raw line or record.
BAD_TEXT_CHARS = 1000


@dataclass(frozen=True)
class BadRow:
    """A malformed row that a reader skipped (reported to `Source.on_bad_row`).

    ``row`` is 1-based within ``path`` ("-" for standard input): the line number for libFM and
    JSON lines, the physical line where the record starts for CSV. ``text`` is the raw line or
    record (at most ~1000 characters), None when unknown.
    """

    path: str
    row: int
    reason: str
    text: str | None
    column: str | None = None


def clip_text(text: str | bytes | None) -> str | None:
    """`text` for a BadRow: decoded (bytes), without its line ending, cut to BAD_TEXT_CHARS."""
    if text is None:
        return None
    if isinstance(text, (bytes, bytearray, memoryview)):
        if len(text) > 4 * BAD_TEXT_CHARS:  # enough for BAD_TEXT_CHARS characters of UTF-8
            text = text[: 4 * BAD_TEXT_CHARS + 4]
        text = bytes(text).decode("utf-8", "replace")
    text = text.rstrip("\r\n")
    return text if len(text) <= BAD_TEXT_CHARS else text[:BAD_TEXT_CHARS] + "..."


def check_columns(path: str, requested: Sequence[str] | None, available: Sequence[str]) -> None:
    """DataError naming the file, the first missing column and the file's columns, if any is missing."""
    if not requested:
        return
    have = set(available)
    missing = [c for c in requested if c not in have]
    if missing:
        several = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise DataError(
            f"no such column{several}; the file has: {', '.join(available) or '(no columns)'}",
            path=path,
            column=missing[0],
        )


def _concat(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    concat = getattr(pa, "concat_batches", None)
    if concat is not None:
        return concat(parts)
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


# (batch, per-row resume offsets or None), or (None, resume offset) after skipped bad rows.
Piece = tuple[pa.RecordBatch | None, Any]


def rebatch(pieces: Iterable[Piece], size: int) -> Iterator[tuple[pa.RecordBatch, int | None]]:
    """Cut and join pieces into batches of exactly `size` rows (the last one may be shorter).

    Each piece carries, per row, the resume offset after that row (an int array) or None; each
    output batch comes with the resume offset after its last row (None when pieces carry none).
    A piece (None, offset) says that bad rows were skipped (and reported) right after the rows
    before it: rows still held then resume after them, at `offset`.
    """
    held: list[pa.RecordBatch] = []
    held_rows = 0
    end: int | None = None
    for batch, ends in pieces:
        if batch is None:
            if held_rows:
                end = int(ends)
            continue
        n = batch.num_rows
        at = 0
        while at < n:
            take = min(size - held_rows, n - at)
            held.append(batch if take == n else batch.slice(at, take))
            held_rows += take
            at += take
            end = int(ends[at - 1]) if ends is not None else None
            if held_rows == size:
                yield _concat(held), end
                held, held_rows = [], 0
    if held_rows:
        yield _concat(held), end


class Source:
    """Chunked reader over the files of one source; each subclass reads one format.

    `on_bad_row` (None by default) decides what a malformed row does: None raises a DataError
    naming the file, the line and what is wrong; a callable makes the reader skip the row, call
    it once with a `BadRow`, and go on (batches then hold the good rows only). Malformed means:
    libFM, a line that does not parse; CSV, a record with the wrong number of columns (a value
    that does not convert to its column's type still raises: pyarrow cannot skip it); JSON lines,
    a line that is not valid JSON or not an object (a value of the wrong type still raises).
    Parquet files are structurally valid, so Parquet never reports bad rows.
    """

    format: str = ""
    on_bad_row: Callable[[BadRow], None] | None = None

    def __init__(self, config: SourceConfig, files: Sequence[str]) -> None:
        self.config = config
        self.files: list[str] = list(files)
        self.batch_size: int = config.batch_size
        # Bytes per read for text formats; tests shrink it to exercise block boundaries.
        self.block_size: int = DEFAULT_BLOCK
        self._schema: pa.Schema | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.files)} file(s), batch_size={self.batch_size})"

    def batches(
        self, columns: Sequence[str] | None = None, start: Position | None = None
    ) -> Iterator[tuple[pa.RecordBatch, Position]]:
        """Yield (batch of at most `batch_size` rows, Position to resume right after it), in order.

        `columns` (None or empty: all) selects and orders the columns; `start` resumes at a Position
        yielded earlier. Batches never span two files.
        """
        cols = _normalize_columns(columns)
        first, offset, row = self._resolve_start(start)
        for i in range(first, len(self.files)):
            path = self.files[i]
            if i != first:
                offset, row = 0, 0
            pieces = self._read_file(i, path, cols, offset, row)
            for batch, end in rebatch(pieces, self.batch_size):
                row += batch.num_rows
                yield batch, Position(i, path, self._resume_offset(i, row, end), row)

    def schema(self) -> pa.Schema:
        """Arrow schema of the first file (read from its head)."""
        raise NotImplementedError

    def total_bytes(self) -> int | None:
        """Sum of the files' sizes on disk (None for standard input)."""
        if self.files == [STDIN]:
            return None
        return sum(os.path.getsize(f) for f in self.files)

    def total_rows(self) -> int | None:
        """Number of data rows when known without reading the data (Parquet), else None."""
        return None

    # -- for subclasses -------------------------------------------------------------------------

    def _report(
        self,
        path: str,
        row: int,
        reason: str,
        text: str | bytes | None,
        column: str | None = None,
    ) -> None:
        """Hand one skipped row to `on_bad_row`."""
        assert self.on_bad_row is not None
        self.on_bad_row(BadRow(path, int(row), reason, clip_text(text), column))

    def _read_file(
        self, index: int, path: str, columns: list[str] | None, offset: int, row: int
    ) -> Iterator[Piece]:
        """Yield (RecordBatch, per-row resume offsets or None) of one file from (offset, row).

        With `on_bad_row` set, a skipped bad row is reported (`_report`) right before a
        (None, resume offset after it) piece, between the pieces of the rows around it.
        """
        raise NotImplementedError

    def _resume_offset(self, index: int, row: int, end: int | None) -> int:
        """Position.offset after `row` rows of file `index`; `end` is the last row's resume offset."""
        return 0 if end is None else end

    def _resolve_start(self, start: Position | Mapping[str, Any] | None) -> tuple[int, int, int]:
        if start is None:
            return 0, 0, 0
        if not isinstance(start, Position):
            start = Position.from_dict(start)
        idx = start.file_index
        same_index = 0 <= idx < len(self.files)
        if not (same_index and self.files[idx] == start.path):
            if start.path in self.files:
                idx = self.files.index(start.path)
            elif not (
                same_index and os.path.basename(self.files[idx]) == os.path.basename(start.path)
            ):
                # (Same index and file name is accepted: the data moved along with its checkpoint.)
                raise DataError(
                    "cannot resume: this file of the saved position is not part of the source "
                    f"any more (the source has {len(self.files)} file(s))",
                    path=start.path,
                )
        if start.offset < 0 or start.row < 0:
            raise DataError(
                f"cannot resume at offset {start.offset}, row {start.row}", path=start.path
            )
        return idx, start.offset, start.row


def _normalize_columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    out = list(dict.fromkeys(columns))
    return out or None


def open_source(config: SourceConfig, *, base_dir: str | os.PathLike[str] | None = None) -> Source:
    """The Source reading `config`; relative paths resolve against `base_dir` (default: the CWD)."""
    from streamfm.sources.csv import CsvSource
    from streamfm.sources.jsonl import JsonlSource
    from streamfm.sources.libfm import LibfmSource
    from streamfm.sources.parquet import ParquetSource

    files, fmt = resolve_files(config, base_dir)
    cls = {
        "parquet": ParquetSource,
        "csv": CsvSource,
        "libfm": LibfmSource,
        "jsonl": JsonlSource,
    }[fmt]
    return cls(config, files)
