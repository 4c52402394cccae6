"""SIGINT / SIGTERM during training: finish the chunk, checkpoint, exit cleanly."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class stop_on_signals:  # noqa: N801 - used as a context manager, reads like a function
    """Within the block, SIGINT and SIGTERM set `stop` (a threading.Event): the loop finishes
    the current chunk and checkpoints. A second signal while stopping raises KeyboardInterrupt."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop.set()
        print(
            f"\n{signal.Signals(signum).name}: finishing the current chunk and writing a checkpoint...",
            file=sys.stderr,
        )

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
