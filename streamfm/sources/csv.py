"""CSV / TSV reader: pyarrow's streaming `open_csv`, with exact resume by data-row count.

pyarrow's `skip_rows_after_names` counts physical lines (blank lines too) and ignores quotes, so a
resume skips its rows with `_records.RecordScanner`, a compiled scanner that splits records as
pyarrow does. With `on_bad_row` set, records of the wrong column count are skipped by pyarrow's
`invalid_row_handler`; the same scanner finds where they were, so that each is reported between
the rows around it and a resume steps over the same records (`_records.BadRecords`).

`csv.skip_lines` and `csv.trim_whitespace` are applied to the bytes before pyarrow sees them
(`_TextFilter`), so that type inference, null values, resume and error lines all see the same text.
"""

from __future__ import annotations

import csv as stdlib_csv
import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from numba import njit

from streamfm.errors import DataError, SpecError
from streamfm.sources._handoff import open_csv
from streamfm.sources._io import ChainStream, open_stream, stdin_stream
from streamfm.sources._records import BadRecords, RecordScanner, Tee
from streamfm.sources.base import Piece, Reader, check_columns
from streamfm.sources.discovery import STDIN, split_extension
from streamfm.text import is_number

# Bigger blocks infer types from more rows and parse faster; 4 MiB keeps memory modest.
CSV_BLOCK = 4 << 20

_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+): ?(.*)", re.S)
_CONVERSION = re.compile(
    r"In CSV column #(\d+): CSV conversion error to ([^:]+): invalid value '(.*)'", re.S
)


@njit(cache=True)
def _trim_fields(
    buf: np.ndarray, out: np.ndarray, delim: int, quote: int, state: np.ndarray
) -> tuple:
    """Copy buf to out without the spaces and tabs that start or end a field outside quotes.

    Quoted parts are copied verbatim (a quote opens one only at the start of a field, after the
    leading blanks are dropped; a doubled quote inside is a literal quote). `state` carries across
    blocks: [in_quote (0 no, 1 yes, 2 quote seen inside), at_field_start]. Blanks inside a field
    are kept once a later byte of the field shows they are not trailing; a run still undecided at
    the end of buf is not copied. Returns (bytes written, index where that run starts or buf.size).
    """
    n = buf.size
    j = 0
    inq = state[0]
    fstart = state[1]
    pend = -1
    for i in range(n):
        c = np.int64(buf[i])
        if inq == 1:
            out[j] = buf[i]
            j += 1
            if c == quote:
                inq = 2
            continue
        if inq == 2:
            if c == quote:
                out[j] = buf[i]
                j += 1
                inq = 1
                continue
            inq = 0
        if c == delim or c == 10 or c == 13:
            pend = -1
            out[j] = buf[i]
            j += 1
            fstart = 1
            continue
        if c == 32 or c == 9:
            if not fstart and pend < 0:
                pend = i
            continue
        if pend >= 0:
            for p in range(pend, i):
                out[j] = buf[p]
                j += 1
            pend = -1
        if fstart and c == quote:
            inq = 1
        fstart = 0
        out[j] = buf[i]
        j += 1
    state[0] = inq
    state[1] = fstart
    return j, pend if pend >= 0 else n


