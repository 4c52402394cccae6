"""The training stream: every file of a source once, in order, resumable; optionally following a
folder or glob for new files (continual learning)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.errors import DataError
from streamfm.sources import STDIN, Position, open_source
from streamfm.sources.discovery import current_files


class FileStream:
    """Yields (batch, Position) over a source's files, recording progress in `state`:
    {"done": [paths fully read], "current": Position dict of the file being read, or None}.

    Each file is read once: resuming with the same state continues exactly after the last batch.
    With `follow`, after the files present it polls for new complete files until `should_stop()`
    or `idle_timeout` seconds pass without one.
    """

    def __init__(
        self,
        config: SourceConfig,
        columns: list[str],
        *,
        on_bad_row: Callable | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.columns = columns
        self.on_bad_row = on_bad_row
        self.should_stop = should_stop
        self.on_idle = on_idle
        self.total_rows: int | None = None

    def files(self) -> list[str]:
        """Files of the source now, in order (follow mode: only complete ones; none is fine)."""
        return current_files(self.config)[0]

    def batches(self, state: dict[str, Any]) -> Iterator[tuple[pa.RecordBatch, Position]]:
        done = set(state["done"])
        idle_since = time.monotonic()
        current = (state.get("current") or {}).get("path")
        if current not in (None, STDIN) and current not in self.files():
            raise DataError(
                "cannot resume: the file that was being read when the checkpoint was written is "
                "no longer part of the source (moved or deleted?)",
                path=current,
            )
        while True:
            pending = [f for f in self.files() if f not in done or f == STDIN]
            if state.get("stdin_done"):
                pending = [f for f in pending if f != STDIN]
            current = (state.get("current") or {}).get("path")
            if current in pending:  # finish the file a resumed run was in the middle of first
                pending.remove(current)
                pending.insert(0, current)
            for path in pending:
                if self.should_stop():
                    return
                yield from self._read(path, state)
                if path == STDIN:
                    state["stdin_done"] = True
                else:
                    state["done"].append(path)
                    done.add(path)
                state["current"] = None
                idle_since = time.monotonic()
            if not self.config.follow:
                return
            # Follow: wait for a new complete file, staying responsive to stop requests.
            while not any(f not in done for f in self.files()):
                timeout = self.config.idle_timeout
                if timeout is not None and time.monotonic() - idle_since >= timeout:
                    return
                self.on_idle()
                if self._sleep(self.config.poll_seconds):
                    return

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is requested."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.should_stop():
                return True
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
        return self.should_stop()

    def _read(self, path: str, state: dict[str, Any]) -> Iterator[tuple[pa.RecordBatch, Position]]:
        src = open_source(self.config.model_copy(update={"path": path, "follow": False}))
        if self.on_bad_row is not None:
            src.on_bad_row = self.on_bad_row
        current = state.get("current")
        start = None
        if current and current["path"] == path and path != STDIN:
            start = Position.from_dict({**current, "file_index": 0})
        for batch, pos in src.batches(columns=self.columns, start=start):
            state["current"] = pos.to_dict()
            yield batch, pos
