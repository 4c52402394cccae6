"""Position, BadRow, batch cutting and the Reader base class: one file of one format."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.errors import CheckpointError, DataError, MissingInputError
from streamfm.sources._io import DEFAULT_BLOCK


@dataclass(frozen=True)
class Position:
    """Where reading a file resumes: the row right after the batch this position came with.

    ``row`` counts the good data rows of this file yielded so far: rows skipped as bad (see
    `Reader.on_bad_row`) are not counted, in any format. It is a resume count, not the number
    a report gives a row: that is the physical line (`BadRow.row`, `Reader.batch_lines`).
    ``offset`` is format-specific: the row-group index for Parquet, the byte offset of the next
    unread line for libFM and JSON lines. CSV resumes by counting records: past the header, past
    ``row`` good records (records of the wrong column count in between are stepped over, as
    pyarrow skips them), then past ``offset`` more records, the bad records right after the last
    good row that were already reported when this position was yielded (0 without bad rows).
    For every format, the bad rows reported before a position was yielded are exactly those
    before it: resuming there reports each later bad row again and no earlier one.
    """

    path: str
    offset: int
    row: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for checkpoints."""
        return {"path": self.path, "offset": self.offset, "row": self.row}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Position:
        """Inverse of `to_dict`; CheckpointError if a key is missing or of the wrong kind.

        The "file_index" key of positions written before 0.2 is ignored.
        """
        try:
            return cls(str(d["path"]), int(d["offset"]), int(d["row"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"invalid source position {d!r}: {e}") from e


# BadRow.text keeps at most this many characters of the raw line or record.
BAD_TEXT_CHARS = 1000


@dataclass(frozen=True)
class BadRow:
    """A malformed row that a reader skipped (reported to `Reader.on_bad_row`).

    ``row`` is 1-based within ``path`` ("-" for standard input): the physical line (header,
    comments and blank lines counted) for libFM and JSON lines, the physical line where the
    record starts for CSV; the same numbering as `Reader.batch_lines` gives rows a consumer
    finds bad (bad targets, values). ``text`` is the raw line or record (at most ~1000
    characters), None when unknown; ``column`` the column at fault, when one is.
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
    """MissingInputError (a DataError; a spec mistake for the CLI) naming the file, the first
    missing column and the file's columns, if any is missing."""
    if not requested:
        return
    have = set(available)
    missing = [c for c in requested if c not in have]
    if missing:
        several = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise MissingInputError(
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


# (batch, per-row resume offsets or None[, per-row line numbers]), or (None, resume offset)
# after skipped bad rows. Line numbers are 0-based physical lines counted from where the read
# started (`Reader.batch_lines` makes them 1-based lines of the file).
Piece = tuple[Any, ...]


def rebatch(
    pieces: Iterable[Piece], size: int
) -> Iterator[tuple[pa.RecordBatch, int | None, np.ndarray | None]]:
    """Cut and join pieces into batches of exactly `size` rows (the last one may be shorter).

    Each piece carries, per row, the resume offset after that row (an int array) or None, and
    optionally the row's line number; each output batch comes with the resume offset after its
    last row (None when pieces carry none) and its rows' line numbers (None unless every piece
    carried them). A piece (None, offset) says that bad rows were skipped (and reported) right
    after the rows before it: rows still held then resume after them, at `offset`. When the
    pieces raise a DataError (a bad row without `on_bad_row`), the rows held come out before it
    is raised.
    """
    held: list[pa.RecordBatch] = []
    held_lines: list[np.ndarray | None] = []
    held_rows = 0
    end: int | None = None

    def joined() -> tuple[pa.RecordBatch, int | None, np.ndarray | None]:
        lines = None if any(x is None for x in held_lines) else np.concatenate(held_lines)
        return _concat(held), end, lines

    try:
        for piece in pieces:
            batch, ends = piece[0], piece[1]
            if batch is None:
                if held_rows:
                    end = int(ends)
                continue
            lines = piece[2] if len(piece) > 2 else None
            n = batch.num_rows
            at = 0
            while at < n:
                take = min(size - held_rows, n - at)
                held.append(batch if take == n else batch.slice(at, take))
                held_lines.append(None if lines is None else lines[at : at + take])
                held_rows += take
                at += take
                end = int(ends[at - 1]) if ends is not None else None
                if held_rows == size:
                    yield joined()
                    held, held_lines, held_rows = [], [], 0
    except DataError:
        # A bad row stops the read: the good rows before it still come out first, so that a
        # run can keep them (standard input cannot be read again).
        if held_rows:
            yield joined()
        raise
    if held_rows:
        yield joined()


class Reader:
    """Chunked reader of one file at a time; each subclass reads one format.

    `read(path)` yields the file's rows in record batches of at most `batch_size` rows
    (`config.batch_size`), each with the Position right after it; batches never hold rows of two
    files. The reader keeps nothing about a file between reads but small caches (its schema,
    Parquet row-group sizes), so one reader reads any number of files, one after another.

    `on_bad_row` (None by default) decides what a malformed row does: None raises a DataError
    naming the file, the line and what is wrong (after the good rows before it were yielded);
    a callable makes the reader skip the row, call it once with a `BadRow`, and go on (batches
    then hold the good rows only). Malformed means: libFM, a line that does not parse; CSV, a
    record with the wrong number of columns (a value that does not convert to a type pyarrow
    inferred still raises: declare the column's type, as training does for the columns it
    reads as numbers, see `column_types`), or a last line of standard input without its
    newline; JSON lines, a line that is not valid JSON, not an object, not UTF-8, nested over
    64 levels, or holding a value that does not fit its column's type; libFM and JSON lines,
    also a line longer than `source.max_line_bytes`. Parquet files are structurally valid, so
    Parquet never reports bad rows.
    """

    format: str = ""
    on_bad_row: Callable[[BadRow], None] | None = None

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.batch_size: int = config.batch_size
        # Bytes per read for text formats; tests shrink it to exercise block boundaries.
        self.block_size: int = DEFAULT_BLOCK
        self._schema: tuple[str, pa.Schema] | None = None  # (path, its schema), the last asked
        # Types of columns the consumer reads as such whatever the file holds (e.g. the target
        # as float64), for formats whose types are inferred from the data (JSON lines).
        self.column_types: dict[str, pa.DataType] = {}
        # (path, data rows of the file before it, its rows' line numbers or None) of the batch
        # yielded last, and what `batch_lines` needs to number them.
        self._batch: tuple[str, int, np.ndarray | None] = ("", 0, None)
        self._read_start: tuple[str, int, int] = ("", 0, 0)
        self._line_base: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size})"

    def read(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        start: Position | Mapping[str, Any] | None = None,
        *,
        schema: pa.Schema | None = None,
    ) -> Iterator[tuple[pa.RecordBatch, Position]]:
        """Yield (batch of at most `batch_size` rows, Position to resume right after it) of the
        file `path` ("-": standard input), in order.

        `columns` (None or empty: all) selects and orders the columns; `start` resumes at a
        Position yielded earlier for this file (or for a file of the same name elsewhere: the
        data moved along with its checkpoint). `schema`, the schema of an earlier file of the
        same source (`schema(first file)`), has this file read with that file's column types
        (CSV, JSON lines), so that a column keeps one type throughout; None: its own types.
        """
        cols = _normalize_columns(columns)
        offset, row = self._start(path, start)
        self._line_base = None
        self._read_start = (path, offset, row)
        pieces = self._pieces(path, cols, offset, row, schema)
        for batch, end, lines in rebatch(pieces, self.batch_size):
            self._batch = (path, row, lines)
            row += batch.num_rows
            yield batch, Position(path, self._resume_offset(path, row, end), row)

    def batch_lines(self, rows: np.ndarray) -> np.ndarray:
        """Where rows `rows` (0-based indices) of the batch `read` yielded last are in their
        file: the 1-based physical line (header and blank lines counted; for CSV the line where
        the record starts) for text formats, the 1-based row number for Parquet. Meant for the
        rows a report names (it may read the file again)."""
        path, first, lines = self._batch
        rows = np.asarray(rows, dtype=np.int64)
        if lines is None:
            return self._data_row_lines(path, first + rows)
        if self._line_base is None:
            self._line_base = self._lines_before(*self._read_start)
        return lines[rows] + self._line_base + 1

    def _data_row_lines(self, path: str, rows: np.ndarray) -> np.ndarray:
        """1-based lines (or row numbers) of the good data rows `rows` (0-based, counted in
        the whole file) when the pieces carried none: the row number (Parquet) by default."""
        return rows + 1

    def _lines_before(self, path: str, offset: int, row: int) -> int:
        """Physical lines of `path` before the read that started at (offset, row)."""
        return 0

    def schema(self, path: str) -> pa.Schema:
        """Arrow schema of the file `path` (read from its head)."""
        raise NotImplementedError

    def rows(self, path: str) -> int | None:
        """Number of data rows of `path` when known without reading the data (Parquet), else None."""
        return None

    # -- for subclasses -------------------------------------------------------------------------

    def _cached_schema(self, path: str) -> pa.Schema | None:
        """The schema of `path` if it is the one cached (`_cache_schema`), else None."""
        return self._schema[1] if self._schema is not None and self._schema[0] == path else None

    def _cache_schema(self, path: str, schema: pa.Schema) -> pa.Schema:
        self._schema = (path, schema)
        return schema

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

    def _line_problem(self, path: str, line: int, reason: str, text: bytes | None) -> None:
        """A bad line found before parsing (too long, cut off): a DataError without
        `on_bad_row`, else reported."""
        if self.on_bad_row is None:
            raise DataError(
                reason, path=path, row=line, value=clip_text(text)[:200] if text else None
            )
        self._report(path, line, reason, text)

    def _long_line(self, path: str, line: int, long: Any) -> None:
        """A line over `source.max_line_bytes` (an `_io.LongLine`), stepped over unread."""
        limit = self.config.max_line_bytes
        self._line_problem(
            path,
            line,
            f"the line has {long.size:,} bytes, more than source.max_line_bytes ({limit:,}); "
            "raise it to read such lines",
            long.head,
        )

    def _cut_off(self, path: str, line: int, text: bytes) -> None:
        """The last line of standard input without its newline: the stream ended inside it."""
        self._line_problem(
            path,
            line,
            "standard input ended inside this line (no newline at its end): the producer "
            "stopped while writing it",
            text,
        )

    def _pieces(
        self,
        path: str,
        columns: list[str] | None,
        offset: int,
        row: int,
        schema: pa.Schema | None,
    ) -> Iterator[Piece]:
        """Yield (RecordBatch, per-row resume offsets or None) of one file from (offset, row);
        `schema` as in `read`.

        With `on_bad_row` set, a skipped bad row is reported (`_report`) right before a
        (None, resume offset after it) piece, between the pieces of the rows around it.
        """
        raise NotImplementedError

    def _resume_offset(self, path: str, row: int, end: int | None) -> int:
        """Position.offset after `row` rows of `path`; `end` is the last row's resume offset."""
        return 0 if end is None else end

    def _start(self, path: str, start: Position | Mapping[str, Any] | None) -> tuple[int, int]:
        """(offset, row) where reading `path` starts."""
        if start is None:
            return 0, 0
        if not isinstance(start, Position):
            start = Position.from_dict(start)
        if start.path != path and os.path.basename(start.path) != os.path.basename(path):
            raise DataError(f"cannot resume at a position of another file, {start.path}", path=path)
        if start.offset < 0 or start.row < 0:
            raise DataError(
                f"cannot resume at offset {start.offset}, row {start.row}", path=start.path
            )
        return start.offset, start.row


def _normalize_columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    out = list(dict.fromkeys(columns))
    return out or None
