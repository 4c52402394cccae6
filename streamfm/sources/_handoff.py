"""Python objects handed to pyarrow's CSV reader, and letting its threads finish with them at exit.

pyarrow reads ahead on its own threads. A reader that is dropped (at the end of a file, on an
error, or when a generator is closed) lives on there until its in-flight reads complete, and its
last thread then releases the Python objects it holds: the stream it was given (stdin, a resumed
or filtered file), the bytes each read returned (its buffers point into them) and the bad-row
handler. That takes the GIL; once the interpreter is finalizing, a thread that takes the GIL is
ended on the spot, which aborts the process ("terminate called without an active exception",
exit 134 after a run that otherwise succeeded; apache/arrow#34314).

So every Python object pyarrow gets is one made for it alone (a stream proxy, the chunks it
reads, a handler proxy) and is watched: it is freed exactly when pyarrow lets go of it. An
atexit hook waits, the GIL released, until those of every reader Python has dropped are freed.
(A reader still referenced at exit is not waited for: it may never finish; the main thread frees
it later.) Transcoding from `csv.encoding` is done by the stream proxy, as pyarrow's own
transcoder is a Python object too.
"""

from __future__ import annotations

import atexit
import codecs
import copy
import gc
import io
import time
import weakref
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv


class _Opened:
    """One open_csv call: whether it returned, and the reader it returned (weakly)."""

    def __init__(self) -> None:
        self.returned = False
        self.reader: weakref.ref | None = None

    def dropped(self) -> bool:
        """Whether Python no longer holds the reader (or open_csv failed)."""
        return self.returned and (self.reader is None or self.reader() is None)


# Objects pyarrow may still hold, each with the open_csv call it came from; an object removes
# itself when freed, on whichever thread frees it.
# Keyed by the id of the weak reference, as a bytearray cannot be hashed.
_held: dict[int, tuple[weakref.ref, _Opened]] = {}
# Ample for the in-flight block reads of a file or a pipe; an exit is never held longer.
EXIT_WAIT = 2.0


def _forget(ref: weakref.ref) -> None:
    _held.pop(id(ref), None)


def _watch(obj: Any, opened: _Opened) -> Any:
    ref = weakref.ref(obj, _forget)
    _held[id(ref)] = (ref, opened)
    return obj


class _Chunk(bytearray):
    """Bytes of one read, as pyarrow gets them (a bytearray, as bytes cannot be watched)."""


class _Stream(io.RawIOBase):
    """`raw` as pyarrow reads it: bytes as they are, or decoded from `encoding` to UTF-8; each
    read is a fresh watched chunk."""

    def __init__(self, raw: Any, encoding: str | None, opened: _Opened) -> None:
        super().__init__()
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(encoding)() if encoding else None
        self._pending = b""  # UTF-8 bytes decoded but not yet returned
        self._opened = opened

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return _watch(_Chunk(self._read(size)), self._opened)

    def _read(self, size: int | None) -> bytes:
        if self._decoder is None:
            return self._raw.read(size)
        if size is None or size < 0:
            data = self._raw.read()
            out = self._pending + self._decoder.decode(data, final=True).encode("utf-8")
            self._pending = b""
            return out
        # Full reads: pyarrow takes each read as a block, and a record may span only two.
        while len(self._pending) < size:
            data = self._raw.read(size)
            self._pending += self._decoder.decode(data, final=not data).encode("utf-8")
            if not data:
                break
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self._read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        # The stream's owner closes it (standard input is never closed).
        pass


class _Handler:
    """`handler` (pyarrow's invalid_row_handler) behind a proxy pyarrow alone refers to."""

    def __init__(self, handler: Callable[[Any], str]) -> None:
        self._handler = handler

    def __call__(self, row: Any) -> str:
        return self._handler(row)


def open_csv(
    source: Any,
    read_options: pacsv.ReadOptions,
    parse_options: pacsv.ParseOptions,
    convert_options: pacsv.ConvertOptions | None = None,
) -> pacsv.CSVStreamingReader:
    """`pyarrow.csv.open_csv` of `source` (a path, a pyarrow file, a Python binary stream), the
    Python objects it needs made for it and watched (see the module docstring).

    Bytes in memory come as `io.BytesIO`: a `pa.BufferReader` of them would hand pyarrow the
    Python bytes object unwatched."""
    opened = _Opened()
    encoding = read_options.encoding
    transcode = codecs.lookup(encoding).name != "utf-8"
    if transcode:
        read_options = copy.copy(read_options)
        read_options.encoding = "utf8"
    if transcode or not isinstance(source, (str, pa.NativeFile)):
        if isinstance(source, str):
            source = pa.input_stream(source, compression="detect")
        source = _watch(_Stream(source, encoding if transcode else None, opened), opened)
    handler = parse_options.invalid_row_handler
    if handler is not None:
        parse_options = copy.copy(parse_options)
        parse_options.invalid_row_handler = _watch(_Handler(handler), opened)
    try:
        reader = pacsv.open_csv(
            source,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    except BaseException:
        # A traceback keeps this frame: it must not keep the proxies alive (an exit would wait).
        source = parse_options = None
        raise
    finally:
        opened.returned = True
    opened.reader = weakref.ref(reader)
    return reader


def released() -> int:
    """How many objects pyarrow still holds for readers that Python has dropped."""
    return sum(opened.dropped() for _, opened in list(_held.values()))


def wait_for_pyarrow(timeout: float = EXIT_WAIT) -> bool:
    """Wait, the GIL released, until pyarrow holds no object of a dropped reader (readers in
    reference cycles are collected first); False if some are still held after `timeout` s."""
    if not _held:
        return True
    gc.collect()
    deadline = time.monotonic() + timeout
    while released() and time.monotonic() < deadline:
        time.sleep(0.001)
    return not released()


atexit.register(wait_for_pyarrow)  # returns at once when pyarrow was given nothing
