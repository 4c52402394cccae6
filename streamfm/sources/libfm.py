"""libFM / libSVM text reader: `label [qid:N] idx:val idx:val ... [# comment]`, parsed by numba.

The file is read in byte blocks cut at newlines; `_parse_block` turns a whole block into labels,
CSR offsets, indices and values in one compiled pass, so no Python runs per line. It steps over a
malformed line, recording where it is; Python then explains it (error path only) and raises a
DataError, or, with `on_bad_row` set, reports it and goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from numba import njit

from streamfm.errors import DataError
from streamfm.numpy_arrow import from_numpy
from streamfm.sources._io import LongLine, count_newlines, line_blocks, open_stream, skip_bytes
from streamfm.sources.base import Piece, Reader, check_columns

SCHEMA = pa.schema(
    [
        ("label", pa.float64()),
        ("idx", pa.list_(pa.int64())),
        ("val", pa.list_(pa.float32())),
        ("qid", pa.int64()),
    ]
)

# Error codes of _parse_block.
_OK, _BAD_LABEL, _BAD_FEATURE, _BAD_QID, _TOO_LONG = 0, 1, 2, 3, 4
# Bad lines _parse_block records before it returns (it is then called again on the rest).
_MAX_BAD = 1024

# Exact powers of ten as float64 (each correctly rounded), for the decimal -> binary scaling.
_P10 = np.array([float(f"1e{i}") for i in range(309)], dtype=np.float64)
_MAX_DIGITS = 18  # significant digits kept; 10**18 < 2**63, later digits only scale


@njit(cache=True, inline="always")
def _is_blank(c: np.uint8) -> bool:
    return c == 32 or c == 9 or c == 13


@njit(cache=True, inline="always")
def _ends_token(c: np.uint8) -> bool:
    return c == 32 or c == 9 or c == 13 or c == 10 or c == 35


@njit(cache=True)
def _scale(mant: np.int64, exp10: np.int64) -> float:
    """mant * 10**exp10 in float64.

    Exact (correctly rounded) when mant < 2**53 and |exp10| <= 22, as in Clinger's fast path;
    otherwise within ~2 ulp, far inside the 1e-12 the readers promise.
    """
    if mant == 0:
        return 0.0
    f = float(mant)
    if exp10 >= 0:
        if exp10 > 308:
            return np.inf
        return f * _P10[exp10]
    k = -exp10
    if k <= 308:
        return f / _P10[k]
    if k - 308 > 308:
        return 0.0
    # Two steps: 10**k itself would overflow although the quotient may still be a normal number.
    return f / _P10[k - 308] / _P10[308]


@njit(cache=True)
def _parse_number(buf: np.ndarray, i: int, n: int) -> tuple[float, int]:
    """Decimal float at buf[i:] (sign, digits, fraction, exponent): (value, end), end -1 if none."""
    neg = False
    if i < n and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    mant = np.int64(0)
    ndig = 0
    exp10 = np.int64(0)
    seen = False
    while i < n:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        seen = True
        if ndig < _MAX_DIGITS:
            mant = mant * 10 + d
            if mant != 0:
                ndig += 1
        else:
            exp10 += 1
        i += 1
    if i < n and buf[i] == 46:
        i += 1
        while i < n:
            d = np.int64(buf[i]) - 48
            if d < 0 or d > 9:
                break
            seen = True
            if ndig < _MAX_DIGITS:
                mant = mant * 10 + d
                if mant != 0:
                    ndig += 1
                exp10 -= 1
            i += 1
    if not seen:
        return 0.0, -1
    if i < n and (buf[i] == 101 or buf[i] == 69):
        j = i + 1
        eneg = False
        if j < n and (buf[j] == 45 or buf[j] == 43):
            eneg = buf[j] == 45
            j += 1
        e = np.int64(0)
        edig = False
        while j < n:
            d = np.int64(buf[j]) - 48
            if d < 0 or d > 9:
                break
            edig = True
            if e < 100000:
                e = e * 10 + d
            j += 1
        if not edig:
            return 0.0, -1
        exp10 += -e if eneg else e
        i = j
    value = _scale(mant, exp10)
    return (-value if neg else value), i


@njit(cache=True, inline="always")
def _parse_plain(buf: np.ndarray, i: int, n: int) -> tuple[float, int]:
    """Fast path of `_parse_number` for a whole token of at most 15 digits (exact in float64).

    Such tokens ("1", "4", "17") are most libFM labels and values; end -1 sends the caller to
    the general parser.
    """
    m = np.int64(0)
    j = i
    while j < n and j - i < 15:
        d = np.int64(buf[j]) - 48
        if d < 0 or d > 9:
            break
        m = m * 10 + d
        j += 1
    if j == i or (j < n and not _ends_token(buf[j])):
        return 0.0, -1
    return float(m), j


@njit(cache=True)
def _parse_int(buf: np.ndarray, i: int, n: int, signed: bool) -> tuple[np.int64, int]:
    """Decimal integer at buf[i:] (at most 18 digits): (value, end), end -1 if malformed."""
    neg = False
    if i < n and (buf[i] == 43 or (signed and buf[i] == 45)):
        neg = buf[i] == 45
        i += 1
    v = np.int64(0)
    nd = 0
    while i < n:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        v = v * 10 + d
        nd += 1
        i += 1
    if nd == 0 or nd > _MAX_DIGITS:
        return np.int64(0), -1
    return (-v if neg else v), i


@njit(cache=True)
def _parse_block(buf: np.ndarray, max_bad: int, max_line: int) -> tuple:
    """Parse whole libFM lines in `buf` (uint8), stepping over malformed ones (and those longer
    than `max_line` bytes).

    Returns (rows, lines, stop, n_bad, bad, labels, qids, ends, indptr, idx, val, row_lines):
    ends[r] is the byte after row r's line (its newline), row_lines[r] its 0-based line in buf. A malformed line is skipped and recorded in
    bad[k] = (0-based line within buf, its first byte, its newline (or buf.size), error code,
    first byte of the bad token); after the `max_bad`-th one parsing stops, at byte `stop` after
    `lines` newlines (buf.size and all of its newlines when it went through).
    """
    n = buf.size
    # Output bounds: rows <= lines, features <= colons.
    n_lines = 0
    n_colons = 0
    for k in range(n):
        c = buf[k]
        if c == 10:
            n_lines += 1
        elif c == 58:
            n_colons += 1
    max_rows = n_lines + 1
    labels = np.empty(max_rows, np.float64)
    qids = np.empty(max_rows, np.int64)
    ends = np.empty(max_rows, np.int64)
    row_lines = np.empty(max_rows, np.int64)
    indptr = np.empty(max_rows + 1, np.int32)
    idx = np.empty(n_colons, np.int64)
    val = np.empty(n_colons, np.float32)
    bad = np.empty((max_bad, 5), np.int64)
    n_bad = 0
    indptr[0] = 0
    r = 0
    nnz = 0
    line = 0
    i = 0
    err = _OK
    err_at = 0
    while i < n:
        line_start = i
        while i < n and _is_blank(buf[i]):
            i += 1
        if i >= n:
            break
        c = buf[i]
        if c == 10:
            line += 1
            i += 1
            continue
        if c == 35:
            while i < n and buf[i] != 10:
                i += 1
            continue
        v, j = _parse_plain(buf, i, n)
        if j < 0:
            v, j = _parse_number(buf, i, n)
            if j < 0 or (j < n and not _ends_token(buf[j])):
                err = _BAD_LABEL
                err_at = i
        if err == _OK:
            labels[r] = v
            qids[r] = -1
            i = j
            while True:
                while i < n and _is_blank(buf[i]):
                    i += 1
                if i >= n or buf[i] == 10:
                    break
                if buf[i] == 35:
                    while i < n and buf[i] != 10:
                        i += 1
                    break
                if (
                    i + 3 < n
                    and buf[i] == 113
                    and buf[i + 1] == 105
                    and buf[i + 2] == 100
                    and buf[i + 3] == 58
                ):  # "qid:"
                    q, j = _parse_int(buf, i + 4, n, True)
                    if j < 0 or (j < n and not _ends_token(buf[j])):
                        err = _BAD_QID
                        err_at = i
                        break
                    qids[r] = q
                    i = j
                    continue
                # The feature index, inline: this is the hot path of every line.
                k = np.int64(0)
                j = i
                while j < n:
                    d = np.int64(buf[j]) - 48
                    if d < 0 or d > 9:
                        break
                    k = k * 10 + d
                    j += 1
                if j == i or j - i > _MAX_DIGITS or j >= n or buf[j] != 58:
                    err = _BAD_FEATURE
                    err_at = i
                    break
                v, j2 = _parse_plain(buf, j + 1, n)
                if j2 < 0:
                    v, j2 = _parse_number(buf, j + 1, n)
                    if j2 < 0 or (j2 < n and not _ends_token(buf[j2])):
                        err = _BAD_FEATURE
                        err_at = i
                        break
                idx[nnz] = k
                val[nnz] = v
                nnz += 1
                i = j2
        if err == _OK and i - line_start > max_line:
            err = _TOO_LONG
            err_at = line_start
        if err != _OK:
            # Skip the line: drop its features, record where it is and why, go on after it.
            start = err_at
            while start > 0 and buf[start - 1] != 10:
                start -= 1
            stop = err_at
            while stop < n and buf[stop] != 10:
                stop += 1
            bad[n_bad, 0] = line
            bad[n_bad, 1] = start
            bad[n_bad, 2] = stop
            bad[n_bad, 3] = err
            bad[n_bad, 4] = err_at
            n_bad += 1
            nnz = indptr[r]
            err = _OK
            i = stop
            if i < n:
                i += 1
                line += 1
            if n_bad == max_bad:
                break
            continue
        row_lines[r] = line
        if i < n:  # at the newline
            i += 1
            line += 1
        ends[r] = i
        r += 1
        indptr[r] = nnz
    return (
        r,
        line,
        i,
        n_bad,
        bad[:n_bad],
        labels[:r],
        qids[:r],
        ends[:r],
        indptr[: r + 1],
        idx[:nnz],
        val[:nnz],
        row_lines[:r],
    )


_TOKEN = re.compile(rb"[^ \t\r\n#]*")
_UINT = re.compile(rb"\+?[0-9]+")


def _explain(code: int, token: bytes) -> str:
    """Why `token` is malformed, in words (error path only)."""
    if code == _BAD_LABEL:
        if b":" in token:
            return "missing label: the line starts with a feature"
        return "the label is not a number"
    if code == _BAD_QID:
        return "qid must be an integer"
    if code == _TOO_LONG:
        return "the line is longer than source.max_line_bytes; raise it to read such lines"
    if b":" not in token:
        return "expected idx:val, missing ':'"
    index, _, value = token.partition(b":")
    if index.startswith(b"-"):
        return "negative feature index"
    if not index:
        return "missing feature index before ':'"
    if not _UINT.fullmatch(index):
        return "the feature index is not a non-negative integer"
    if len(index.lstrip(b"+")) > _MAX_DIGITS:
        return "the feature index is too large"
    if not value:
        return "missing value after ':'"
    return "the feature value is not a number"


def _batch(labels, qids, indptr, idx, val, columns: list[str] | None) -> pa.RecordBatch:
    offsets = from_numpy(indptr)  # zero-copy views of the numpy buffers
    arrays = {
        "label": lambda: from_numpy(labels),
        "idx": lambda: pa.ListArray.from_arrays(offsets, from_numpy(idx)),
        "val": lambda: pa.ListArray.from_arrays(offsets, from_numpy(val)),
        "qid": lambda: from_numpy(qids),
    }
    names = columns or SCHEMA.names
    return pa.RecordBatch.from_arrays(
        [arrays[c]() for c in names], schema=pa.schema([SCHEMA.field(c) for c in names])
    )


class LibfmReader(Reader):
    """libFM / libSVM text; Position.offset is the byte offset of the next unread line."""

    format = "libfm"

    def schema(self, path: str) -> pa.Schema:
        return SCHEMA

    def _pieces(
        self,
        path: str,
        columns: list[str] | None,
        offset: int,
        row: int,
        schema: pa.Schema | None,
    ) -> Iterator[Piece]:
        check_columns(path, columns, SCHEMA.names)
        # Without a callback the first bad line is an error: one slot is enough to find it.
        max_bad = 1 if self.on_bad_row is None else _MAX_BAD
        stream = open_stream(path)
        try:
            skipped = skip_bytes(stream, offset)
            # Lines before the block: unknown after a seek until a bad line needs them.
            line_base: int | None = skipped if skipped >= 0 else None
            rel = 0  # lines read since `offset` (rows are numbered from there: `batch_lines`)
            pos = offset
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
                at = 0  # bytes of the block parsed
                lines = 0  # newlines in them
                while True:
                    part = buf[at:] if at else buf
                    parsed = _parse_block(part, max_bad, self.config.max_line_bytes)
                    nrows, nlines, stop, n_bad, bad, labels, qids, ends, indptr, idx, val = parsed[
                        :11
                    ]
                    row_lines = parsed[11] + (rel + lines)
                    if n_bad == 0:
                        if nrows:
                            batch = _batch(labels, qids, indptr, idx, val, columns)
                            yield batch, ends + (pos + at), row_lines
                    else:
                        if line_base is None:
                            line_base = count_newlines(path, pos)
                        batch = _batch(labels, qids, indptr, idx, val, columns) if nrows else None
                        yield from self._with_bad_lines(
                            path, part, pos + at, line_base + lines, batch, ends, bad, row_lines
                        )
                    at += stop
                    lines += nlines
                    if at >= buf.size:
                        break
                pos += buf.size
                rel += lines
                if line_base is not None:
                    line_base += lines
        finally:
            stream.close()

    def _lines_before(self, path: str, offset: int, row: int) -> int:
        return count_newlines(path, offset) if offset else 0

    def _with_bad_lines(
        self,
        path: str,
        part: np.ndarray,
        pos: int,
        line_base: int,
        batch: pa.RecordBatch | None,
        ends: np.ndarray,
        bad: np.ndarray,
        row_lines: np.ndarray,
    ) -> Iterator[Piece]:
        """Pieces of the rows of `part` (at byte `pos` of the file, after `line_base` lines), with
        each bad line reported in its place; DataError for the first one without a callback."""
        done = 0
        # Rows before each bad line: those whose line ends at or before its start.
        cuts = np.searchsorted(ends, bad[:, 1], side="right").tolist()
        for (line, start, stop, code, at), cut in zip(bad.tolist(), cuts, strict=True):
            token = _TOKEN.match(bytes(part[at : at + 256])).group()
            explanation = _explain(code, token)
            word = token.decode("utf-8", "replace")
            if code == _TOO_LONG:
                limit = self.config.max_line_bytes
                explanation = (
                    f"the line has {stop - start:,} bytes, more than source.max_line_bytes "
                    f"({limit:,}); raise it to read such lines"
                )
            if cut > done:  # the good rows before the bad line come first
                yield batch.slice(done, cut - done), ends[done:cut] + pos, row_lines[done:cut]
                done = cut
            if self.on_bad_row is None:
                raise DataError(explanation, path=path, row=line_base + line + 1, value=word)
            self._report(
                path,
                line_base + line + 1,
                explanation if code == _TOO_LONG else f"malformed token {word!r}: {explanation}",
                bytes(part[start:stop]),
            )
            yield None, pos + min(stop + 1, part.size)
        if batch is not None and done < batch.num_rows:
            yield batch.slice(done), ends[done:] + pos, row_lines[done:]
