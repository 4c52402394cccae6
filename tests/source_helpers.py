"""Helpers shared by the reader tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.sources import SourceStream, open_source


def source(path, block_size=None, **kw):
    """open_source of `path` with SourceConfig keys `kw`; a small block_size tests block edges."""
    src = open_source(SourceConfig(path=str(path) if isinstance(path, Path) else path, **kw))
    if block_size:
        src.reader.block_size = block_size
    return src


def resume_state(files: list[str], start) -> dict:
    """The SourceStream state of a run over `files` that stopped at Position `start`."""
    return {"done": files[: files.index(start.path)], "current": start.to_dict()}


def batches(src, columns=None, start=None):
    """(batch, Position) of every file of Source `src` or, from Position `start` on, of the
    SourceStream of its files resumed there (with src's reader: its block size and on_bad_row)."""
    if start is None:
        return src.batches(columns=columns)
    stream = SourceStream(src.config, columns, reader=src.reader)
    return stream.batches(resume_state(src.files, start))


def read_all(src, columns=None, start=None) -> tuple[pa.Table | None, list]:
    """Every batch (checking none is empty or over batch_size) as one table, and the positions."""
    parts, positions = [], []
    for batch, pos in batches(src, columns, start):
        assert 0 < batch.num_rows <= src.batch_size
        parts.append(batch)
        positions.append(pos)
    if not parts:
        return None, []
    return pa.Table.from_batches(parts), positions
