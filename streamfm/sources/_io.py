"""Byte-level input helpers shared by the text readers: streams, stdin replay, line blocks."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from streamfm.sources.discovery import STDIN

# Large enough that per-block Python overhead vanishes, small enough to keep memory flat.
DEFAULT_BLOCK = 8 << 20


class ReplayStream(io.RawIOBase):
    """A read-only stream over `raw` that can record what it reads and serve it again.

    Standard input cannot seek: peeking at its schema records the bytes read, `rewind()` then
    makes the next reader see them again before the rest of the stream.
    """

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._buf = bytearray()
        self._pos = 0
        self._recording = False

    def record(self) -> None:
        """Start keeping every byte read so that `rewind()` can replay it."""
        self._recording = True

    def rewind(self) -> None:
        """Stop recording; the next reads start again at the first recorded byte."""
        self._recording = False
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self._pos < len(self._buf):
            n = min(len(view), len(self._buf) - self._pos)
            view[:n] = self._buf[self._pos : self._pos + n]
            self._pos += n
            if self._pos == len(self._buf) and not self._recording:
                # Replayed in full: free it, later reads go straight to the source.
                self._buf = bytearray()
                self._pos = 0
            return n
        data = self._raw.read(len(view))
        if not data:
            return 0
        n = len(data)
        view[:n] = data
        if self._recording:
            self._buf += data
            self._pos = len(self._buf)
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(DEFAULT_BLOCK):
                chunks.append(chunk)
            return b"".join(chunks)
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        # Never close the process's stdin behind the caller's back.
        pass


class ChainStream(io.RawIOBase):
    """`head` bytes followed by the rest of `tail`: a stream resumed in the middle of a block."""

    def __init__(self, head: bytes, tail: Any) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if len(self._head):
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            rest = self._tail.read()
            out, self._head = bytes(self._head) + bytes(rest), memoryview(b"")
            return out
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        pass


_stdin: ReplayStream | None = None


def stdin_stream() -> ReplayStream:
    """The process's standard input as one shared replayable stream (it can be opened only once)."""
    global _stdin
    if _stdin is None:
        _stdin = ReplayStream(sys.stdin.buffer)
    return _stdin


def open_stream(path: str) -> Any:
    """A binary input stream of `path` ("-" = stdin); .gz/.bz2/.zst are decompressed on the fly."""
    if path == STDIN:
        return stdin_stream()
    return pa.input_stream(path, compression="detect")


def is_seekable(stream: Any) -> bool:
    """Whether `stream` can seek (plain files; not stdin, not decompressing streams)."""
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def skip_bytes(stream: Any, n: int) -> int:
    """Advance `stream` by `n` bytes and return the number of newlines skipped (-1 if seeked)."""
    if n <= 0:
        return 0
    if is_seekable(stream):
        stream.seek(n)
        return -1
    lines = 0
    left = n
    while left > 0:
        data = stream.read(min(left, DEFAULT_BLOCK))
        if not data:
            break
        lines += data.count(b"\n")
        left -= len(data)
    return lines


def count_newlines(path: str, end: int) -> int:
    """Newlines in the first `end` bytes of `path` (for line numbers after a resume)."""
    if path == STDIN:
        return 0
    lines = 0
    with open_stream(path) as s:
        left = end
        while left > 0:
            data = s.read(min(left, DEFAULT_BLOCK))
            if not data:
                break
            lines += data.count(b"\n")
            left -= len(data)
    return lines


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit `line_blocks` was given, stepped over unread: its length
    in bytes (with its newline), its first bytes, and whether the stream ended inside it."""

    size: int
    head: bytes
    ended: bool


def line_blocks(
    stream: Any, block_size: int = DEFAULT_BLOCK, max_line: int | None = None
) -> Iterator[memoryview | LongLine]:
    """Read `stream` in blocks of whole lines (cut after the last newline; the rest is carried).

    A line longer than `block_size` grows the block until it ends; one longer than `max_line`
    bytes is not kept: a `LongLine` stands for it, in its place (memory stays below about
    block_size + max_line). The last block may lack a final newline. Blocks are memoryviews so
    that cutting them copies nothing.
    """
    carry = b""
    while True:
        data = stream.read(block_size)
        if not data:
            if carry:
                yield memoryview(carry)
            return
        if carry:
            data = carry + data
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if max_line is not None and len(carry) > max_line:
                long, carry = _step_over_long_line(stream, carry, block_size)
                yield long
            continue
        carry = data[cut + 1 :]
        yield memoryview(data)[: cut + 1]
        if max_line is not None and len(carry) > max_line:
            long, carry = _step_over_long_line(stream, carry, block_size)
            yield long


def _step_over_long_line(stream: Any, start: bytes, block_size: int) -> tuple[LongLine, bytes]:
    """(the LongLine `start` begins, the bytes read after its newline)."""
    size = len(start)
    while True:
        data = stream.read(block_size)
        if not data:
            return LongLine(size, bytes(start[:200]), True), b""
        cut = data.find(b"\n")
        if cut >= 0:
            return LongLine(size + cut + 1, bytes(start[:200]), False), bytes(data[cut + 1 :])
        size += len(data)