class _TextFilter(io.RawIOBase):
    """`raw` without its first `skip_lines` lines and, with `trim`, without blanks around fields.

    Newlines are never removed, so line numbers after the skipped lines stay those of the file.
    """

    def __init__(self, raw: Any, skip_lines: int, trim: bool, delim: str, quote: str | None):
        super().__init__()
        self._raw = raw
        self._skip = skip_lines
        self._trim = trim
        self._delim = ord(delim)
        self._quote = ord(quote) if quote is not None else -1
        self._state = np.array([0, 1], dtype=np.int64)
        self._carry = b""  # blanks not yet known to be inside a field
        self._out = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self, size: int) -> None:
        while not len(self._out) and not self._eof:
            data = self._raw.read(max(size, 1 << 16))
            if not data:
                self._eof = True  # a blank run left at the end closes the last field: dropped
                return
            data = bytes(data)
            while self._skip and data:
                cut = data.find(b"\n")
                if cut < 0:
                    data = b""
                    break
                data = data[cut + 1 :]
                self._skip -= 1
            if not data:
                continue
            if self._trim:
                data = self._carry + data
                buf = np.frombuffer(data, dtype=np.uint8)
                out = np.empty(buf.size, dtype=np.uint8)
                n, pend = _trim_fields(buf, out, self._delim, self._quote, self._state)
                self._carry = data[pend:]
                data = out[:n].tobytes()
            self._out = memoryview(data)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self._fill(len(view))
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        self._fill(size)
        out = bytes(self._out[:size])
        self._out = self._out[size:]
        return out

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _WithheldTail(io.RawIOBase):
    """`raw` (standard input) without its last line when that line has no newline: a stream
    that ends inside a line ended abnormally (a producer died mid-write), so that line is kept
    back (`cut_off`) to be reported as a bad row rather than parsed. `lines` counts the
    newlines passed on."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._held = b""
        self._out = b""
        self._eof = False
        self.cut_off = b""
        self.lines = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while not self._out and not self._eof:
            data = self._raw.read(max(len(view), 1 << 16))
            if not data:
                self._eof = True
                self.cut_off = self._held
                break
            data = self._held + bytes(data)
            cut = data.rfind(b"\n") + 1
            self._out, self._held = data[:cut], data[cut:]
            self.lines += self._out.count(b"\n")
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        pass  # standard input is not ours to close


def _skip(row: Any) -> str:
    return "skip"


def _parse_types(types: dict[str, str]) -> dict[str, pa.DataType]:
    out = {}
    for name, alias in types.items():
        try:
            out[name] = pa.type_for_alias(alias)
        except (ValueError, TypeError):
            raise SpecError(
                f"source.csv.column_types.{name}: unknown type {alias!r}; use e.g. string, "
                "int32, int64, float32, float64, bool"
            ) from None
    return out


class CsvReader(Reader):
    """CSV / TSV files; Position.row counts the good data rows consumed, Position.offset the bad
    records right after them that were already reported (0 without bad rows): see Position."""

    format = "csv"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # pyarrow needs a whole record in one block: blocks hold the longest line allowed.
        self.block_size = max(CSV_BLOCK, self.config.max_line_bytes)
        self._types = _parse_types(self.config.csv.column_types)
        self._line_scan: tuple[str, RecordScanner] | None = None  # for `_data_row_lines`

    # -- options ----------------------------------------------------------------------------------

    def _delimiter(self, path: str) -> str:
        opts = self.config.csv
        if "delimiter" not in opts.model_fields_set and split_extension(path)[0] == ".tsv":
            return "\t"
        return opts.delimiter

    def _filtered(self) -> bool:
        """Whether the bytes must pass through `_TextFilter` before pyarrow parses them."""
        opts = self.config.csv
        return opts.skip_lines > 0 or opts.trim_whitespace

    def _wrap(self, raw: Any, path: str) -> Any:
        """`raw` (a binary stream of `path`) as the parser must see it."""
        if not self._filtered():
            return raw
        opts = self.config.csv
        return _TextFilter(
            raw, opts.skip_lines, opts.trim_whitespace, self._delimiter(path), opts.quote_char
        )

    def _input(self, path: str) -> Any:
        """What to hand pyarrow for `path`: the path itself when no option changes the bytes."""
        if path != STDIN and not self._filtered():
            return path
        return self._wrap(open_stream(path), path)

    def _read_options(self, names: list[str] | None = None) -> pacsv.ReadOptions:
        """Header handling of the config, or explicit `names` for a stream resumed past the header."""
        opts = self.config.csv
        # pyarrow transcodes to UTF-8 before parsing; record positions are found on the raw
        # bytes, which is why only ASCII-compatible encodings are accepted (see CsvOptions).
        common = {"block_size": self.block_size, "encoding": opts.encoding}
        if names is not None:
            return pacsv.ReadOptions(column_names=names, **common)
        if opts.column_names:
            return pacsv.ReadOptions(
                column_names=list(opts.column_names), skip_rows=1 if opts.header else 0, **common
            )
        return pacsv.ReadOptions(autogenerate_column_names=not opts.header, **common)

    def _parse_options(
        self, path: str, handler: Callable[[Any], str] | None = None
    ) -> pacsv.ParseOptions:
        """Parsing of `path`; `handler` decides about records of the wrong column count (None:
        an error)."""
        quote = self.config.csv.quote_char
        return pacsv.ParseOptions(
            delimiter=self._delimiter(path),
            quote_char=quote if quote is not None else False,
            double_quote=True,
            # Quoted values may span lines; pyarrow's chunker must then track quotes.
            newlines_in_values=quote is not None,
            ignore_empty_lines=True,
            invalid_row_handler=handler,
        )

    def _skipping(self, path: str) -> Callable[[Any], str] | None:
        """An invalid_row_handler for reads that only look (schema, column names): with
        `on_bad_row` set, bad records are skipped silently there (reported when the data is read).
        """
        return _skip if self._places_bad_records(path) else None

    def _convert_options(
        self, columns: list[str] | None, types: dict[str, pa.DataType]
    ) -> pacsv.ConvertOptions:
        return pacsv.ConvertOptions(
            include_columns=columns or [],
            null_values=list(self.config.csv.null_values),
            strings_can_be_null=True,
            column_types=types,
        )

    def _declared_types(self) -> dict[str, pa.DataType]:
        """csv.column_types, and text for the columns the consumer reads as numbers
        (`Reader.column_types`) unless configured: pyarrow's conversion would take "0x10" for
        16 and stop at any text, where streamfm's one rule (`streamfm.text`) decides, a value at
        a time, under the bad-row policy."""
        types = {name: pa.string() for name in self.column_types}
        types.update(self._types)
        return types

    def _column_types(
        self, path: str, schema: pa.Schema | None, resumed: bool
    ) -> dict[str, pa.DataType]:
        """The column types `path` is read with: the configured ones and, under them, those of
        `schema` (an earlier file's) or, for a resumed read, of the file's own first block.

        So a column keeps one type throughout a source, and a resumed read that of the file's
        start (as pyarrow's types come from the first block it reads).
        """
        declared = self._declared_types()
        if schema is None:
            if not resumed or path == STDIN:
                return declared
            schema = self.schema(path)
        types = dict(declared)
        for field in schema:
            # A column empty in the first block says nothing about its type.
            if field.name not in types and not pa.types.is_null(field.type):
                types[field.name] = field.type
        return types

    # -- Reader ------------------------------------------------------------------------------------

    def schema(self, path: str) -> pa.Schema:
        schema = self._cached_schema(path)
        if schema is None:
            ro, po, co = (
                self._read_options(),
                self._parse_options(path, self._skipping(path)),
                self._convert_options(None, self._declared_types()),
            )
            if path == STDIN:
                # Peek at stdin's head, then replay it to the real reader.
                stream = stdin_stream()
                stream.record()
                head = stream.read(self.block_size)
                head += stream.read(1 << 16) if head and not head.endswith(b"\n") else b""
                stream.rewind()
                cut = head.rfind(b"\n")
                source: Any = self._wrap(io.BytesIO(head[: cut + 1] if cut >= 0 else head), path)
            else:
                source = self._input(path)
            try:
                schema = self._cache_schema(
                    path,
                    open_csv(source, read_options=ro, parse_options=po, convert_options=co).schema,
                )
            except pa.ArrowInvalid as e:
                if "Empty CSV file" in str(e):
                    return pa.schema([])
                raise self._error(e, path, 0) from e
            finally:
                if not isinstance(source, str) and path != STDIN:
                    source.close()
        return schema

    def _pieces(
        self,
        path: str,
        columns: list[str] | None,
        offset: int,
        row: int,
        schema: pa.Schema | None,
    ) -> Iterator[Piece]:
        good = row  # good data rows of this file known to parse, for locating an error
        bad: BadRecords | None = None
        tail: _WithheldTail | None = None
        try:
            if row == 0 and offset == 0:
                types = self._column_types(path, schema, resumed=False)
                if path == STDIN:
                    # A last line without its newline is not handed to pyarrow: see below.
                    tail = _WithheldTail(stdin_stream())
                    source = self._wrap(tail, path)
                else:
                    source = self._input(path)
                if self._places_bad_records(path):
                    tee = None
                    if path == STDIN:
                        # Standard input cannot be read twice: the scanner reads a copy.
                        source = tee = Tee(source)
                    bad = self._bad_records(path, 0, 0, tee)
                reader = open_csv(
                    source,
                    read_options=self._read_options(),
                    parse_options=self._parse_options(path, bad.handler if bad else None),
                    convert_options=self._convert_options(columns, types),
                )
            else:
                types = self._column_types(path, schema, resumed=True)
                reader, bad = self._open_resumed(path, columns, types, row, offset)
                if reader is None:
                    return
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    batch = None
                if bad is not None:
                    # The rows with the records pyarrow skipped reported in their place.
                    yield from bad.place(batch)
                if batch is None:
                    if tail is not None and tail.cut_off.strip():
                        self._cut_off(path, tail.lines + 1, tail.cut_off)
                    return
                good += batch.num_rows
                if bad is None and batch.num_rows:
                    yield batch, None
        except (pa.ArrowInvalid, pa.ArrowKeyError) as e:
            if "Empty CSV file" in str(e):
                return
            raise self._error(e, path, good, columns) from e
        finally:
            if bad is not None:
                bad.close()

    def _places_bad_records(self, path: str) -> bool:
        """Whether records of the wrong column count go through `BadRecords` (placed among the
        rows around them) rather than stop pyarrow: with `on_bad_row`, and for standard input
        also without, so that the rows before a bad record still come out before the error
        (standard input cannot be read again)."""
        return self.on_bad_row is not None or path == STDIN

    # -- resume -----------------------------------------------------------------------------------

    def _scanner(
        self, stream: Any, path: str, at_end: Callable[[], bool] | None = None
    ) -> RecordScanner:
        return RecordScanner(
            stream, self._delimiter(path), self.config.csv.quote_char, self.block_size, at_end
        )

    def _skip_to(
        self, sc: RecordScanner, row: int, extra: int, head: bytearray | None = None
    ) -> bool:
        """Step `sc` over the header, `row` good data records (and the bad ones among them), then
        `extra` more records; the first record goes to `head`. False if the data is shorter.
        """
        opts = self.config.csv
        names = len(opts.column_names) if opts.column_names else None
        if row == 0 and extra == 0 and not opts.header:
            sc.expected = names if names is not None else -1
            return True
        if not sc.start(opts.header, names, head):
            return row == 0 and extra == 0
        need = row - sc.good
        return (need <= 0 or sc.good_records(need) == need) and sc.records(extra) == extra

    def _bad_records(
        self, path: str, row: int, extra: int, tee: Tee | None, sc: RecordScanner | None = None
    ) -> BadRecords:
        """The bad-record bookkeeping of a read of `path` that starts after `row` good data rows
        and `extra` more records; `sc`, scanned that far, is reused for standard input."""
        opts = self.config.csv

        def scanner() -> RecordScanner:
            if tee is None:  # a file: scan it again, from the start
                stream = self._wrap(open_stream(path), path)
                again = self._scanner(stream, path)
                if not self._skip_to(again, row, extra):
                    raise DataError(
                        "cannot place the rows skipped as invalid: the file changed", path=path
                    )
                return again
            if sc is not None:
                sc.follow(tee.copy, tee.copy.at_end)
                sc.record_lines()
                return sc
            fresh = self._scanner(tee.copy, path, tee.copy.at_end)
            fresh.record_lines()  # standard input is not read again to number rows
            fresh.start(opts.header, len(opts.column_names) if opts.column_names else None)
            return fresh

        def report(line: int, reason: str, text: str | None) -> None:
            if self.on_bad_row is None:
                raise DataError(reason, path=path, row=line, value=(text or "")[:200])
            self._report(path, line, reason, text)

        return BadRecords(path, row, extra, opts.skip_lines, scanner, report, tee)

    def _open_resumed(
        self,
        path: str,
        columns: list[str] | None,
        types: dict[str, pa.DataType],
        row: int,
        extra: int,
    ) -> tuple[pacsv.CSVStreamingReader | None, BadRecords | None]:
        """A reader of columns of `types` positioned after data row `row` of `path` and `extra`
        more records (None when nothing is left), with its bad-record bookkeeping when
        `on_bad_row` is set."""
        opts = self.config.csv
        stream = self._wrap(open_stream(path), path)
        sc = self._scanner(stream, path)
        head = bytearray()
        if not self._skip_to(sc, row, extra, head):
            raise DataError(
                f"cannot resume at data row {row} (then {extra} more records): the file has "
                f"only {sc.good} good data rows",
                path=path,
            )
        if opts.column_names:
            names = list(opts.column_names)
        else:
            names = open_csv(
                io.BytesIO(bytes(head)),
                read_options=pacsv.ReadOptions(
                    autogenerate_column_names=not opts.header, encoding=opts.encoding
                ),
                parse_options=self._parse_options(path),
            ).schema.names
        source: Any = ChainStream(sc.rest(), stream)
        bad = None
        if self._places_bad_records(path):
            tee = None
            if path == STDIN:
                source = tee = Tee(source)
            bad = self._bad_records(path, row, extra, tee, sc)
        try:
            reader = open_csv(
                source,
                read_options=self._read_options(names),
                parse_options=self._parse_options(path, bad.handler if bad else None),
                convert_options=self._convert_options(columns, types),
            )
        except pa.ArrowInvalid as e:
            if "Empty CSV file" in str(e):
                return None, None
            raise
        return reader, bad

    # -- row numbers ------------------------------------------------------------------------------

    def _data_row_lines(self, path: str, rows: np.ndarray) -> np.ndarray:
        """1-based physical lines where the good data records `rows` (0-based, ascending) of
        `path` start: the file is scanned again (once per run of ascending requests)."""
        out = np.empty(len(rows), dtype=np.int64)
        for k, g in enumerate(rows.tolist()):
            cached = self._line_scan
            if cached is None or cached[0] != path or cached[1].good > g:
                if cached is not None:
                    cached[1].stream.close()
                sc = self._scanner(self._wrap(open_stream(path), path), path)
                if not self._skip_to(sc, 0, 0):
                    raise DataError("cannot number rows: the file changed", path=path)
                cached = self._line_scan = (path, sc)
            sc = cached[1]
            # Step to record g, then over it: the last record ended is record g.
            need = g - sc.good
            if sc.good_records(need) != need or sc.good_records(1) != 1:
                raise DataError("cannot number rows: the file changed", path=path)
            out[k] = self.config.csv.skip_lines + int(sc.state[8]) + 1
        return out

    # -- errors -----------------------------------------------------------------------------------

    def _file_columns(self, path: str) -> list[str]:
        """Column names of `path` (error path only; [] when they cannot be read)."""
        opts = self.config.csv
        if opts.column_names:
            return list(opts.column_names)
        if path == STDIN:
            peeked = self._cached_schema(path)
            return list(peeked.names) if peeked is not None else []
        try:
            return open_csv(
                self._input(path),
                read_options=self._read_options(),
                parse_options=self._parse_options(path, self._skipping(path)),
                convert_options=pacsv.ConvertOptions(column_types={}),
            ).schema.names
        except (pa.ArrowInvalid, OSError):
            return []

    def _locate(self, path: str, good: int, bad: Callable[[list[str]], bool]) -> int | None:
        """1-based line of the first record after `good` data rows for which `bad` holds.

        Error path only, so Python's csv module may walk the rest of the block row by row.
        """
        if path == STDIN:
            return None
        opts = self.config.csv
        try:
            stream = self._wrap(open_stream(path), path)
            sc = self._scanner(stream, path)
            if not self._skip_to(sc, good, 0):
                return None
            lines = sc.lines
            text = io.TextIOWrapper(
                io.BufferedReader(ChainStream(sc.rest(), stream)),
                encoding=opts.encoding,
                errors="replace",
                newline="",
            )
            reader = stdlib_csv.reader(
                text,
                delimiter=self._delimiter(path),
                quotechar=opts.quote_char or '"',
                quoting=stdlib_csv.QUOTE_MINIMAL if opts.quote_char else stdlib_csv.QUOTE_NONE,
                doublequote=True,
                strict=False,
            )
            before = 0
            for record in reader:
                if record and bad(record):
                    return opts.skip_lines + lines + before + 1
                before = reader.line_num
        except (OSError, stdlib_csv.Error, pa.ArrowInvalid):
            pass  # locating is best effort: the error itself still stands
        return None

    def _error(
        self, e: Exception, path: str, good: int, columns: list[str] | None = None
    ) -> DataError:
        """The DataError for a pyarrow error met after `good` data rows of `path`."""
        msg = str(e)
        if isinstance(e, pa.ArrowKeyError) or "in include_columns does not exist" in msg:
            try:
                check_columns(path, columns, self._file_columns(path))
            except DataError as missing:
                return missing
            return DataError(f"column missing: {msg}", path=path)
        m = _RAGGED.search(msg)
        if m:
            expected, got = int(m.group(1)), int(m.group(2))
            line = self._locate(path, good, lambda rec: len(rec) != expected)
            return DataError(
                f"expected {expected} columns, got {got}",
                path=path,
                row=line,
                value=m.group(3)[:200],
            )
        m = _CONVERSION.search(msg)
        if m:
            k, typ, value = int(m.group(1)), m.group(2).strip(), m.group(3)
            names = self._file_columns(path)
            column = names[k] if k < len(names) else f"#{k + 1}"
            width = len(names)  # records of another width were skipped as bad, if any

            def bad(rec: list[str]) -> bool:
                return len(rec) > k and rec[k] == value and (not width or len(rec) == width)

            line = self._locate(path, good, bad)
            hint = "float64" if is_number(value) else "string"
            return DataError(
                f"cannot convert to {typ} (the type comes from the first rows read); "
                f"declare it, e.g. csv.column_types: {{{column}: {hint}}}",
                path=path,
                row=line,
                column=column,
                value=value,
            )
        if "straddling object" in msg:
            return DataError(
                f"a record is longer than the read block ({self.block_size:,} bytes) after data "
                f"row {good}: raise source.max_line_bytes above its length",
                path=path,
            )
        return DataError(f"cannot parse CSV: {msg}", path=path)
