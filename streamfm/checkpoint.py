"""Checkpoints: a directory per checkpoint, written whole or not at all.

    <dir>/ckpt-00000012/state.json      counters, positions, spec, builder and metric states
    <dir>/ckpt-00000012/arrays.npz      parameters, optimiser state, vocabularies, buffers
    <dir>/ckpt-00000012/MANIFEST.json   sha256 and size of both files
    <dir>/latest                        name of the newest complete checkpoint

A checkpoint is written into a temporary directory, every file fsynced, then renamed into place
and `latest` is replaced atomically; a crash at any moment leaves the previous checkpoints intact.
Loading verifies the manifest and falls back to the previous good checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.errors import CheckpointError
from streamfm.persist import fsync_dir, write_atomic

PREFIX = "ckpt-"
STATE, ARRAYS, MANIFEST, LATEST = "state.json", "arrays.npz", "MANIFEST.json", "latest"


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]
    arrays: dict[str, np.ndarray]


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


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Checkpointer:
    """Writes and finds checkpoints in one directory, keeping the newest `keep`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, int(keep))
        self.warnings: list[str] = []

    def _existing(self) -> list[Path]:
        if not self.dir.exists():
            return []
        found = [p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        return sorted(found, key=lambda p: p.name)

    def write(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
        """Write a new checkpoint; returns its directory. On failure the old ones stay as they were."""
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = self._existing()
        seq = int(existing[-1].name[len(PREFIX) :]) + 1 if existing else 1
        final = self.dir / f"{PREFIX}{seq:08d}"
        tmp = self.dir / f".tmp-{final.name}-{os.getpid()}"
        # Half-written checkpoints of a crashed run (one writer per directory) are rubbish.
        for stale in self.dir.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.mkdir()
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
                for name, arr in arrays.items():
                    member = io.BytesIO()
                    np.save(member, np.ascontiguousarray(arr), allow_pickle=False)
                    z.writestr(f"{name}.npy", member.getvalue())
            _write_file(tmp / ARRAYS, buf.getvalue())
            _crash_point(seq, "arrays")
            _write_file(tmp / STATE, json.dumps(state, sort_keys=True).encode())
            manifest = {
                n: {"sha256": _sha256(tmp / n), "bytes": (tmp / n).stat().st_size}
                for n in (STATE, ARRAYS)
            }
            _write_file(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
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
            shutil.rmtree(old, ignore_errors=True)
        return final

    def verify(self, path: Path) -> str | None:
        """None if the checkpoint at `path` is complete and unaltered, else what is wrong."""
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            return f"manifest unreadable ({exc})"
        for name in (STATE, ARRAYS):
            entry = manifest.get(name)
            if entry is None:
                return f"manifest lacks {name}"
            f = path / name
            if not f.exists():
                return f"{name} is missing"
            if f.stat().st_size != entry["bytes"]:
                return (
                    f"{name} has {f.stat().st_size} bytes, expected {entry['bytes']} (truncated?)"
                )
            if _sha256(f) != entry["sha256"]:
                return f"{name} does not match its checksum (altered or corrupted)"
        return None

    def load(self, path: Path) -> Checkpoint:
        state = json.loads((path / STATE).read_text())
        with zipfile.ZipFile(path / ARRAYS) as z:
            arrays = {
                n[:-4]: np.load(io.BytesIO(z.read(n)), allow_pickle=False) for n in z.namelist()
            }
        return Checkpoint(path, state, arrays)

    def latest_good(self) -> Checkpoint | None:
        """The newest checkpoint that verifies (newest first: `latest`, then by sequence).

        Each bad one met on the way is described in `self.warnings`.
        """
        candidates = list(reversed(self._existing()))
        pointer = self.dir / LATEST
        if pointer.exists():
            named = self.dir / pointer.read_text().strip()
            if named in candidates:
                candidates.remove(named)
                candidates.insert(0, named)
        for path in candidates:
            problem = self.verify(path)
            if problem is None:
                try:
                    return self.load(path)
                except (OSError, ValueError, zipfile.BadZipFile) as exc:
                    problem = f"unreadable ({exc})"
            self.warnings.append(
                f"checkpoint {path} is not usable: {problem}; trying the previous one"
            )
        return None
