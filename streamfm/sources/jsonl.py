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
from streamfm.sources._io import LongLine, count_newlines, line_blocks, open_stream, skip_bytes
from streamfm.sources.base import Piece, Reader, check_columns
from streamfm.sources.discovery import STDIN
from streamfm.text import parse_number

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
# Lines nested deeper than this are bad rows: pyarrow's parser recurses per level (a line of
# ~20,000 levels crashes the process), and no feature reads such values.
MAX_DEPTH = 64


@njit(cache=True)
def _deepest(buf: np.ndarray) -> int:
    """Deepest nesting of [ and { in buf outside strings (the block's deepest line)."""
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    for i in range(buf.size):
        c = buf[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 92:
                escaped = True
            elif c == 34:
                in_string = False
        elif c == 34:
            in_string = True
        elif c == 91 or c == 123:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c == 93 or c == 125:
            depth -= 1
        elif c == 10:
            depth = 0
            in_string = False
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object")
        seen[key] = value
    return seen


def _parse_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the object on `line`, None) or (None, what keeps it from being one JSON object)
    (Python's json: error path only)."""
    if _deepest(np.frombuffer(line, dtype=np.uint8)) > MAX_DEPTH:
        return None, f"invalid JSON: nested more than {MAX_DEPTH} levels deep"
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1})"
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e.msg} (column {e.colno})"
    except ValueError as e:
        return None, f"invalid JSON: {e}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    if isinstance(value, dict):
        return value, None
    kind = "null" if value is None else _KINDS.get(type(value), type(value).__name__)
    return None, f"not a JSON object but {kind}"


def _json_problem(line: bytes) -> str | None:
    """What keeps `line` from being one JSON object, or None."""
    return _parse_line(line)[1]


def _check_lines(
    block: Any, ends: np.ndarray, max_line: int | None = None
) -> tuple[bytes, list[int], dict[int, str], dict[int, dict[str, Any]]]:
    """(block bytes, start of each non-blank line, {line index: problem} of its bad lines,
    {line index: object} of the others); lines over `max_line` bytes are bad unread."""
    data = bytes(block)
    starts = [data.rfind(b"\n", 0, e - 1) + 1 for e in ends.tolist()]
    bad, objects = {}, {}
    for k, (start, end) in enumerate(zip(starts, ends.tolist(), strict=True)):
        if max_line is not None and end - start > max_line:
            bad[k] = (
                f"the line has {end - start:,} bytes, more than source.max_line_bytes "
                f"({max_line:,}); raise it to read such lines"
            )
            continue
        value, problem = _parse_line(data[start:end])
        if problem is None:
            objects[k] = value
        else:
            bad[k] = problem
    return data, starts, bad, objects


def _fit(value: Any, kind: pa.DataType) -> tuple[Any, str | None]:
    """`value` as a value of the column type `kind` (a number in a text column becomes its
    text; an integral float fits an integer column), or (None, why it does not fit)."""
    if value is None:
        return None, None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if pa.types.is_floating(kind):
        if isinstance(value, str) and parse_number(value) is not None:
            return parse_number(value), None
        return (float(value), None) if number else (None, "expected a number")
    if pa.types.is_integer(kind):
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        return None, "expected an integer"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if isinstance(value, str):
            return value, None
        if number:
            text = (
                str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            )
            return text, None
        if isinstance(value, bool):
            return ("true" if value else "false"), None
        return None, "expected text"
    if pa.types.is_boolean(kind):
        return (value, None) if isinstance(value, bool) else (None, "expected true or false")
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if not isinstance(value, list):
            return None, "expected an array"
        out = []
        for item in value:
            fitted, why = _fit(item, kind.value_type)
            if why is not None:
                return None, f"an element: {why}"
            out.append(fitted)
        return out, None
    return value, None  # other types: pyarrow decides (see `_table_of`)


def _table_of(
    objects: dict[int, dict[str, Any]],
    keep: list[int],
    schema: pa.Schema,
    bad: dict[int, str],
    bad_columns: dict[int, str],
) -> pa.Table:
    """The objects of lines `keep` as a table of `schema`, each value fitted to its column
    (`_fit`); a line whose value does not fit goes to `bad` (and out of `keep`) with the column
    named. The error path of blocks pyarrow could not read with the schema."""
    rows = []
    kept = []
    for k in keep:
        obj = objects[k]
        row = {}
        for field in schema:
            value, why = _fit(obj.get(field.name), field.type)
            if why is not None:
                bad[k] = f"{why}, got {obj.get(field.name)!r}"
                bad_columns[k] = field.name
                break
            row[field.name] = value
        else:
            rows.append(row)
            kept.append(k)
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = None  # some value of a nested type: find the lines one by one
    if table is None:
        good = []
        for k, row in zip(kept, rows, strict=True):
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                bad[k] = f"a value does not fit the column types ({e})"
        table = pa.Table.from_pylist(good, schema=schema)
    keep[:] = [k for k in kept if k not in bad]
    return table


def _kept(data: bytes, starts: list[int], ends: np.ndarray, keep: list[int]) -> bytes:
    """The lines `keep` of `data`, one per line."""
    return b"".join(data[starts[k] : int(ends[k])].rstrip(b"\r\n") + b"\n" for k in keep)


