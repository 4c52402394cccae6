"""Terminal progress display for `streamfm train`: one updating line on a terminal, sparse lines
otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressPrinter:
    """Callable progress sink for `Trainer`: prints rows, rows/s, running metric and ETA."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False, log_every: float = 10.0):
        self.stream = stream
        self.quiet = quiet
        self.tty = stream.isatty()
        self.log_every = log_every
        self._last_log = 0.0
        self._line_open = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        record = event.get("record")
        if record is not None:
            self._end_line()
            self.stream.write(self._record_line(record) + "\n")
            self.stream.flush()
            return
        line = self._status_line(event)
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._line_open = True
        else:
            now = time.monotonic()
            if now - self._last_log < self.log_every:
                return
            self._last_log = now
            self.stream.write(line + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._line_open:
            self.stream.write("\r\033[K")
            self._line_open = False

    @staticmethod
    def _status_line(e: dict[str, Any]) -> str:
        total = e.get("total_rows")
        rows = f"{e['rows']:,}" + (f"/{total:,}" if total else "")
        pct = f" {100 * e['rows'] / total:5.1f}%" if total else ""
        return (
            f"epoch {e['epoch']}/{e['epochs']}  rows {rows}{pct}  {e['rows_per_second']:,.0f} rows/s  "
            f"{e['metric']} {e['value']:.4f}  ETA {_duration(e.get('eta_seconds'))}"
        )

    @staticmethod
    def _record_line(rec: dict[str, Any]) -> str:
        what = f"epoch {rec['epoch']}" if rec["kind"] == "epoch" else f"rows {rec['rows']:,}"
        parts = [f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k != "seconds"]
        return f"[{_duration(rec['seconds'])}] {what}: " + "  ".join(parts)
