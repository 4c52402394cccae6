"""Checkpoints: a directory per checkpoint, written whole or not at all.

    <dir>/ckpt-00000012/state.zip       every part's state: an archive (`store.archive`) of
                                        meta.json (spec, counters, positions, ...) and arrays
    <dir>/ckpt-00000012/MANIFEST.json   sha256 and size of state.zip
    <dir>/latest                        name of the newest complete checkpoint

A checkpoint is written into a temporary directory, every file fsynced, then renamed into place
and `latest` is replaced atomically; a crash at any moment leaves the previous checkpoints intact.
Loading verifies the manifest and falls back to the previous good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from streamfm.errors import CheckpointError
from streamfm.store.archive import fsync_dir, read_archive, write_archive, write_atomic
from streamfm.store.state import join_arrays, split_arrays

PREFIX = "ckpt-"
STATE, MANIFEST, LATEST = "state.zip", "MANIFEST.json", "latest"
# Only names of exactly this form are ours: "ckpt-00000012 (copy)", "ckpt-3.bak" are left alone.
_CHECKPOINT_NAME = re.compile(r"ckpt-(\d+)")
_TEMP_NAME = re.compile(r"\.tmp-ckpt-\d+-\d+")


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]  # as written: a tree of JSON values and numpy arrays


def _crash_point(seq: int, stage: str) -> None:
    """Fault injection for the crash tests: STREAMFM_CRASH_AT=<seq>:<stage> kills the process
    (SIGKILL, no clean-up) while writing checkpoint number <seq>, at <stage>."""
    if os.environ.get("STREAMFM_CRASH_AT") == f"{seq}:{stage}":
        os.kill(os.getpid(), signal.SIGKILL)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_file(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Create `path`, call `write(file)`, fsync."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


class Checkpointer:
    """Writes and finds checkpoints in one directory, keeping the newest `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, int(keep))
        self.warnings: list[str] = []

    def _existing(self) -> list[Path]:
        """Our checkpoint directories (named ckpt-<number>), oldest first by number."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _CHECKPOINT_NAME.fullmatch(p.name)
            if m and p.is_dir() and not p.is_symlink():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def _remove_ours(self, path: Path) -> None:
        """Delete checkpoint directory `path` if it holds nothing but the files we write (a folder
        someone else put there under our naming keeps its contents)."""
        try:
            names = set(os.listdir(path))
        except OSError:
            return
        if names <= {STATE, MANIFEST}:
            shutil.rmtree(path, ignore_errors=True)

    def write(self, state: dict[str, Any]) -> Path:
        """Write a new checkpoint of `state` (a tree of JSON values and numpy arrays); returns
        its directory. On failure the old ones stay as they were."""
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self._existing()
        seq = int(existing[-1].name[len(PREFIX) :]) + 1 if existing else 1
        final = self.dir / f"{PREFIX}{seq:08d}"
        tmp = self.dir / f".tmp-{final.name}-{os.getpid()}"
        # Half-written checkpoints of a crashed run (one writer per directory: the run's lock)
        # are rubbish; other programs' temporary folders are not ours to delete.
        for stale in self.dir.iterdir():
            if _TEMP_NAME.fullmatch(stale.name) and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        arrays: dict[str, np.ndarray] = {}
        meta = split_arrays(state, arrays)
        try:
            tmp.mkdir()
            _write_file(tmp / STATE, lambda f: write_archive(f, meta, arrays))
            _crash_point(seq, "arrays")
            manifest = {
                STATE: {"sha256": _sha256(tmp / STATE), "bytes": (tmp / STATE).stat().st_size}
            }
            _write_file(tmp / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
            fsync_dir(tmp)
            _crash_point(seq, "rename")
            os.rename(tmp, final)
            fsync_dir(self.dir)
            _crash_point(seq, "latest")
            write_atomic(self.dir / LATEST, lambda f: f.write(final.name.encode()))
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(
                f"cannot write checkpoint in {self.dir}: {exc.strerror or exc}; the previous "
                "checkpoint is intact"
            ) from exc
        for old in self._existing()[: -self.keep]:
            self._remove_ours(old)
        return final

    def verify(self, path: Path) -> str | None:
        """None if the checkpoint at `path` is complete and unaltered, else what is wrong."""
        try:
            manifest = json.loads((path / MANIFEST).read_bytes())
        except (OSError, ValueError) as exc:
            return f"manifest unreadable ({exc})"
        if not isinstance(manifest, dict):
            return "manifest is not a JSON object"
        if "state.json" in manifest:
            return "written by streamfm 0.1 in another format, which this version cannot resume"
        entry = manifest.get(STATE)
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
        ):
            return f"manifest lacks the size and checksum of {STATE}"
        f = path / STATE
        if not f.is_file():
            return f"{STATE} is missing"
        size = f.stat().st_size
        if size != entry["bytes"]:
            return f"{STATE} has {size} bytes, expected {entry['bytes']} (truncated?)"
        if _sha256(f) != entry["sha256"]:
            return f"{STATE} does not match its checksum (altered or corrupted)"
        return None

    def load(self, path: Path) -> Checkpoint:
        meta, arrays = read_archive(path / STATE)
        return Checkpoint(path, join_arrays(meta, arrays))

    def _pointed(self) -> Path | None:
        """The checkpoint `latest` names, or None (no pointer, or one that names nothing of
        ours: then the newest by number is tried first, and a warning says why)."""
        pointer = self.dir / LATEST
        try:
            raw = pointer.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.warnings.append(f"{pointer} is unreadable ({exc.strerror or exc}); ignored")
            return None
        try:
            name = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            name = ""
        if not _CHECKPOINT_NAME.fullmatch(name):
            self.warnings.append(f"{pointer} does not name a checkpoint; ignored")
            return None
        return self.dir / name

    def latest_good(self) -> Checkpoint | None:
        """The newest checkpoint that verifies (newest first: `latest`, then by sequence).

        Each bad one met on the way is described in `self.warnings`.
        """
        candidates = list(reversed(self._existing()))
        named = self._pointed()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
        for path in candidates:
            problem = self.verify(path)
            if problem is None:
                try:
                    return self.load(path)
                except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
                    problem = f"unreadable ({exc})"
            self.warnings.append(
                f"checkpoint {path} is not usable: {problem}; trying the previous one"
            )
        return None
