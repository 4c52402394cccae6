"""Progress of `streamfm train`: a `rich.progress` bar on a terminal (rows, %, rows/s, running
metric, ETA), sparse plain lines otherwise (logs, CI); and the estimate of a text source's rows
from its size, for the percentage."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TextIO

# Rows/s is measured over the reports of the last RATE_WINDOW seconds, leaving out the first
# report (its chunk pays for compiling the kernels: counting it made the first ETA ~20x long).
RATE_WINDOW = 30.0
SAMPLE_BYTES = 1 << 20
TEXT_EXTENSIONS = (".csv", ".tsv", ".txt", ".libfm", ".libsvm", ".svm", ".jsonl", ".ndjson")


def duration(seconds: float | None) -> str:
    """h:mm:ss or m:ss; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def estimate_rows(files: Sequence[str], header: bool = False) -> int | None:
    """Rows of uncompressed text files estimated from their sizes and the line length of the
    first MiB of the first file; None for other files (compressed, standard input)."""
    if not files or not all(f.lower().endswith(TEXT_EXTENSIONS) for f in files):
        return None
    try:
        total = sum(os.path.getsize(f) for f in files)
        with open(files[0], "rb") as fh:
            sample = fh.read(SAMPLE_BYTES)
    except OSError:
        return None
    lines = sample.count(b"\n") + (0 if sample.endswith(b"\n") or not sample else 1)
    if not lines:
        return None
    rows = round(total * lines / len(sample))
    return max(rows - (len(files) if header else 0), 0)


class ProgressPrinter:
    """Callable progress sink for `Trainer`. Call `close()` when training ends (the bar goes,
    so that later lines start on a clean line)."""

    def __init__(
        self, stream: TextIO | None = None, quiet: bool = False, log_every: float = 10.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr  # the one of the moment
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.log_every = log_every
        self._last_log = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._first = True
        self._bar = None
        self._task = None
        self._last_rate: float | None = None

    # --- rate and ETA
    def _rate(self, rows: int) -> float | None:
        now = time.monotonic()
        if self._first:  # this report's rows paid for compiling: start measuring after it
            self._first = False
            self._samples.append((now, rows))
            return None
        self._samples.append((now, rows))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        (t0, r0), (t1, r1) = self._samples[0], self._samples[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 and r1 > r0 else None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        record = event.get("record")
        if record is not None:
            if self._bar is not None:  # the bar catches up with the record (an epoch's end)
                self._update_bar(event, self._last_rate, None)
            self._line(record_line(record))
            return
        rate = self._last_rate = self._rate(event["rows"])
        total = event.get("total_rows")
        eta = (max(total - event["rows"], 0) / rate) if total and rate else None
        if self.tty:
            self._update_bar(event, rate, eta)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            self._line(status_line(event, rate, eta))

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _update_bar(self, e: dict[str, Any], rate: float | None, eta: float | None) -> None:
        total = e.get("total_rows")
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            console = Console(file=self.stream, highlight=False)
            self._bar = Progress(
                TextColumn("{task.fields[epoch]}"),
                BarColumn(bar_width=None),
                TextColumn("{task.fields[rows]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[metric]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=console,
                transient=True,
                expand=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "train", total=None, epoch="", rows="", rate="", metric="", eta="?"
            )
        approx = "~" if e.get("total_estimated") else ""
        rows = f"{e['rows']:,}" + (
            f"/{approx}{total:,} {100 * e['rows'] / total:4.1f}%" if total else ""
        )
        self._bar.update(
            self._task,
            completed=e["rows"],
            total=total,
            epoch=f"epoch {e['epoch']}/{e['epochs']}",
            rows=rows,
            rate=f"{rate:,.0f} rows/s" if rate else "… rows/s",
            metric=f"{e['metric']} {e['value']:.4f}",
            eta=duration(eta),
        )

    def close(self) -> None:
        """Remove the bar (on a terminal); idempotent."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def status_line(e: dict[str, Any], rate: float | None, eta: float | None) -> str:
    """The plain progress line (logs): epoch, rows (of the total), rows/s, metric, ETA."""
    total = e.get("total_rows")
    approx = "~" if e.get("total_estimated") else ""
    rows = f"{e['rows']:,}" + (f"/{approx}{total:,}" if total else "")
    pct = f" {100 * e['rows'] / total:5.1f}%" if total else ""
    speed = f"{rate:,.0f}" if rate else "…"
    return (
        f"epoch {e['epoch']}/{e['epochs']}  rows {rows}{pct}  {speed} rows/s  "
        f"{e['metric']} {e['value']:.4f}  ETA {duration(eta)}"
    )


def record_line(rec: dict[str, Any]) -> str:
    """A history record (epoch end or validation.every_rows) as one line."""
    what = f"epoch {rec['epoch']}" if rec["kind"] == "epoch" else f"rows {rec['rows']:,}"
    parts = [f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k != "seconds"]
    return f"[{duration(rec['seconds'])}] {what}: " + "  ".join(parts)
