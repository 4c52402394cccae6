"""Saved models: one zip file holding `meta.json` and one `.npy` per array (no pickle).

The file is written to a temporary name, fsynced and renamed, so a reader never sees half a model.
It can be read with any zip tool and `numpy.load`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.errors import CheckpointError

FORMAT = "streamfm-model"
FORMAT_VERSION = 1


def write_atomic(path: str | os.PathLike, write) -> None:
    """Call `write(fileobj)` on a temporary file next to `path`, fsync it and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_arrays(
    path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Write meta (JSON-able dict) and arrays atomically as one zip file at `path`."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("meta.json", json.dumps(meta, indent=1, sort_keys=True))
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
                z.writestr(f"{name}.npy", buf.getvalue())

    try:
        write_atomic(path, write)
    except OSError as exc:
        raise CheckpointError(f"cannot write model file {path}: {exc.strerror or exc}") from exc


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by `save_arrays`; CRCs are checked, so corruption is reported."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json"))
            arrays = {
                name[:-4]: np.load(io.BytesIO(z.read(name)), allow_pickle=False)
                for name in z.namelist()
                if name.endswith(".npy")
            }
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable streamfm model ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a streamfm model (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer streamfm (format version {meta['format_version']}); upgrade"
        )
    return meta, arrays


def load_model(path: str | os.PathLike):
    """Load a model saved by an estimator's `save` (FMRegressor / FMClassifier) or by `streamfm train`."""
    meta, arrays = load_arrays(path)
    kind = meta.get("kind")
    if kind in ("FMRegressor", "FMClassifier"):
        from streamfm import estimators

        return getattr(estimators, kind)._from_saved(meta, arrays)
    if kind == "pipeline":
        from streamfm.trained import TrainedModel

        return TrainedModel._from_saved(meta, arrays, path)
    raise CheckpointError(f"{path}: unknown model kind {kind!r}")
