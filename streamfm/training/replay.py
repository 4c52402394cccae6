"""How epochs after the first get their rows: the disk chunk cache (parse once, train many), or,
without it, a second set of builders that rebuilds the rows from the source as the first epoch
built them."""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.csr import CSRChunk
from streamfm.errors import CheckpointError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.features.registry import ParsedBuilder
from streamfm.features.space import FeatureSpace
from streamfm.store.state import copy_state

# A cached chunk: magic, payload length (uint64), CRC-32 of the payload (uint32), then the payload
# (indptr, indices, values, y, each as .npy). The CRC is checked before anything is parsed.
_RECORD = struct.Struct("<4sQI")
_MAGIC = b"SFMC"


def _open_no_follow(path: Path, flags: int) -> int:
    """os.open that refuses a symbolic link at `path` (we never write through one)."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o666)


class ChunkCache:
    """Built chunks (CSR arrays and targets) appended to one file, replayed in order.

    Memory stays at one chunk: the file is written and read sequentially. Each chunk is a
    record with a CRC-32 checksum, verified before the chunk is used: a damaged cache is a
    CheckpointError naming the file and the chunk, never a silently different model.
    `n_chunks` and `n_bytes` say how much is complete; a resumed run cuts the file back to them.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = None
        self.n_chunks = 0
        self.n_bytes = 0
        self.max_record = 0  # bytes of the largest payload written (bounds what a read trusts)

    def append(self, chunk: CSRChunk, y: np.ndarray) -> None:
        buf = io.BytesIO()
        for arr in (*chunk, y):
            np.save(buf, arr, allow_pickle=False)
        payload = buf.getbuffer()
        try:
            if self._file is None:
                self._file = self._open_for_append()
            self._file.write(_RECORD.pack(_MAGIC, len(payload), zlib.crc32(payload)))
            self._file.write(payload)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write the chunk cache {self.path}: {exc.strerror or exc}; free space "
                "there or set cache.dir to another disk"
            ) from exc
        self.n_chunks += 1
        self.n_bytes += _RECORD.size + len(payload)
        self.max_record = max(self.max_record, len(payload))

    def _open_for_append(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.n_bytes:
            # A new cache: whatever is at the path (an old cache, a symbolic link) is replaced.
            self.path.unlink(missing_ok=True)
            fd = _open_no_follow(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        else:
            self._check()
            fd = self._open_existing(os.O_RDWR)
        f = os.fdopen(fd, "r+b" if self.n_bytes else "wb")
        f.truncate(self.n_bytes)
        f.seek(self.n_bytes)
        return f

    def _open_existing(self, flags: int) -> int:
        try:
            return _open_no_follow(self.path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CheckpointError(
                    f"the chunk cache {self.path} is a symbolic link: streamfm does not read or "
                    "write through one"
                ) from None
            raise

    def sync(self) -> None:
        """Make everything appended so far durable (before a checkpoint records n_bytes)."""
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise CheckpointError(
                    f"cannot write the chunk cache {self.path}: {exc.strerror or exc}"
                ) from exc

    def state_dict(self) -> dict[str, int]:
        """How much of the file is complete (made durable first)."""
        self.sync()
        return {"chunks": self.n_chunks, "bytes": self.n_bytes, "max_record": self.max_record}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue a cache written by an interrupted run: what came after the recorded end is
        forgotten. The file is checked when it is next used."""
        self.finish()
        self.n_chunks, self.n_bytes = int(state["chunks"]), int(state["bytes"])
        self.max_record = int(state.get("max_record", self.n_bytes))

    def _check(self) -> None:
        if self.n_bytes and (
            self.path.is_symlink()
            or not self.path.exists()
            or self.path.stat().st_size < self.n_bytes
        ):
            raise CheckpointError(
                f"the chunk cache {self.path} is missing, a symbolic link, or shorter than the "
                "checkpoint recorded"
            )

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _damaged(self, chunk: int, why: str) -> CheckpointError:
        return CheckpointError(
            f"the chunk cache {self.path} is damaged at chunk {chunk + 1} of {self.n_chunks} "
            f"({why}); nothing was learnt from it. Start the run again without --resume (or "
            "with a new checkpoint.dir); the cache is rebuilt from the source"
        )

    def replay(
        self, start_chunk: int = 0, start_byte: int = 0
    ) -> Iterator[tuple[CSRChunk, np.ndarray, int, int]]:
        """(chunk, y, chunks read, bytes read) for every cached chunk from (start_chunk,
        start_byte), each verified against its checksum first."""
        self.finish()
        if not self.n_chunks:
            return
        self._check()
        with os.fdopen(self._open_existing(os.O_RDONLY), "rb") as f:
            f.seek(start_byte)
            at = start_byte
            for i in range(start_chunk, self.n_chunks):
                head = f.read(_RECORD.size)
                if len(head) < _RECORD.size:
                    raise self._damaged(i, "the file ends early")
                magic, size, crc = _RECORD.unpack(head)
                if magic != _MAGIC:
                    raise self._damaged(i, "not a chunk record")
                if size > self.max_record or at + _RECORD.size + size > self.n_bytes:
                    raise self._damaged(i, f"a record of {size} bytes")
                payload = f.read(size)
                if len(payload) < size or zlib.crc32(payload) != crc:
                    raise self._damaged(i, "it does not match its checksum")
                at += _RECORD.size + size
                try:
                    chunk, y = _parse(payload)
                except ValueError as exc:
                    raise self._damaged(i, str(exc)) from None
                yield chunk, y, i + 1, at

    def remove(self) -> None:
        self.finish()
        if self.path.is_symlink() or self.path.is_file():
            self.path.unlink(missing_ok=True)


def _parse(payload: bytes) -> tuple[CSRChunk, np.ndarray]:
    """The chunk and targets of a verified record (ValueError if they do not fit together)."""
    buf = io.BytesIO(payload)
    indptr, indices, values, y = (np.load(buf, allow_pickle=False) for _ in range(4))
    n = len(y)
    dtypes = (indptr.dtype, indices.dtype, values.dtype, y.dtype)
    if dtypes != (np.int64, np.int32, np.float32, np.float64):
        raise ValueError(f"arrays of types {dtypes}")
    if (
        indptr.shape != (n + 1,)
        or indptr[0] != 0
        or indptr[-1] != len(indices)
        or len(values) != len(indices)
    ):
        raise ValueError("its arrays do not form a chunk")
    return CSRChunk(indptr, indices, values), y


class Rebuild:
    """Builders that rebuild the rows of epochs > 1 from the source when there is no chunk cache.

    They start each epoch from the builders' initial state (`initial`, taken before the first
    row) and share the main pipeline's feature space (keys keep their ids); the main pipeline
    keeps the state reached at the end of the first epoch, for evaluation and the saved model.
    """

    def __init__(
        self, builders: list[ParsedBuilder], initial: list[dict[str, Any]], space: FeatureSpace
    ) -> None:
        self._builders = builders
        self.initial = initial
        self.space = space
        self.pipeline: FeaturePipeline | None = None

    def start(self, fresh_epoch: bool) -> FeaturePipeline:
        """The rebuilding pipeline (made on first use; reset to the initial state when the epoch
        starts now rather than resuming in its middle)."""
        if self.pipeline is None:
            self.pipeline = FeaturePipeline([b.make() for b in self._builders], space=self.space)
            if fresh_epoch:
                self.reset()
        return self.pipeline

    def reset(self) -> None:
        """Back to the initial state (a new epoch)."""
        if self.pipeline is not None:
            for b, s in zip(self.pipeline.builders, self.initial, strict=True):
                b.load_state_dict(copy_state(s))

    def state_dict(self) -> dict[str, Any]:
        builders = (
            None if self.pipeline is None else [b.state_dict() for b in self.pipeline.builders]
        )
        return {"initial": self.initial, "builders": builders}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state["initial"]
        self.pipeline = None
        if state["builders"] is not None:
            self.pipeline = FeaturePipeline([b.make() for b in self._builders], space=self.space)
            for b, s in zip(self.pipeline.builders, state["builders"], strict=True):
                b.load_state_dict(s)
