"""JSON lines reader: byte blocks cut at newlines, each parsed by `pyarrow.json.read_json`.

The schema is inferred once, from the first block of the first file, and then imposed on every
block (`explicit_schema`), so a column keeps its type even when a block happens to lack it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
from numba import njit

from streamfm.errors import DataError
from streamfm.sources._io import STDIN, count_newlines, line_blocks, open_stream, skip_bytes
from streamfm.sources.base import Piece, Source, check_columns

_ROW = re.compile(r"in row (\d+)")
_CHANGED = re.compile(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)")
# pyarrow's own parse blocks (several per our block, parsed on several threads).
_PARSE_BLOCK = 1 << 20


@njit(cache=True)
def _line_rows(buf: np.ndarray) -> tuple:
    """(ends, lines, newlines) of the non-blank lines in buf: byte after each, 0-based line number."""
    n = buf.size
    count = 0
    for i in range(n):
        if buf[i] == 10:
            count += 1
    ends = np.empty(count + 1, np.int64)
    lines = np.empty(count + 1, np.int64)
    r = 0
    line = 0
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
        elif c != 32 and c != 9 and c != 13:
            nonblank = True
    if nonblank:
        ends[r] = n
        lines[r] = line
        r += 1
    return ends[:r], lines[:r], line


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


class JsonlSource(Source):
    """JSON lines (one object per line); Position.offset is the byte offset of the next line."""

    format = "jsonl"

    def schema(self) -> pa.Schema:
        if self._schema is None:
            path = self.files[0]
            stream = open_stream(path)
            if path == STDIN:
                stream.record()
            try:
                block = next(line_blocks(stream, self.block_size), None)
            finally:
                if path == STDIN:
                    stream.rewind()
                else:
                    stream.close()
            self._schema = self._infer(block, path) if block is not None else pa.schema([])
        return self._schema

    def _infer(self, block: Any, path: str) -> pa.Schema:
        buf = np.frombuffer(block, dtype=np.uint8)
        if not len(_line_rows(buf)[0]):
            return pa.schema([])
        try:
            return _read(block, None, len(block) + 1).schema
        except pa.ArrowInvalid as e:
            raise self._error(e, block, path, 0, None, None) from e

    def _read_file(
        self, index: int, path: str, columns: list[str] | None, offset: int, row: int
    ) -> Iterator[Piece]:
        schema = self.schema()
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
                ends, lines, nlines = _line_rows(buf)
                if len(ends):
                    if first and columns and index > 0:
                        # Later files may lack a field: name it rather than read nulls. The
                        # head of the block tells which fields the file has.
                        head = bytes(block[:_PARSE_BLOCK])
                        head = head[: head.rfind(b"\n") + 1] or head
                        check_columns(path, columns, self._infer(head, path).names)
                    first = False
                    try:
                        table = _read(block, schema)
                    except pa.ArrowInvalid as e:
                        if line_base is None:
                            line_base = count_newlines(path, pos)
                        raise self._error(e, block, path, line_base, lines, schema) from e
                    if table.num_rows != len(ends):
                        raise DataError(
                            f"found {table.num_rows} JSON values on {len(ends)} non-blank lines; "
                            "JSON lines needs exactly one object per line",
                            path=path,
                        )
                    done = 0
                    for batch in table.to_batches():
                        k = batch.num_rows
                        if k:
                            yield batch, ends[done : done + k] + pos
                        done += k
                pos += buf.size
                if line_base is not None:
                    line_base += nlines
        finally:
            if path != STDIN:
                stream.close()

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
