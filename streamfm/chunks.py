"""Moving built chunks around: row selection and concatenation, the disk chunk cache (parse once,
train many), and the bounded shuffle window."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamfm.csr import CSRChunk
from streamfm.errors import CheckpointError
from streamfm.rng import permutation


def gather(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of a CSR structure with row pointers `indptr`; a row number < 0 gives an empty row.

    Returns (new indptr, position in the old non-zero arrays of every new non-zero).
    """
    present = rows >= 0
    r = np.where(present, rows, 0)
    starts = indptr[r]
    lengths = np.where(present, indptr[r + 1] - starts, 0)
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    # A non-zero's source: its row's start plus its offset within the row.
    return out, np.repeat(starts - out[:-1], lengths) + np.arange(out[-1])


def take_rows(chunk: CSRChunk, rows: np.ndarray) -> CSRChunk:
    """The chunk's rows `rows` (int64 row numbers), in that order."""
    indptr, src = gather(chunk.indptr, rows)
    return CSRChunk(indptr, chunk.indices[src], chunk.values[src])


def concat(chunks: list[CSRChunk]) -> CSRChunk:
    """Rows of all chunks, one after the other."""
    if len(chunks) == 1:
        return chunks[0]
    indptr = [np.zeros(1, dtype=np.int64)]
    offset = 0
    for c in chunks:
        indptr.append(c.indptr[1:] + offset)
        offset += c.nnz
    return CSRChunk(
        np.concatenate(indptr),
        np.concatenate([c.indices for c in chunks]),
        np.concatenate([c.values for c in chunks]),
    )


class ChunkCache:
    """Built chunks (CSR arrays and targets) appended to one file with np.save, replayed in order.

    Memory stays at one chunk: the file is written and read sequentially. `n_chunks` and
    `n_bytes` say how much is complete; a resumed run cuts the file back to them.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = None
        self.n_chunks = 0
        self.n_bytes = 0

    def append(self, chunk: CSRChunk, y: np.ndarray) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "r+b" if self.n_bytes else "wb")  # noqa: SIM115
            self._file.truncate(self.n_bytes)
            self._file.seek(self.n_bytes)
        for arr in (*chunk, y):
            np.save(self._file, arr, allow_pickle=False)
        self.n_chunks += 1
        self.n_bytes = self._file.tell()

    def sync(self) -> None:
        """Make everything appended so far durable (before a checkpoint records n_bytes)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def restore(self, n_chunks: int, n_bytes: int) -> None:
        """Continue a cache written by an interrupted run: forget what came after (n_chunks, n_bytes)."""
        self.finish()
        if n_bytes and (not self.path.exists() or self.path.stat().st_size < n_bytes):
            raise CheckpointError(
                f"the chunk cache {self.path} is missing or shorter than the checkpoint recorded"
            )
        self.n_chunks, self.n_bytes = n_chunks, n_bytes

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def replay(
        self, start_chunk: int = 0, start_byte: int = 0
    ) -> Iterator[tuple[CSRChunk, np.ndarray, int, int]]:
        """(chunk, y, chunks read, bytes read) for every cached chunk from (start_chunk, start_byte)."""
        self.finish()
        if not self.n_chunks:
            return
        with open(self.path, "rb") as f:
            f.seek(start_byte)
            for i in range(start_chunk, self.n_chunks):
                indptr, indices, values, y = (np.load(f, allow_pickle=False) for _ in range(4))
                yield CSRChunk(indptr, indices, values), y, i + 1, f.tell()

    def remove(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


class ShuffleWindow:
    """Bounded shuffle: the row stream is cut into windows of `size` rows, each visited in a random
    order drawn from (seed, epoch, window number).

    Windows are defined on the row stream, not on chunks, so the order does not depend on batch
    sizes. Memory: at most `size` rows plus one incoming chunk.
    """

    def __init__(self, size: int, seed: int, epoch: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = epoch
        self.window = 0
        self._chunks: list[CSRChunk] = []
        self._ys: list[np.ndarray] = []
        self._rows = 0

    def push(self, chunk: CSRChunk, y: np.ndarray) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """Add a chunk; yield every window that is now complete, shuffled.

        The buffer is updated before each yield, so a checkpoint taken while a window is being
        learnt holds exactly the rows not yet handed out.
        """
        self._chunks.append(chunk)
        self._ys.append(y)
        self._rows += chunk.n_rows
        if self._rows < self.size:
            return
        whole, ys = concat(self._chunks), np.concatenate(self._ys)
        start, total = 0, self._rows
        while total - start >= self.size:
            window = np.arange(start, start + self.size)
            start += self.size
            self._keep(whole, ys, start, total)
            yield self._emit(whole, ys, window)

    def flush(self) -> Iterator[tuple[CSRChunk, np.ndarray]]:
        """Yield the last, partial window."""
        if self._rows:
            whole, ys = concat(self._chunks), np.concatenate(self._ys)
            rows = np.arange(self._rows)
            self._keep(whole, ys, self._rows, self._rows)
            yield self._emit(whole, ys, rows)

    def _keep(self, whole: CSRChunk, ys: np.ndarray, start: int, total: int) -> None:
        """Make rows [start, total) of `whole` the buffer."""
        rest = np.arange(start, total)
        self._chunks = [take_rows(whole, rest)] if rest.size else []
        self._ys = [ys[start:total]] if rest.size else []
        self._rows = total - start

    def _emit(self, whole: CSRChunk, ys: np.ndarray, rows: np.ndarray):
        perm = rows[permutation(self.seed, self.epoch * 1_000_003 + self.window, len(rows))]
        self.window += 1
        return take_rows(whole, perm), ys[perm]

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able counters, buffered rows as arrays) for checkpoints."""
        meta = {"window": self.window, "rows": self._rows}
        if not self._rows:
            return meta, {}
        whole, ys = concat(self._chunks), np.concatenate(self._ys)
        return meta, {
            "indptr": whole.indptr,
            "indices": whole.indices,
            "values": whole.values,
            "y": ys,
        }

    def load_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.window, self._rows = int(meta["window"]), int(meta["rows"])
        self._chunks, self._ys = [], []
        if self._rows:
            self._chunks = [CSRChunk(arrays["indptr"], arrays["indices"], arrays["values"])]
            self._ys = [arrays["y"]]
