"""One trainer per directory: an exclusive lock on a file in each directory a run writes to
(output, checkpoints, chunk cache), and the removal of temporary files of ours that a killed
run left behind (safe once the lock is held: no other trainer is writing them)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from streamfm.errors import OutputError
from streamfm.store.archive import temp_prefix

LOCK_NAME = ".streamfm.lock"


class DirectoryLock:
    """An exclusive `fcntl.flock` on `<directory>/.streamfm.lock` holding the owner's pid;
    released by `release` or when the process ends, however it ends."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; OutputError naming the holder's pid if another process has it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            raise OutputError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputError(
                    f"another streamfm train (pid {holder}) is using {self.directory}: two "
                    "trainers would overwrite each other's checkpoints and model; wait for it "
                    "to end or give this run another output.dir / checkpoint.dir"
                ) from None
            raise OutputError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def remove_stale_temp_files(directory: Path, names: list[str]) -> list[Path]:
    """Delete the temporary files `store.archive.write_atomic` makes for each of `names` in
    `directory` (".<name>.XXXXXXXX.tmp") that a killed process left; returns those removed.
    Only names of exactly that form are touched."""
    removed = []
    if not directory.is_dir():
        return removed
    patterns = [re.compile(re.escape(temp_prefix(n)) + r"[a-z0-9_]{8}\.tmp") for n in names]
    for entry in directory.iterdir():
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
