"""Prefetch: the next chunks are read, parsed and built in a background thread while the learner
works on the current one.

The producer is a generator that updates its own state (source positions, builder states, the
feature space) before it yields, as every stage of the loop does. While the consumer holds
`paused()`, the producer stands between two items, so that state is consistent with the items
produced so far; the items produced but not yet consumed come with it (a checkpoint saves them
and a resumed run consumes them first). Items reach the consumer in the producer's order, and
an exception of the producer is raised to the consumer at the point of the stream where it
happened, so results are exactly those of the sequential path. pyarrow and the numba kernels
release the GIL, which is what lets the two threads overlap.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from streamfm.csr import CSRChunk, concat

_ITEM, _END, _ERROR = 0, 1, 2


class Prefetcher:
    """Iterate `source` (an iterator) up to `depth` items ahead in a background thread."""

    def __init__(self, source: Iterator[Any], depth: int) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._source = source
        self._depth = depth
        self._cond = threading.Condition()
        self._pending: deque[tuple[int, Any]] = deque()
        self._pause = 0
        self._producing = False
        self._closed = False
        self._thread = threading.Thread(target=self._produce, name="streamfm-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._pause or len(self._pending) >= self._depth):
                    self._cond.wait()
                if self._closed:
                    return
                self._producing = True
            try:
                entry = (_ITEM, next(self._source))
            except StopIteration:
                entry = (_END, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, in order
                entry = (_ERROR, exc)
            with self._cond:
                self._producing = False
                self._pending.append(entry)
                self._cond.notify_all()
                if entry[0] != _ITEM:
                    return

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._pending:
                self._cond.wait()
            kind, value = self._pending.popleft()
            self._cond.notify_all()
        if kind == _END:
            self._pending.appendleft((kind, value))  # stays exhausted
            raise StopIteration
        if kind == _ERROR:
            self._pending.appendleft((kind, value))
            raise value
        return value

    @contextmanager
    def paused(self) -> Iterator[list[Any]]:
        """Hold the producer between two items; yields the items produced and not consumed."""
        with self._cond:
            self._pause += 1
            while self._producing:
                self._cond.wait()
            pending = [v for k, v in self._pending if k == _ITEM]
        try:
            yield pending
        finally:
            with self._cond:
                self._pause -= 1
                self._cond.notify_all()

    def close(self) -> list[Any]:
        """Stop the producer after the item it is making (if any) and wait for it; returns the
        items produced and not consumed (the state the producer left matches them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._producing:
                self._cond.wait()
            pending = [v for k, v in self._pending if k == _ITEM]
        self._thread.join()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()  # run the generator's finally blocks in this thread
        return pending


class ReadAhead:
    """The chunks read and built ahead of the learner and not learnt yet: a checkpoint part, so
    that a resumed run learns them first (the source positions and builder states in the same
    checkpoint are those after them). Items are (chunk, y, ...): what follows y is the reader's
    business (the state keeps rows and targets)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def take(self) -> list[tuple[Any, ...]]:
        items, self.items = self.items, []
        return items

    def state_dict(self) -> dict[str, Any]:
        """The rows (one CSR, chunk boundaries do not matter to a per-case learner) and their
        targets."""
        if not self.items:
            return {"rows": 0}
        whole = concat([item[0] for item in self.items])
        return {
            "rows": whole.n_rows,
            "indptr": whole.indptr,
            "indices": whole.indices,
            "values": whole.values,
            "y": np.concatenate([item[1] for item in self.items]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.items = []
        if int(state["rows"]):
            chunk = CSRChunk(state["indptr"], state["indices"], state["values"])
            y = np.asarray(state["y"], dtype=np.float64)
            if chunk.n_rows != int(state["rows"]) or y.shape != (chunk.n_rows,):
                raise ValueError("the rows read ahead do not match their targets")
            self.items = [(chunk, y)]
