"""How epochs after the first get their rows: the disk chunk cache (parse once, train many), or,
without it, a second set of builders that rebuilds the rows from the source as the first epoch
built them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.csr import CSRChunk
from streamfm.errors import CheckpointError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.features.registry import ParsedBuilder
from streamfm.features.space import FeatureSpace
from streamfm.store.state import copy_state


class ChunkCache:
    """Built chunks (CSR arrays and targets) appended to one file with np.save, replayed in order.

    Memory stays at one chunk: the file is written and read sequentially. `n_chunks` and
    `n_bytes` say how much is complete; a resumed run cuts the file back to them.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = None
        self.n_chunks = 0
        self.n_bytes = 0

    def append(self, chunk: CSRChunk, y: np.ndarray) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._check()
            self._file = open(self.path, "r+b" if self.n_bytes else "wb")  # noqa: SIM115
            self._file.truncate(self.n_bytes)
            self._file.seek(self.n_bytes)
        for arr in (*chunk, y):
            np.save(self._file, arr, allow_pickle=False)
        self.n_chunks += 1
        self.n_bytes = self._file.tell()

    def sync(self) -> None:
        """Make everything appended so far durable (before a checkpoint records n_bytes)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def state_dict(self) -> dict[str, int]:
        """How much of the file is complete (made durable first)."""
        self.sync()
        return {"chunks": self.n_chunks, "bytes": self.n_bytes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue a cache written by an interrupted run: what came after the recorded end is
        forgotten. The file is checked when it is next used."""
        self.finish()
        self.n_chunks, self.n_bytes = int(state["chunks"]), int(state["bytes"])

    def _check(self) -> None:
        if self.n_bytes and (not self.path.exists() or self.path.stat().st_size < self.n_bytes):
            raise CheckpointError(
                f"the chunk cache {self.path} is missing or shorter than the checkpoint recorded"
            )

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def replay(
        self, start_chunk: int = 0, start_byte: int = 0
    ) -> Iterator[tuple[CSRChunk, np.ndarray, int, int]]:
        """(chunk, y, chunks read, bytes read) for every cached chunk from (start_chunk, start_byte)."""
        self.finish()
        if not self.n_chunks:
            return
        self._check()
        with open(self.path, "rb") as f:
            f.seek(start_byte)
            for i in range(start_chunk, self.n_chunks):
                indptr, indices, values, y = (np.load(f, allow_pickle=False) for _ in range(4))
                yield CSRChunk(indptr, indices, values), y, i + 1, f.tell()

    def remove(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


class Rebuild:
    """Builders that rebuild the rows of epochs > 1 from the source when there is no chunk cache.

    They start each epoch from the builders' initial state (`initial`, taken before the first
    row) and share the main pipeline's feature space (keys keep their ids); the main pipeline
    keeps the state reached at the end of the first epoch, for evaluation and the saved model.
    """

    def __init__(
        self, builders: list[ParsedBuilder], initial: list[dict[str, Any]], space: FeatureSpace
    ) -> None:
        self._builders = builders
        self.initial = initial
        self.space = space
        self.pipeline: FeaturePipeline | None = None

    def start(self, fresh_epoch: bool) -> FeaturePipeline:
        """The rebuilding pipeline (made on first use; reset to the initial state when the epoch
        starts now rather than resuming in its middle)."""
        if self.pipeline is None:
            self.pipeline = FeaturePipeline([b.make() for b in self._builders], space=self.space)
            if fresh_epoch:
                self.reset()
        return self.pipeline

    def reset(self) -> None:
        """Back to the initial state (a new epoch)."""
        if self.pipeline is not None:
            for b, s in zip(self.pipeline.builders, self.initial, strict=True):
                b.load_state_dict(copy_state(s))

    def state_dict(self) -> dict[str, Any]:
        builders = (
            None if self.pipeline is None else [b.state_dict() for b in self.pipeline.builders]
        )
        return {"initial": self.initial, "builders": builders}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state["initial"]
        self.pipeline = None
        if state["builders"] is not None:
            self.pipeline = FeaturePipeline([b.make() for b in self._builders], space=self.space)
            for b, s in zip(self.pipeline.builders, state["builders"], strict=True):
                b.load_state_dict(s)
