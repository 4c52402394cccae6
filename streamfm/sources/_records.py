"""CSV records as pyarrow splits them: resume at a data row, and place the rows pyarrow skipped.

pyarrow says neither where its records are nor, when its `invalid_row_handler` skips a record
of the wrong column count, where that record was among the good rows (and it parses ahead, so
the handler runs before the batches of the rows around it come out). `_csv_scan` walks the same
bytes, splitting records as pyarrow does and counting their fields: `RecordScanner` steps over
good records to resume, and finds the bad ones in order; `BadRecords` uses it to report each
skipped record between the rows around it.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from streamfm.errors import DataError

# Records for "as many as there are".
_ALL = 1 << 62
_NO_LINES = np.zeros(0, dtype=np.int64)
# The scanner's state: see `_csv_scan`.
_INQ, _FSTART, _NONEMPTY, _AFTER_CR, _LINES, _DELIMS, _REC_LINE, _LAST_FIELDS, _LAST_LINE = range(9)


@njit(cache=True)
def _csv_scan(
    buf: np.ndarray,
    start: int,
    need: int,
    expected: int,
    stop_bad: bool,
    delim: int,
    quote: int,
    state: np.ndarray,
    good_lines: np.ndarray,
) -> tuple:
    """Step over records of buf[start:] the way pyarrow splits them, until `need` good ones
    (records of `expected` fields; every record when expected < 0) have passed or, with
    `stop_bad`, right after a bad one.

    A quote opens a quoted part only at the start of a field; inside it a doubled quote is a
    literal quote; CR, LF and CRLF end records outside quotes; empty lines hold no record. `state`
    carries across blocks: [in_quote (0 no, 1 yes, 2 quote seen inside), at_field_start,
    record_has_bytes, after_cr, physical lines, delimiters in the record, line where the record
    starts, fields of the last record ended, its first line]. When `good_lines` is not empty,
    the first line of the i-th good record stepped over goes to good_lines[i] (it must have
    room for them all). Returns (good records stepped over, index after the last one or
    buf.size, whether it stopped after a bad record).
    """
    record = good_lines.shape[0] > 0
    n = buf.size
    i = start
    done = 0
    bad = False
    inq = state[0]
    fstart = state[1]
    nonempty = state[2]
    after_cr = state[3]
    lines = state[4]
    delims = state[5]
    rec_line = state[6]
    while i < n and done < need:
        c = np.int64(buf[i])
        i += 1
        if after_cr:
            after_cr = 0
            if c == 10:
                continue
        if inq == 2:
            if c == quote:
                inq = 1
                continue
            inq = 0
        if inq == 1:
            if c == quote:
                inq = 2
            elif c == 10 or c == 13:
                lines += 1
                after_cr = 1 if c == 13 else 0
            continue
        if c == 10 or c == 13:
            lines += 1
            after_cr = 1 if c == 13 else 0
            fstart = 1
            if nonempty:
                nonempty = 0
                state[7] = delims + 1
                state[8] = rec_line
                delims = 0
                if expected < 0 or state[7] == expected:
                    if record:
                        good_lines[done] = rec_line
                    done += 1
                elif stop_bad:
                    bad = True
                    break
            continue
        if not nonempty:
            nonempty = 1
            rec_line = lines
        if fstart and c == quote:
            inq = 1
            fstart = 0
            continue
        if c == delim:
            delims += 1
            fstart = 1
        else:
            fstart = 0
    if (done == need or bad) and after_cr and i < n and buf[i] == 10:
        # Take the LF of a CRLF with its record so the rest starts on a fresh line.
        i += 1
        after_cr = 0
    state[0] = inq
    state[1] = fstart
    state[2] = nonempty
    state[3] = after_cr
    state[4] = lines
    state[5] = delims
    state[6] = rec_line
    return done, i, bad


class RecordScanner:
    """Walks the records of a CSV byte stream, counting physical lines and good records.

    `stream.read(n)` gives the next bytes; b"" means the end, unless `at_end()` (when given)
    says more may still come (a `Tee` that pyarrow has not read further yet).
    """

    def __init__(
        self,
        stream: Any,
        delim: str,
        quote: str | None,
        block_size: int,
        at_end: Callable[[], bool] | None = None,
    ) -> None:
        self.stream = stream
        self._at_end = at_end
        self._delim = ord(delim)
        self._quote = ord(quote) if quote is not None else -1
        self._block = block_size
        self.state = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)
        self._data = b""
        self._buf = np.empty(0, np.uint8)
        self._i = 0
        self.good = 0  # good data records stepped over
        self.expected = -1  # fields of a good record (-1: not known yet)
        # With `record_lines()`: the first line (0-based, in the bytes scanned) of every good
        # data record stepped over since, in order.
        self.good_lines: list[np.ndarray] | None = None

    def record_lines(self) -> None:
        """From now on, keep the first line of every good data record stepped over."""
        self.good_lines = []

    @property
    def lines(self) -> int:
        """Physical lines stepped over."""
        return int(self.state[_LINES])

    def _fill(self) -> bool:
        if self._i < self._buf.size:
            return True
        data = self.stream.read(self._block)
        if not data:
            return False
        self._data = bytes(data)
        self._buf = np.frombuffer(self._data, dtype=np.uint8)
        self._i = 0
        return True

    def _step(
        self, need: int, expected: int, stop_bad: bool = False, capture: bytearray | None = None
    ) -> tuple[int, bool]:
        """(good records stepped over, whether it stopped right after a bad one)."""
        st = self.state
        got = 0
        while got < need:
            if not self._fill():
                if st[_NONEMPTY] and (self._at_end is None or self._at_end()):
                    # The last record lacks a final newline.
                    st[_NONEMPTY] = 0
                    st[_FSTART] = 1
                    st[_LAST_FIELDS] = st[_DELIMS] + 1
                    st[_LAST_LINE] = st[_REC_LINE]
                    st[_DELIMS] = 0
                    if expected < 0 or st[_LAST_FIELDS] == expected:
                        got += 1
                        if self.good_lines is not None and expected >= 0:
                            self.good_lines.append(np.array([st[_REC_LINE]], dtype=np.int64))
                    elif stop_bad:
                        return got, True
                return got, False
            at = self._i
            out = _NO_LINES
            if self.good_lines is not None and expected >= 0:
                rest = self._buf[at:]
                room = np.count_nonzero(rest == 10) + np.count_nonzero(rest == 13) + 1
                out = np.empty(min(room, need - got), dtype=np.int64)
            done, self._i, bad = _csv_scan(
                self._buf, at, need - got, expected, stop_bad, self._delim, self._quote, st, out
            )
            if len(out):
                self.good_lines.append(out[:done])
            if capture is not None:
                capture += self._data[at : self._i]
            got += done
            if bad:
                return got, True
        return got, False

    def records(self, n: int, capture: bytearray | None = None) -> int:
        """Step over `n` records of any kind (their bytes appended to `capture`); how many."""
        return self._step(n, -1, capture=capture)[0]

    def good_records(self, n: int) -> int:
        """Step over records until `n` good ones have passed (bad ones on the way too)."""
        got = self._step(n, self.expected)[0]
        self.good += got
        return got

    def start(self, header: bool, names: int | None, capture: bytearray | None = None) -> bool:
        """Step over the header; with neither a header nor `names` (the number of column names
        given), over the first record, which sets the number of columns (and is a good row).

        The record stepped over goes to `capture`; False when there is none.
        """
        if header or names is None:
            if self.records(1, capture) < 1:
                return False
            if not header:
                self.good += 1
                if self.good_lines is not None:
                    self.good_lines.append(np.array([self.state[_LAST_LINE]], dtype=np.int64))
        self.expected = names if names is not None else int(self.state[_LAST_FIELDS])
        return True

    def next_bad(self) -> tuple[int, int, int] | None:
        """Step right past the next bad record: (good records before it, its first line (1-based,
        in the bytes scanned), its number of fields); None when the bytes at hand hold none."""
        got, bad = self._step(_ALL, self.expected, stop_bad=True)
        self.good += got
        if not bad:
            return None
        return self.good, int(self.state[_LAST_LINE]) + 1, int(self.state[_LAST_FIELDS])

    def rest(self) -> bytes:
        """The bytes read from the stream but not scanned yet (they count as scanned after)."""
        out = self._data[self._i :]
        self._i = self._buf.size
        return out

    def follow(self, stream: Any, at_end: Callable[[], bool] | None) -> None:
        """Go on scanning from `stream` (the bytes not scanned yet are dropped: see `rest`)."""
        self.stream = stream
        self._at_end = at_end
        self._data = b""
        self._buf = np.empty(0, np.uint8)
        self._i = 0


class Tee(io.RawIOBase):
    """`raw` as pyarrow reads it, keeping a copy of the bytes for a RecordScanner (`copy`)."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self.copy = _TeeCopy(self)

    def readable(self) -> bool:
        return True

    def _keep(self, data: bytes, size: int) -> None:
        if data:
            self._chunks.append(bytes(data))
        elif size:
            self._ended = True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        self._keep(data, len(view))
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._raw.read()
            self._keep(data, 1)
            if data:
                self._ended = True
            return bytes(data)
        data = self._raw.read(size)
        self._keep(data, size)
        return bytes(data)

    def close(self) -> None:
        # The raw stream (stdin, or a chain ending in it) is not ours to close.
        pass


