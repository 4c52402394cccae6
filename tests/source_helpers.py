"""Helpers shared by the reader tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from streamfm.config import SourceConfig
from streamfm.sources import open_source


def source(path, block_size=None, **kw):
    """open_source of `path` with SourceConfig keys `kw`; a small block_size tests block edges."""
    src = open_source(SourceConfig(path=str(path) if isinstance(path, Path) else path, **kw))
    if block_size:
        src.block_size = block_size
    return src


def read_all(src, columns=None, start=None) -> tuple[pa.Table | None, list]:
    """Every batch (checking none is empty or over batch_size) as one table, and the positions."""
    batches, positions = [], []
    for batch, pos in src.batches(columns=columns, start=start):
        assert 0 < batch.num_rows <= src.batch_size
        batches.append(batch)
        positions.append(pos)
    if not batches:
        return None, []
    return pa.Table.from_batches(batches), positions
