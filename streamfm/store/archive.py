"""The one file format of streamfm: a zip archive of `meta.json` and one `.npy` per array.

Model files (`model.sfm`) and checkpoints (`ckpt-*/state.zip`) are both such archives, written
and read by this module only. No pickle: any zip tool and `numpy.load` read them. Arrays are
streamed into the archive one at a time (no copy of the whole state is assembled in memory).
`write_atomic` writes to a temporary name, fsyncs and renames, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

META = "meta.json"


def temp_prefix(path: str | os.PathLike) -> str:
    """Prefix of `write_atomic`'s temporary files for `path` (they end in ".tmp")."""
    return f".{Path(path).name}."


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(fileobj)` on a temporary file next to `path`, fsync it and rename it to `path`.

    The file gets the mode any new file would (0666 less the umask), not mkstemp's 0600; a
    symbolic link at `path` is replaced, never written through.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


def write_archive(f: BinaryIO, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write `meta` (JSON-able) and `arrays` (name -> array) as a zip archive into `f`."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr(META, json.dumps(meta, indent=1, sort_keys=True))
        for name, arr in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)


def read_archive(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of an archive written by `write_archive`.

    Untrusted input is checked before memory is committed to it: members must be stored
    uncompressed (as `write_archive` writes them: a compressed member could be a zip bomb), and
    each array's header must describe exactly the bytes its member holds, so nothing larger
    than the file is ever allocated; arrays of Python objects are refused. zip CRCs are checked
    while reading. OSError, zipfile.BadZipFile, KeyError or ValueError when the file is not
    such an archive or is damaged.
    """
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"member {info.filename} is compressed; streamfm archives are written "
                    "uncompressed (refused: it could expand to any size)"
                )
        meta = json.loads(z.read(META))
        arrays = {}
        for info in z.infolist():
            if info.filename.endswith(".npy"):
                with z.open(info) as member:
                    arrays[info.filename[:-4]] = _read_array(member, info)
    if not isinstance(meta, dict):
        raise ValueError(f"{META} is not a JSON object")
    return meta, arrays


def _read_array(member: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray:
    """The .npy array of `member`, read straight into its own memory once its header is
    known to match the member's size."""
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(member)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = fmt.read_array_header_2_0(member)
    else:
        raise ValueError(f"{info.filename}: unknown .npy version {version}")
    if dtype.hasobject:
        raise ValueError(f"{info.filename}: arrays of Python objects are not allowed")
    header = member.tell()
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * dtype.itemsize
    if header + nbytes != info.file_size:
        raise ValueError(
            f"{info.filename}: its header describes {nbytes} bytes of data but the member "
            f"holds {info.file_size - header}"
        )
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = memoryview(array.reshape(-1, order="A")).cast("B") if nbytes else memoryview(b"")
    got = 0
    while got < nbytes:
        n = member.readinto(view[got:])
        if not n:
            raise ValueError(f"{info.filename}: truncated")
        got += n
    return array
