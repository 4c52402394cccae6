"""The multi-file layer: the files of a source read one after another by one Reader.

`open_source(config)` finds the files now: its `Source.batches()` reads each of them once, in
order (holdout, predict, side tables). `SourceStream` is the training stream: each file once,
resumable from a state dict, and with `follow` watching a folder or glob for new files
(continual learning).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.errors import DataError
from streamfm.sources.base import BadRow, Position, Reader
from streamfm.sources.csv import CsvReader
from streamfm.sources.discovery import STDIN, current_files, resolve_files
from streamfm.sources.jsonl import JsonlReader
from streamfm.sources.libfm import LibfmReader
from streamfm.sources.parquet import ParquetReader

READERS: dict[str, type[Reader]] = {
    "parquet": ParquetReader,
    "csv": CsvReader,
    "libfm": LibfmReader,
    "jsonl": JsonlReader,
}


def make_reader(fmt: str, config: SourceConfig) -> Reader:
    """A Reader of format `fmt` with the options of `config` (batch size, CSV options)."""
    return READERS[fmt](config)


class Source:
    """The files of one source, as found when it was opened, and the Reader of their format.

    `on_bad_row` is the reader's (see `Reader`): set it to skip and report malformed rows.
    """

    def __init__(self, config: SourceConfig, files: Sequence[str], reader: Reader) -> None:
        self.config = config
        self.files: list[str] = list(files)
        self.reader = reader

    def __repr__(self) -> str:
        return f"Source({len(self.files)} file(s), {self.reader!r})"

    @property
    def format(self) -> str:
        return self.reader.format

    @property
    def batch_size(self) -> int:
        return self.reader.batch_size

    @property
    def on_bad_row(self) -> Callable[[BadRow], None] | None:
        return self.reader.on_bad_row

    @on_bad_row.setter
    def on_bad_row(self, callback: Callable[[BadRow], None] | None) -> None:
        self.reader.on_bad_row = callback

    @property
    def column_types(self) -> dict[str, pa.DataType]:
        """Types the reader gives these columns whatever the data says (`Reader.column_types`)."""
        return self.reader.column_types

    @column_types.setter
    def column_types(self, types: dict[str, pa.DataType]) -> None:
        self.reader.column_types = dict(types)

    def batches(
        self, columns: Sequence[str] | None = None
    ) -> Iterator[tuple[pa.RecordBatch, Position]]:
        """Yield (batch, Position right after it) of every file once, in order.

        `columns` (None or empty: all) selects and orders the columns. The later files are read
        with the first file's column types (`Reader.read`'s `schema`): a column has one type
        throughout. To resume, use a `SourceStream`.
        """
        first: pa.Schema | None = None
        for i, path in enumerate(self.files):
            if i and first is None:
                first = self.reader.schema(self.files[0])
            yield from self.reader.read(path, columns, schema=first)

    def batch_lines(self, rows: np.ndarray) -> np.ndarray:
        """Lines (row numbers for Parquet) of rows of the batch yielded last: `Reader.batch_lines`."""
        return self.reader.batch_lines(rows)

    def schema(self) -> pa.Schema:
        """Arrow schema of the first file (read from its head)."""
        return self.reader.schema(self.files[0])

    def total_rows(self) -> int | None:
        """Number of data rows when known without reading the data (Parquet), else None."""
        total = 0
        for path in self.files:
            rows = self.reader.rows(path)
            if rows is None:
                return None
            total += rows
        return total


def open_source(config: SourceConfig, *, base_dir: str | os.PathLike[str] | None = None) -> Source:
    """The Source reading `config`; relative paths resolve against `base_dir` (default: the CWD)."""
    files, fmt = resolve_files(config, base_dir)
    return Source(config, files, make_reader(fmt, config))


def _size(path: str) -> int | None:
    """Bytes of `path` now (None for standard input or a file gone)."""
    if path == STDIN:
        return None
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class SourceStream:
    """Yields (batch, Position) over a source's files, recording progress in `state`:
    {"done": [paths fully read], "current": Position dict of the file being read, or None}
    ("stdin_done": True once standard input has been read). `learnt_sizes` ({path: bytes when
    it was read}, kept by the caller across runs) makes a file whose size changes while it is
    read or after it was (a producer writing in place) a DataError naming it; in follow mode
    a file is read only once it looks complete (`_ready`).

    Each file is read once, with its own column types: resuming with the same state continues
    exactly after the last batch. With `config.follow`, after the files present it polls for
    new complete files until `should_stop()` or `idle_timeout` seconds pass without one.
    `reader` reads the files (default: a new Reader of their format); `on_bad_row`, when given,
    becomes its callback for malformed rows; `column_types` its `Reader.column_types`.
    """

    def __init__(
        self,
        config: SourceConfig,
        columns: Sequence[str] | None = None,
        *,
        on_bad_row: Callable[[BadRow], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_idle: Callable[[], None] = lambda: None,
        reader: Reader | None = None,
        column_types: dict[str, pa.DataType] | None = None,
        learnt_sizes: dict[str, int] | None = None,
    ) -> None:
        self.config = config
        self.columns = columns
        self.on_bad_row = on_bad_row
        self.should_stop = should_stop
        self.on_idle = on_idle
        self.reader = reader
        self.column_types = dict(column_types or {})
        self._looks: dict[str, tuple[int, int]] = {}  # follow: (size, mtime) at the last poll
        self.learnt_sizes = {} if learnt_sizes is None else learnt_sizes

    def files(self) -> list[str]:
        """Files of the source now, in order (follow mode: only complete ones; none is fine)."""
        return current_files(self.config)[0]

    def batches(self, state: dict[str, Any]) -> Iterator[tuple[pa.RecordBatch, Position]]:
        done = set(state["done"])
        sizes = self.learnt_sizes
        idle_since = time.monotonic()
        current = (state.get("current") or {}).get("path")
        if current not in (None, STDIN) and current not in self.files():
            raise DataError(
                "cannot resume: the file that was being read when the checkpoint was written is "
                "no longer part of the source (moved or deleted?)",
                path=current,
            )
        while True:
            files, fmt = current_files(self.config)
            self._check_learnt(files, sizes)
            pending = self._ready([f for f in files if f not in done or f == STDIN])
            if state.get("stdin_done"):
                pending = [f for f in pending if f != STDIN]
            current = (state.get("current") or {}).get("path")
            if current in files and current not in pending:
                pending.insert(0, current)  # a resumed run finishes its file first
            elif current in pending:
                pending.remove(current)
                pending.insert(0, current)
            for path in pending:
                if self.should_stop():
                    return
                assert fmt is not None  # known once there are files
                before = _size(path)
                yield from self._read(path, fmt, state)
                if path == STDIN:
                    state["stdin_done"] = True
                else:
                    after = _size(path)
                    if after != before:
                        raise DataError(
                            f"the file changed while it was read ({before:,} then {after:,} "
                            "bytes): files must be complete when they appear (write them "
                            "elsewhere, or under a .tmp name, and rename them into place)",
                            path=path,
                        )
                    state["done"].append(path)
                    sizes[path] = after
                    done.add(path)
                state["current"] = None
                idle_since = time.monotonic()
            if not self.config.follow:
                return
            # Follow: wait for a new complete file, staying responsive to stop requests.
            while True:
                files = self.files()
                self._check_learnt(files, sizes)
                if self._ready([f for f in files if f not in done]):
                    break
                timeout = self.config.idle_timeout
                if timeout is not None and time.monotonic() - idle_since >= timeout:
                    return
                self.on_idle()
                if self._sleep(self.config.poll_seconds):
                    return

    def _ready(self, files: list[str]) -> list[str]:
        """The files that may be read now: all of them, except in follow mode where a file
        must look complete: its size and mtime the same at two looks a poll apart, or not
        modified for poll_seconds (a producer writing it in place is still at work)."""
        if not self.config.follow:
            return files
        ready = []
        now = time.time()
        for path in files:
            if path == STDIN:
                ready.append(path)
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone again
            look = (st.st_size, st.st_mtime_ns)
            if self._looks.get(path) == look or now - st.st_mtime >= self.config.poll_seconds:
                ready.append(path)
            self._looks[path] = look
        return ready

    def _check_learnt(self, files: list[str], sizes: dict[str, int]) -> None:
        """DataError naming a file learnt already whose size changed since: its new rows would
        never be learnt (and its old ones were)."""
        for path in files:
            learnt = sizes.get(path)
            if learnt is not None and _size(path) not in (learnt, None):
                raise DataError(
                    f"the file changed after it was learnt ({learnt:,} then {_size(path):,} "
                    "bytes): files must be complete when they appear; put new rows in a new "
                    "file (write it elsewhere and rename it into place)",
                    path=path,
                )

    def batch_lines(self, rows: np.ndarray) -> np.ndarray:
        """Lines (row numbers for Parquet) of rows of the batch yielded last: `Reader.batch_lines`."""
        return self.reader.batch_lines(rows)

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is requested."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.should_stop():
                return True
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
        return self.should_stop()

    def _reader(self, fmt: str) -> Reader:
        if self.reader is None or self.reader.format != fmt:
            self.reader = make_reader(fmt, self.config)
        if self.on_bad_row is not None:
            self.reader.on_bad_row = self.on_bad_row
        self.reader.column_types = self.column_types
        return self.reader

    def _read(
        self, path: str, fmt: str, state: dict[str, Any]
    ) -> Iterator[tuple[pa.RecordBatch, Position]]:
        if path != STDIN and not os.path.isfile(path):
            raise DataError("no such file or folder", path=path)  # gone since it was listed
        reader = self._reader(fmt)
        current = state.get("current")
        start = None
        if current and current["path"] == path and path != STDIN:
            start = Position.from_dict(current)
        for batch, pos in reader.read(path, self.columns, start):
            state["current"] = pos.to_dict()
            yield batch, pos
