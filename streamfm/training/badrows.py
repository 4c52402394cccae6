"""The bad-row policy: `on_bad_rows: fail | skip | quarantine`.

fail stops with the file, row, column, value and reason; skip counts; quarantine appends each bad
row with its reason to a JSON-lines file. Counts are reported in every run summary.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.errors import DataError, OutputError
from streamfm.numpy_arrow import from_numpy


class BadRows:
    """Applies the policy to bad rows found by the sources (BadRow callbacks) and the pipeline."""

    def __init__(self, policy: str, quarantine_path: Path | None) -> None:
        self.policy = policy
        self.path = quarantine_path
        self.skipped = 0
        self.quarantined = 0
        self._file = None

    # --- reports
    def from_source(self, bad) -> None:
        """Callback for a Source's `on_bad_row` (a streamfm.sources.BadRow)."""
        self._handle(bad.path, bad.row, bad.column, None, bad.reason, {"text": bad.text})

    def from_batch(
        self,
        batch: pa.RecordBatch,
        mask: np.ndarray,
        reasons: list[str],
        columns: list[str | None],
        path: str | None,
        lines: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        """Rows `mask` of `batch` are bad; reasons/columns are per bad row. lines(indices):
        where rows of the batch are in `path` (physical line, or Parquet row number)."""
        where = np.flatnonzero(mask)
        if self.policy == "fail":
            i = int(where[0])
            column = columns[0]
            value = batch.column(column)[i].as_py() if column in batch.schema.names else None
            try:
                self._handle(path, int(lines(where[:1])[0]), column, value, reasons[0], {})
            except DataError as exc:
                exc.batch_index = i  # rows of the batch before the bad one are good
                raise
        records = (
            batch.filter(from_numpy(mask)).to_pylist()
            if self.policy == "quarantine"
            else [None] * len(where)
        )
        rows = lines(where).tolist()
        for i, row, reason, column, record in zip(
            where, rows, reasons, columns, records, strict=True
        ):
            value = batch.column(column)[int(i)].as_py() if column in batch.schema.names else None
            self._handle(path, int(row), column, value, reason, {"values": record})

    def _handle(self, path, row, column, value, reason, extra: dict[str, Any]) -> None:
        if self.policy == "fail":
            hint = " (set source.on_bad_rows: skip or quarantine to go on without such rows)"
            raise DataError(reason + hint, path=path, row=row, column=column, value=value)
        if self.policy == "skip":
            self.skipped += 1
            return
        if self._file is None:
            self._file = self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT, "ab")
        rec = {
            "file": path,
            "row": row,
            "column": column,
            "value": value,
            "reason": reason,
            **extra,
        }
        try:
            self._file.write((json.dumps(rec, default=str) + "\n").encode())
        except OSError as exc:
            raise self._error(exc) from exc
        self.quarantined += 1

    def _open(self, flags: int, mode: str):
        """The quarantine file, never through a symbolic link (OutputError naming it)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            return os.fdopen(os.open(self.path, flags | nofollow, 0o666), mode)
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> OutputError:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            why = "it is a symbolic link, which streamfm does not write through"
        return OutputError(f"cannot write the quarantine file {self.path}: {why}")

    # --- state
    def sync(self) -> int:
        """Flush and fsync the quarantine file; returns its length in bytes (0 if none)."""
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise self._error(exc) from exc
        return self.path.stat().st_size if self.path is not None and self.path.exists() else 0

    def state_dict(self) -> dict[str, Any]:
        """Counts, and the length of the quarantine file (made durable first)."""
        return {
            "skipped": self.skipped,
            "quarantined": self.quarantined,
            "quarantine_bytes": self.sync(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters; cut the quarantine file back to what the checkpoint had recorded."""
        self.skipped, self.quarantined = int(state["skipped"]), int(state["quarantined"])
        if self.path is not None and (self.path.exists() or self.path.is_symlink()):
            with self._open(os.O_RDWR, "r+b") as f:
                f.truncate(int(state["quarantine_bytes"]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