def _pieces(table: pa.Table, ends: np.ndarray, lines: np.ndarray) -> Iterator[Piece]:
    """The non-empty record batches of `table`, each with its rows' resume offsets and lines."""
    done = 0
    for batch in table.to_batches():
        k = batch.num_rows
        if k:
            yield batch, ends[done : done + k], lines[done : done + k]
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
            for block in line_blocks(stream, self.block_size, self.config.max_line_bytes):
                if isinstance(block, LongLine):
                    line_base += 1
                    continue
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
        if not odd and _deepest(buf) <= MAX_DEPTH:
            with contextlib.suppress(pa.ArrowInvalid):
                return _read(block, None, len(block) + 1).schema
        # Infer from the lines that are objects (the others are reported when read), and from
        # those before a value of another type than the lines before it gave its column (the
        # later ones are then bad rows naming the column).
        data, starts, bad, _objects = _check_lines(block, ends)
        keep = [k for k in range(len(ends)) if k not in bad]
        while keep:
            good = _kept(data, starts, ends, keep)
            try:
                return _read(good, None, len(good) + 1).schema
            except pa.ArrowInvalid as e:
                m = _ROW.search(str(e))
                if m is None or int(m.group(1)) == 0 or int(m.group(1)) >= len(keep):
                    raise self._error(e, good, path, line_base, lines[keep], None) from e
                keep = keep[: int(m.group(1))]
        return None

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
        schema = self._reading_schema(schema)
        stream = open_stream(path)
        try:
            skipped = skip_bytes(stream, offset)
            line_base: int | None = skipped if skipped >= 0 else None
            rel = 0  # lines read since `offset` (rows are numbered from there: `batch_lines`)
            pos = offset
            first = True
            for block in line_blocks(stream, self.block_size, self.config.max_line_bytes):
                if isinstance(block, LongLine):  # a line too long to read
                    if line_base is None:
                        line_base = count_newlines(path, pos)
                    self._long_line(path, line_base + 1, block)
                    pos += block.size
                    rel += 1
                    line_base += 1
                    yield None, pos
                    continue
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
                    longest = int(np.diff(ends, prepend=0).max())  # >= the longest line
                    if (
                        not odd
                        and longest <= self.config.max_line_bytes
                        and _deepest(buf) <= MAX_DEPTH
                    ):
                        with contextlib.suppress(pa.ArrowInvalid):
                            read = _read(block, schema)
                            read.validate(full=True)  # text that is not UTF-8: line by line
                            table = read
                    if table is not None and table.num_rows == len(ends):
                        yield from _pieces(table, ends + pos, lines + rel)
                    else:
                        # Error path: which lines are not JSON objects?
                        if line_base is None:
                            line_base = count_newlines(path, pos)
                        yield from self._checked(
                            block, path, pos, line_base, ends, lines, schema, rel
                        )
                pos += buf.size
                rel += nlines
                if line_base is not None:
                    line_base += nlines
        finally:
            if path != STDIN:
                stream.close()

    def _lines_before(self, path: str, offset: int, row: int) -> int:
        return count_newlines(path, offset) if offset else 0

    def _reading_schema(self, schema: pa.Schema) -> pa.Schema:
        """The schema the blocks are read with: the declared types of columns (`column_types`:
        numbers the spec reads as numbers), and text for a column the inferring block held no
        value of (so that numbers or text may follow)."""
        fields = []
        for field in schema:
            kind = self.column_types.get(field.name)
            if kind is None and pa.types.is_null(field.type):
                kind = pa.string()
            fields.append(field.with_type(kind) if kind is not None else field)
        return pa.schema(fields)

    def _checked(
        self,
        block: Any,
        path: str,
        pos: int,
        line_base: int,
        ends: np.ndarray,
        lines: np.ndarray,
        schema: pa.Schema,
        rel: int,
    ) -> Iterator[Piece]:
        """Pieces of a block (at byte `pos` of the file, after `line_base` lines) that pyarrow
        alone did not read: the lines that are not one JSON object each are found with Python's
        json and reported in their place (DataError without a callback); pyarrow reads the rest.
        """
        data, starts, bad, objects = _check_lines(block, ends, self.config.max_line_bytes)
        bad_columns: dict[int, str] = {}
        keep = [k for k in range(len(ends)) if k not in bad]
        table = None
        if keep:
            good = _kept(data, starts, ends, keep) if bad else data
            try:
                table = _read(good, schema)
            except pa.ArrowInvalid:
                table = None
            if table is None or table.num_rows != len(keep):
                # A value of another type than its column's (types come from the first
                # block): each such line is a bad row naming the column.
                table = _table_of(objects, keep, schema, bad, bad_columns)
        if bad and self.on_bad_row is None:
            # Without a callback the first bad line stops the read, after the lines before it.
            first_bad = min(bad)
            bad = {first_bad: bad[first_bad]}
            table = table.slice(0, len([k for k in keep if k < first_bad])) if table else None
        done = 0  # rows of `table` yielded
        run = 0  # first line of the current run of good lines
        for k in [*sorted(bad), len(ends)]:
            if k > run:
                n = k - run
                yield from _pieces(table.slice(done, n), ends[run:k] + pos, lines[run:k] + rel)
                done += n
            if k < len(ends) and self.on_bad_row is None:
                raise DataError(
                    bad[k],
                    path=path,
                    row=line_base + int(lines[k]) + 1,
                    column=bad_columns.get(k),
                    value=None if k in bad_columns else _value(data[starts[k] : int(ends[k])]),
                )
            if k < len(ends):
                self._report(
                    path,
                    line_base + int(lines[k]) + 1,
                    bad[k],
                    data[starts[k] : int(ends[k])],
                    bad_columns.get(k),
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
