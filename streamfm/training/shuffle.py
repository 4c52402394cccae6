"""The bounded shuffle window: rows visited in a random order that does not depend on batch sizes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from streamfm.csr import CSRChunk, concat, take_rows
from streamfm.rng import permutation


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

    def state_dict(self) -> dict[str, Any]:
        """Epoch, window number and the buffered rows (arrays)."""
        state: dict[str, Any] = {"epoch": self.epoch, "window": self.window, "rows": self._rows}
        if self._rows:
            whole, ys = concat(self._chunks), np.concatenate(self._ys)
            state.update(indptr=whole.indptr, indices=whole.indices, values=whole.values, y=ys)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.window, self._rows = int(state["window"]), int(state["rows"])
        self._chunks, self._ys = [], []
        if self._rows:
            self._chunks = [CSRChunk(state["indptr"], state["indices"], state["values"])]
            self._ys = [state["y"]]
