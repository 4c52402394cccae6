"""Errors a user can act on. The CLI prints them as one paragraph, without a traceback."""

from __future__ import annotations

from typing import Any


class StreamFMError(Exception):
    """Base class of all user-facing streamfm errors."""


class SpecError(StreamFMError, ValueError):
    """The spec (or an estimator's hyper-parameters) is invalid; the message names the key."""


class DataError(StreamFMError, ValueError):
    """Input data is malformed; the message names file, row, column and value where known.

    ``row`` is 1-based within ``path`` (a line number for text formats).
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
        value: Any = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.row = row
        self.column = column
        self.value = value
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        msg = reason if not where else f"{', '.join(where)}: {reason}"
        if value is not None:
            msg += f" (got {value!r})"
        super().__init__(msg)


class MissingInputError(DataError, SpecError):
    """A file, folder or column the spec (or a command's arguments) names is not there: a
    mistake in the spec rather than in the data (the CLI exits 2)."""


class DivergenceError(StreamFMError, FloatingPointError):
    """Training produced a non-finite prediction or parameter."""


class CheckpointError(StreamFMError):
    """A checkpoint or saved model cannot be written or read."""


class OutputError(StreamFMError):
    """A file streamfm writes (quarantine, metrics, lock) cannot be written; the message names
    the file and the cause."""
