"""JSON lines reader: byte blocks cut at newlines, each parsed by `pyarrow.json.read_json`.

The schema is inferred once per file, from its first block that holds an object (or given: the
first file's, for the later files of a source), and then imposed on every block
(`explicit_schema`), so a column keeps its type even when a block happens to lack it.

A block that pyarrow cannot read (or that has a line not starting with '{') is checked line by
line with Python's json: lines that are not one JSON object each are bad (a DataError, or reported
to `on_bad_row` and skipped), the other lines are read by pyarrow. A value of the wrong type in a
valid object stays a DataError.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
from numba import njit

from streamfm.errors import DataError
from streamfm.sources._io import count_newlines, line_blocks, open_stream, skip_bytes
from streamfm.sources.base import Piece, Reader, check_columns
from streamfm.sources.discovery import STDIN

_ROW = re.compile(r"in row (\d+)")
_CHANGED = re.compile(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)")
# pyarrow's own parse blocks (several per our block, parsed on several threads).
_PARSE_BLOCK = 1 << 20


@njit(cache=True)
def _line_rows(buf: np.ndarray) -> tuple:
    """(ends, lines, newlines, odd) of the non-blank lines in buf: the byte after each and its
    0-based line number; `odd` counts the lines whose first non-blank byte is not '{'."""
    n = buf.size
    count = 0
    for i in range(n):
        if buf[i] == 10:
            count += 1
    ends = np.empty(count + 1, np.int64)
    lines = np.empty(count + 1, np.int64)
    r = 0
    line = 0
    odd = 0
    nonblank = False
    for i in range(n):
        c = buf[i]
        if c == 10:
            if nonblank:
                ends[r] = i + 1
                lines[r] = line
                r += 1
            nonblank = False
            line += 1
        elif not nonblank and c != 32 and c != 9 and c != 13:
            nonblank = True
            if c != 123:
                odd += 1
    if nonblank:
        ends[r] = n
        lines[r] = line
        r += 1
    return ends[:r], lines[:r], line, odd


_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _json_problem(line: bytes) -> str | None:
    """What keeps `line` from being one JSON object, or None (Python's json: error path only)."""
    try:
        value = json.loads(line.decode("utf-8-sig", "replace"))
    except json.JSONDecodeError as e:
        return f"invalid JSON: {e.msg} (column {e.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    if isinstance(value, dict):
        return None
    kind = "null" if value is None else _KINDS.get(type(value), type(value).__name__)
    return f"not a JSON object but {kind}"


def _check_lines(block: Any, ends: np.ndarray) -> tuple[bytes, list[int], dict[int, str]]:
    """(block bytes, start of each non-blank line, {line index: problem} of its bad lines)."""
    data = bytes(block)
    starts = [data.rfind(b"\n", 0, e - 1) + 1 for e in ends.tolist()]
    bad = {}
    for k, (start, end) in enumerate(zip(starts, ends.tolist(), strict=True)):
        problem = _json_problem(data[start:end])
        if problem is not None:
            bad[k] = problem
    return data, starts, bad


def _kept(data: bytes, starts: list[int], ends: np.ndarray, keep: list[int]) -> bytes:
    """The lines `keep` of `data`, one per line."""
    return b"".join(data[starts[k] : int(ends[k])].rstrip(b"\r\n") + b"\n" for k in keep)


def _pieces(table: pa.Table, ends: np.ndarray) -> Iterator[Piece]:
    """The non-empty record batches of `table`, each with its rows' resume offsets."""
    done = 0
    for batch in table.to_batches():
        k = batch.num_rows
        if k:
            yield batch, ends[done : done + k]
        done += k


def _value(line: bytes) -> str:
    """A bad line as the value of a DataError (short)."""
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return text if len(text) <= 200 else text[:200] + "..."


def _read(block: Any, schema: pa.Schema | None, parse_block: int = _PARSE_BLOCK) -> pa.Table:
    parse = (
        pajson.ParseOptions()
        if schema is None
        else pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    )
    return pajson.read_json(
        pa.BufferReader(pa.py_buffer(block)),
        read_options=pajson.ReadOptions(block_size=parse_block),
        parse_options=parse,
    )


class JsonlReader(Reader):
    """JSON lines (one object per line); Position.offset is the byte offset of the next line."""

    format = "jsonl"

    def schema(self, path: str) -> pa.Schema:
        cached = self._cached_schema(path)
        if cached is not None:
            return cached
        stream = open_stream(path)
        if path == STDIN:
            stream.record()
        schema = None
        try:
            # The first block holding an object (blank or bad lines may fill the first ones).
            line_base = 0
            for block in line_blocks(stream, self.block_size):
                schema = self._infer(block, path, line_base)
                if schema is not None:
                    break
                line_base += int(_line_rows(np.frombuffer(block, dtype=np.uint8))[2])
        finally:
            if path == STDIN:
                stream.rewind()
            else:
                stream.close()
        return self._cache_schema(path, schema if schema is not None else pa.schema([]))

    def _infer(self, block: Any, path: str, line_base: int = 0) -> pa.Schema | None:
        """Schema of the objects in `block` (after `line_base` lines); None if it holds none."""
        buf = np.frombuffer(block, dtype=np.uint8)
        ends, lines, _, odd = _line_rows(buf)
        if not len(ends):
            return None
        failure = None
        if not odd:
            try:
                return _read(block, None, len(block) + 1).schema
            except pa.ArrowInvalid as e:
                failure = e
        # Infer from the lines that are objects (the others are reported when read).
        data, starts, bad, keep = self._lines(block, path, line_base, ends, lines)
        if not keep:
            return None
        good = _kept(data, starts, ends, keep) if bad else data
        try:
            return _read(good, None, len(good) + 1).schema
        except pa.ArrowInvalid as e:
            raise self._error(e, good, path, line_base, lines[keep], None) from (failure or e)

    def _pieces(
        self,
        path: str,
        columns: list[str] | None,
        offset: int,
        row: int,
        schema: pa.Schema | None,
    ) -> Iterator[Piece]:
        earlier = schema is not None  # the schema of an earlier file of the source
        if schema is None:
            schema = self.schema(path)
        if columns:
            check_columns(path, columns, schema.names)
            schema = pa.schema([schema.field(c) for c in columns])
        stream = open_stream(path)
        try:
            skipped = skip_bytes(stream, offset)
            line_base: int | None = skipped if skipped >= 0 else None
            pos = offset
            first = True
            for block in line_blocks(stream, self.block_size):
                buf = np.frombuffer(block, dtype=np.uint8)
                ends, lines, nlines, odd = _line_rows(buf)
                if len(ends):
                    if first and columns and earlier:
                        # A later file may lack a field: name it rather than read nulls. The
                        # head of the block tells which fields the file has.
                        head = bytes(block[:_PARSE_BLOCK])
                        head = head[: head.rfind(b"\n") + 1] or head
                        found = self._infer(head, path)
                        if found is not None:
                            check_columns(path, columns, found.names)
                    first = False
                    table = None
                    if not odd:
                        with contextlib.suppress(pa.ArrowInvalid):
                            table = _read(block, schema)
                    if table is not None and table.num_rows == len(ends):
                        yield from _pieces(table, ends + pos)
                    else:
                        # Error path: which lines are not JSON objects?
                        if line_base is None:
                            line_base = count_newlines(path, pos)
                        yield from self._checked(block, path, pos, line_base, ends, lines, schema)
                pos += buf.size
                if line_base is not None:
                    line_base += nlines
        finally:
            if path != STDIN:
                stream.close()

    def _lines(
        self, block: Any, path: str, line_base: int, ends: np.ndarray, lines: np.ndarray
    ) -> tuple[bytes, list[int], dict[int, str], list[int]]:
        """`_check_lines` of a block, raising DataError at the first bad line when there is no
        bad-row callback; also the indices of the good lines."""
        data, starts, bad = _check_lines(block, ends)
        if bad and self.on_bad_row is None:
            k = min(bad)
            raise DataError(
                bad[k],
                path=path,
                row=line_base + int(lines[k]) + 1,
                value=_value(data[starts[k] : ends[k]]),
            )
        return data, starts, bad, [k for k in range(len(ends)) if k not in bad]

    def _checked(
        self,
        block: Any,
        path: str,
        pos: int,
        line_base: int,
        ends: np.ndarray,
        lines: np.ndarray,
        schema: pa.Schema,
    ) -> Iterator[Piece]:
        """Pieces of a block (at byte `pos` of the file, after `line_base` lines) that pyarrow
        alone did not read: the lines that are not one JSON object each are found with Python's
        json and reported in their place (DataError without a callback); pyarrow reads the rest.
        """
        data, starts, bad, keep = self._lines(block, path, line_base, ends, lines)
        table = None
        if keep:
            good = _kept(data, starts, ends, keep) if bad else data
            try:
                table = _read(good, schema)
            except pa.ArrowInvalid as e:
                raise self._error(e, good, path, line_base, lines[keep], schema) from e
            if table.num_rows != len(keep):
                raise DataError(
                    f"found {table.num_rows} JSON values on {len(keep)} non-blank lines; "
                    "JSON lines needs exactly one object per line",
                    path=path,
                )
        done = 0  # rows of `table` yielded
        run = 0  # first line of the current run of good lines
        for k in [*sorted(bad), len(ends)]:
            if k > run:
                n = k - run
                yield from _pieces(table.slice(done, n), ends[run:k] + pos)
                done += n
            if k < len(ends):
                self._report(
                    path, line_base + int(lines[k]) + 1, bad[k], data[starts[k] : int(ends[k])]
                )
                yield None, pos + int(ends[k])
            run = k + 1

    def _error(
        self,
        e: Exception,
        block: Any,
        path: str,
        line_base: int,
        lines: np.ndarray | None,
        schema: pa.Schema | None,
    ) -> DataError:
        """DataError for a read_json failure on `block`, with the line when it can be found."""
        msg = str(e)
        try:
            # One parse block for the whole block makes pyarrow's "row N" index the block's rows.
            _read(block, schema, len(block) + 1)
        except pa.ArrowInvalid as again:
            msg = str(again)
        row = None
        m = _ROW.search(msg)
        if m:
            r = int(m.group(1))
            if lines is None:
                lines = _line_rows(np.frombuffer(block, dtype=np.uint8))[1]
            if r < len(lines):
                row = line_base + int(lines[r]) + 1
        m = _CHANGED.search(msg)
        if m:
            column = m.group(1).lstrip("/").replace("/", ".")
            return DataError(
                f"expected {m.group(2)}, found {m.group(3)} (types come from the first block "
                "of the first file)",
                path=path,
                row=row,
                column=column,
            )
        msg = msg.removeprefix("JSON parse error: ")
        msg = _ROW.sub("", msg).strip().rstrip(".")
        return DataError(f"invalid JSON: {msg}", path=path, row=row)