class _TeeCopy:
    """The bytes pyarrow read from a Tee, for a RecordScanner."""

    def __init__(self, tee: Tee) -> None:
        self._tee = tee

    def read(self, size: int = -1) -> bytes:
        chunks = self._tee._chunks
        return chunks.popleft() if chunks else b""

    def at_end(self) -> bool:
        return self._tee._ended and not self._tee._chunks


class BadRecords:
    """The records of one CSV file that pyarrow skipped, each reported between the rows around it.

    `handler` is pyarrow's invalid_row_handler: it notes the record and skips it. `place(batch)`
    then yields the pieces of each batch that pyarrow returns, with the noted records before the
    end of its rows reported (`report(line, reason, text)`) in their place, each followed by a
    (None, bad records since the last good row) piece: Position.offset for CSV. `scanner()` gives
    the RecordScanner positioned where pyarrow's input starts (made when first needed); with a
    Tee, `drain` keeps it at pace with what pyarrow read.
    """

    def __init__(
        self,
        path: str,
        row: int,
        skipped: int,
        line_offset: int,
        scanner: Callable[[], RecordScanner],
        report: Callable[[int, str, str | None], None],
        tee: Tee | None = None,
    ) -> None:
        self.path = path
        self._noted: list[tuple[int, int, str | None]] = []  # (expected, actual, text), in order
        self._placed = 0
        self._found: deque[tuple[int, int, int]] = deque()
        self._base = row  # good rows before the next batch
        self._trail = skipped  # bad records since the last good row
        self._line_offset = line_offset
        self._make_scanner = scanner
        self._scanner: RecordScanner | None = None
        self._report = report
        self._tee = tee
        self._lines: list[np.ndarray] = []  # standard input: lines of good rows not yet placed

    def _take_lines(self, n: int) -> np.ndarray | None:
        """0-based lines (from the stream's start) of the next `n` good rows placed (standard
        input only: a file is scanned again when a line is asked for)."""
        if self._tee is None:
            return None
        sc = self._scan()
        if sc.good_lines is None:
            return None
        if sc.good_lines:
            self._lines.extend(sc.good_lines)
            sc.good_lines.clear()
        have = np.concatenate(self._lines) if self._lines else np.zeros(0, np.int64)
        if len(have) < n:
            raise DataError(
                "cannot number the rows read: the reader's scan of the records disagrees with "
                "pyarrow's",
                path=self.path,
            )
        self._lines = [have[n:]]
        return have[:n] + self._line_offset

    def close(self) -> None:
        """Close the file the scanner reads (not a Tee's copy)."""
        if self._scanner is not None and self._tee is None:
            self._scanner.stream.close()

    def handler(self, row: Any) -> str:
        self._noted.append((row.expected_columns, row.actual_columns, row.text))
        return "skip"

    def _scan(self) -> RecordScanner:
        if self._scanner is None:
            self._scanner = self._make_scanner()
        return self._scanner

    def _drain(self) -> None:
        """Scan what pyarrow has read (a Tee's copy must not pile up), noting the bad records."""
        sc = self._scan()
        if sc.expected < 0:
            return
        while (found := sc.next_bad()) is not None:
            self._found.append(found)

    def _next(self, expected: int) -> tuple[int, int, int]:
        if not self._found:
            sc = self._scan()
            if sc.expected < 0:
                sc.expected = expected
            found = sc.next_bad()
            if found is None:
                raise DataError(
                    f"cannot place a row skipped as invalid (expected {expected} columns): "
                    "the reader's scan of the records disagrees with pyarrow's",
                    path=self.path,
                )
            self._found.append(found)
        return self._found[0]

    def place(self, batch: pa.RecordBatch | None) -> Iterator[tuple[pa.RecordBatch | None, Any]]:
        """Pieces of `batch` (None: the file ended) with the skipped records placed among them."""
        if self._tee is not None:
            self._drain()
        n = batch.num_rows if batch is not None else 0
        at = 0
        while self._placed < len(self._noted):
            expected, actual, text = self._noted[self._placed]
            before, line, fields = self._next(expected)
            if batch is not None and before > self._base + n:
                break  # after these rows: placed with the next batch
            if fields != actual or before > self._base + n:
                raise DataError(
                    f"cannot place a row skipped as invalid (expected {expected} columns, got "
                    f"{actual}): the reader's scan of the records disagrees with pyarrow's",
                    path=self.path,
                    row=line + self._line_offset,
                )
            cut = before - self._base
            if cut > at:
                yield batch.slice(at, cut - at), None, self._take_lines(cut - at)
                at = cut
                self._trail = 0
            self._found.popleft()
            self._placed += 1
            self._trail += 1
            self._report(
                line + self._line_offset, f"expected {expected} columns, got {actual}", text
            )
            yield None, self._trail
        if batch is not None and at < n:
            yield (batch if at == 0 else batch.slice(at)), None, self._take_lines(n - at)
            self._trail = 0
        self._base += n
