"""The training rows of the coordinate learners (ALS, MCMC) on disk: the CSR appended during the
first pass, its transposed copy (CSC, built once), and per-row arrays as memory-mapped files.

ALS and MCMC sweep over columns (all rows of one feature), so they need the whole training set;
`ColumnStore` keeps it in files of the run's cache folder, so that anonymous memory stays the
model plus one chunk whatever the row count (the operating system pages the files in and out).

    <folder>/indptr.i64    (n+1)  row pointers         \\
    <folder>/indices.i32   (nnz)  feature ids           |  appended chunk by chunk in the first
    <folder>/values.f32    (nnz)  values                |  pass (duplicate ids of a row summed)
    <folder>/y.f64         (n)    targets              /
    <folder>/col_ptr.i64   (c+1)  column pointers      \\
    <folder>/row_index.i32 (nnz)  rows, ascending       |  the transposed copy, built by
    <folder>/col_values.f32 (nnz)                       /   `finalize` (.i64 rows past 2^31)
    <folder>/e.f64, q.f64  (n)    scratch of the sweeps (residuals, factor sums): not state
    <folder>/holdout_*.bin        `HoldoutSums`: per holdout row sums of sampled predictions

Every file the state records is verified before use when a run is resumed: its size and the
sha256 of its recorded bytes (`CheckpointError` naming the file otherwise). Appended files may be
longer than the checkpoint recorded (rows appended after it): they are cut back, as the chunk
cache does. Without a folder (estimators, tests) the same arrays live in memory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from streamfm.csr import CSRChunk
from streamfm.errors import CheckpointError

APPENDED = {"indptr": np.int64, "indices": np.int32, "values": np.float32, "y": np.float64}
_SUFFIX = {np.dtype(np.int64): "i64", np.dtype(np.int32): "i32", np.dtype(np.float32): "f32"}
_SUFFIX[np.dtype(np.float64)] = "f64"
_BLOCK = 1 << 22  # bytes read at a time when hashing


@njit(cache=True, nogil=True)
def _merge_duplicates(indptr, indices, values, mark, slot, out_indices, out_values, out_ptr):
    """Sum repeated feature ids within each row (first occurrence keeps its place).

    mark, slot: int64 scratch of size max id + 1, mark filled with -1. Returns the new nnz."""
    w = 0
    out_ptr[0] = 0
    for r in range(indptr.shape[0] - 1):
        for nz in range(indptr[r], indptr[r + 1]):
            j = indices[nz]
            if mark[j] == r:
                out_values[slot[j]] += values[nz]
            else:
                mark[j] = r
                slot[j] = w
                out_indices[w] = j
                out_values[w] = values[nz]
                w += 1
        out_ptr[r + 1] = w
    return w


@njit(cache=True, nogil=True)
def _count_columns(indices, counts):
    """counts[j + 1] += 1 for every non-zero of feature j (counts: int64, c + 1, zeros)."""
    for nz in range(indices.shape[0]):
        counts[np.int64(indices[nz]) + 1] += 1


@njit(cache=True, nogil=True)
def _fill_columns(indptr, indices, values, next_pos, row_index, col_values):
    """Scatter the CSR rows, in row order, into the CSC (next_pos: each column's next slot)."""
    for r in range(indptr.shape[0] - 1):
        for nz in range(indptr[r], indptr[r + 1]):
            j = np.int64(indices[nz])
            p = next_pos[j]
            row_index[p] = r
            col_values[p] = values[nz]
            next_pos[j] = p + 1


def canonical_rows(chunk: CSRChunk) -> CSRChunk:
    """The chunk with repeated feature ids of a row summed into one non-zero (the sweeps need
    each (row, feature) at most once); the chunk itself when there are none."""
    if chunk.nnz == 0:
        return chunk
    top = int(chunk.indices.max()) + 1
    mark = np.full(top, -1, dtype=np.int64)
    slot = np.empty(top, dtype=np.int64)
    indices = np.empty_like(chunk.indices)
    values = np.empty_like(chunk.values)
    indptr = np.empty_like(chunk.indptr)
    nnz = _merge_duplicates(
        chunk.indptr, chunk.indices, chunk.values, mark, slot, indices, values, indptr
    )
    if nnz == chunk.nnz:
        return chunk
    return CSRChunk(indptr, indices[:nnz], values[:nnz])


def _file_digest(path: Path, n_bytes: int) -> tuple[str, Any]:
    """sha256 of the first n_bytes of path, and the hash object (to go on appending)."""
    h = hashlib.sha256()
    left = n_bytes
    with open(path, "rb") as f:
        while left > 0:
            block = f.read(min(_BLOCK, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest(), h


def _map(path: Path, dtype, n: int, mode: str = "r") -> np.ndarray:
    """A memory map of n values of dtype in path as a plain ndarray (one compiled signature for
    the kernels); an empty array for n = 0 (an empty file cannot be mapped)."""
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode=mode, shape=(n,)))


def _fsync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


class ColumnStore:
    """The training rows of one run: CSR appended chunk by chunk, then a CSC copy and the per-row
    scratch arrays (see the module docstring). `folder` None keeps everything in memory."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.n_rows = 0
        self.nnz = 0
        self.n_cols = 0
        self.finalized = False
        self.row_dtype = np.dtype(np.int32)
        self._files: dict[str, Any] = {}  # appending: open files
        self._hash: dict[str, Any] = {}  # appending: running sha256 of each file
        self._digests: dict[str, str] = {}  # finalized: sha256 of the CSC files
        self._memory: dict[str, list[np.ndarray]] = {k: [] for k in APPENDED}
        self._arrays: dict[str, np.ndarray] = {}  # finalized: the arrays the sweeps take
        self._pending: dict[str, Any] | None = None  # a checkpoint's files, verified at first use

    # --- paths
    def path(self, name: str) -> Path:
        """The file holding array `name` (e.g. "indices")."""
        assert self.folder is not None
        dtype = APPENDED.get(name) or {"col_ptr": np.int64, "col_values": np.float32}.get(name)
        if name == "row_index":
            dtype = self.row_dtype
        if name in ("e", "q"):
            dtype = np.float64
        return self.folder / f"{name}.{_SUFFIX[np.dtype(dtype)]}"

    # --- the first pass
    def append(self, chunk: CSRChunk, y: np.ndarray) -> None:
        """Add the chunk's rows (ids must be >= 0; repeated ids of a row are summed) and targets."""
        self._verify_pending()
        if self.finalized:
            raise RuntimeError("the training rows are complete: no rows can be added")
        chunk = canonical_rows(chunk)
        parts = {
            "indptr": np.asarray(chunk.indptr[1:], dtype=np.int64) + self.nnz,
            "indices": np.asarray(chunk.indices, dtype=np.int32),
            "values": np.asarray(chunk.values, dtype=np.float32),
            "y": np.asarray(y, dtype=np.float64),
        }
        if self.folder is None:
            for name, a in parts.items():
                self._memory[name].append(a)
        else:
            self._open_for_append()
            for name, a in parts.items():
                data = a.tobytes()
                self._files[name].write(data)
                self._hash[name].update(data)
        self.n_rows += chunk.n_rows
        self.nnz += chunk.nnz

    def _open_for_append(self) -> None:
        if self._files:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = self.n_rows == 0 and not self._hash
        for name in APPENDED:
            path = self.path(name)
            if fresh:
                f = open(path, "wb")  # noqa: SIM115 - kept open while the first pass runs
                self._hash[name] = hashlib.sha256()
                if name == "indptr":
                    zero = np.zeros(1, dtype=np.int64).tobytes()
                    f.write(zero)
                    self._hash[name].update(zero)
            else:  # resumed: load_state_dict verified the prefix and cut the rest
                f = open(path, "r+b")  # noqa: SIM115
                f.seek(0, os.SEEK_END)
            self._files[name] = f

    def _appended_bytes(self) -> dict[str, int]:
        n, nnz = self.n_rows, self.nnz
        return {"indptr": 8 * (n + 1), "indices": 4 * nnz, "values": 4 * nnz, "y": 8 * n}

    def sync(self) -> None:
        """Make every appended byte durable."""
        for f in self._files.values():
            _fsync(f)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    # --- the transposed copy
    def finalize(self, n_features: int) -> None:
        """End of the first pass: map the CSR, build the CSC over columns [0, n_features) and
        the scratch arrays e, q. Ids must be < n_features."""
        self._verify_pending()
        if self.finalized:
            return
        self.n_cols = int(n_features)
        self.row_dtype = np.dtype(np.int32 if self.n_rows < 2**31 - 1 else np.int64)
        csr = self._csr_arrays()
        counts = np.zeros(self.n_cols + 1, dtype=np.int64)
        if self.nnz and int(csr["indices"].max()) >= self.n_cols:
            raise ValueError("a training row holds a feature id beyond the parameters")
        _count_columns(csr["indices"], counts)
        col_ptr = np.cumsum(counts)
        next_pos = col_ptr[:-1].copy()
        if self.folder is None:
            row_index = np.empty(self.nnz, dtype=self.row_dtype)
            col_values = np.empty(self.nnz, dtype=np.float32)
        else:
            col_ptr.tofile(self.path("col_ptr"))
            row_index = _map(self.path("row_index"), self.row_dtype, self.nnz, "w+")
            col_values = _map(self.path("col_values"), np.float32, self.nnz, "w+")
        _fill_columns(csr["indptr"], csr["indices"], csr["values"], next_pos, row_index, col_values)
        if self.folder is None:
            self._arrays = {"col_ptr": col_ptr, "row_index": row_index, "col_values": col_values}
        else:
            del row_index, col_values
            for name in ("col_ptr", "row_index", "col_values"):
                with open(self.path(name), "rb+") as f:
                    os.fsync(f.fileno())
                self._digests[name] = _file_digest(self.path(name), self._size(name))[0]
        self.finalized = True
        self._open_arrays(csr)

    def _size(self, name: str) -> int:
        return {
            **self._appended_bytes(),
            "col_ptr": 8 * (self.n_cols + 1),
            "row_index": self.row_dtype.itemsize * self.nnz,
            "col_values": 4 * self.nnz,
        }[name]

    def _csr_arrays(self) -> dict[str, np.ndarray]:
        if self.folder is None:
            out = {}
            for name, dtype in APPENDED.items():
                parts = self._memory[name]
                if name == "indptr":
                    parts = [np.zeros(1, dtype=np.int64), *parts]
                out[name] = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
                self._memory[name] = []
            return out
        self.sync()
        self.close()
        n, nnz = self.n_rows, self.nnz
        sizes = {"indptr": n + 1, "indices": nnz, "values": nnz, "y": n}
        return {name: _map(self.path(name), APPENDED[name], sizes[name]) for name in APPENDED}

    def _open_arrays(self, csr: dict[str, np.ndarray] | None = None) -> None:
        """The arrays of a finalized store: CSR and targets, CSC, scratch e and q."""
        arrays = dict(csr if csr is not None else self._csr_arrays())
        if self.folder is None:
            arrays.update({k: self._arrays[k] for k in ("col_ptr", "row_index", "col_values")})
            arrays["e"] = np.zeros(self.n_rows)
            arrays["q"] = np.zeros(self.n_rows)
        else:
            arrays["col_ptr"] = _map(self.path("col_ptr"), np.int64, self.n_cols + 1)
            arrays["row_index"] = _map(self.path("row_index"), self.row_dtype, self.nnz)
            arrays["col_values"] = _map(self.path("col_values"), np.float32, self.nnz)
            for name in ("e", "q"):
                arrays[name] = _map(self.path(name), np.float64, self.n_rows, "w+")
        self._arrays = arrays

    def arrays(self) -> dict[str, np.ndarray]:
        """After `finalize`: indptr, indices, values, y, col_ptr, row_index, col_values, e, q."""
        self._verify_pending()
        if not self.finalized:
            raise RuntimeError("the training rows are not complete yet (finalize first)")
        return self._arrays

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """Counts and, per file, its size and sha256 (appended files made durable first)."""
        if self._pending is not None:  # restored and not used since: the same state
            return self._pending
        files: dict[str, dict[str, Any]] = {}
        if self.folder is not None:
            if not self.finalized:
                self.sync()
                sizes = self._appended_bytes()
                for name in APPENDED:
                    h = self._hash.get(name)
                    digest = h.copy().hexdigest() if h is not None else None
                    files[name] = {"bytes": sizes[name], "sha256": digest}
            else:
                for name in (*APPENDED, "col_ptr", "row_index", "col_values"):
                    files[name] = {"bytes": self._size(name), "sha256": self._digest(name)}
        return {
            "in_memory": self.folder is None,
            "rows": self.n_rows,
            "nnz": self.nnz,
            "n_cols": self.n_cols,
            "finalized": self.finalized,
            "row_dtype": self.row_dtype.name,
            "files": files,
        }

    def _digest(self, name: str) -> str:
        if name not in self._digests:  # appended files: their digest at the end of the pass
            self._digests[name] = self._hash[name].hexdigest()
        return self._digests[name]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint. The recorded files are verified (size, sha256; appended
        files cut back to the recorded size) and mapped when they are first used, so a complete
        run, whose files are gone, resumes to "nothing to do". CheckpointError names a bad file."""
        if state.get("in_memory") or self.folder is None:
            if int(state["rows"]) or self.n_rows:
                raise CheckpointError(
                    "the training rows of this learner were kept in memory: they cannot be "
                    "restored from a checkpoint (give the learner a storage folder)"
                )
            return
        self.close()
        self._arrays = {}
        self.n_rows, self.nnz = int(state["rows"]), int(state["nnz"])
        self.finalized = bool(state["finalized"])
        self._pending = state

    def _verify_pending(self) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        self._arrays = {}
        self.n_rows, self.nnz = int(state["rows"]), int(state["nnz"])
        self.n_cols = int(state["n_cols"])
        self.finalized = bool(state["finalized"])
        self.row_dtype = np.dtype(state["row_dtype"])
        self._hash, self._digests = {}, {}
        if self.n_rows == 0 and not self.finalized:
            return  # nothing was appended yet: the first chunk starts the files
        for name, rec in state["files"].items():
            path = self.path(name)
            size = int(rec["bytes"])
            what = (
                "the run's training rows"
                if name in APPENDED
                else "the transposed training rows (columns)"
            )
            advice = (
                f"the cache folder {self.folder} was changed or damaged since the checkpoint: "
                "start the run afresh (a new checkpoint.dir, or delete this one)"
            )
            if not path.exists():
                raise CheckpointError(f"{path} ({what}) is missing; {advice}")
            actual = path.stat().st_size
            if actual < size or (actual != size and (self.finalized or name not in APPENDED)):
                raise CheckpointError(
                    f"{path} ({what}) has {actual:,} bytes, the checkpoint recorded {size:,}; "
                    f"{advice}"
                )
            if actual > size:  # rows appended after the checkpoint: forget them
                with open(path, "r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
            digest, h = _file_digest(path, size)
            if digest != rec["sha256"]:
                raise CheckpointError(
                    f"{path} ({what}) does not match its checksum in the checkpoint (sha256 "
                    f"{digest[:12]}..., recorded {str(rec['sha256'])[:12]}...); {advice}"
                )
            if self.finalized:
                self._digests[name] = digest
            else:
                self._hash[name] = h
        if self.finalized:
            self._open_arrays()

    def remove(self) -> None:
        """Delete the files (the run is complete)."""
        self.close()
        self._arrays = {}
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)


class HoldoutSums:
    """Per holdout row: the sum of the sampled predictions, how many samples it holds, and the
    sample last added (-1: none). Grows with the holdout rows seen; memory-mapped files in
    `folder` (or in memory). The arrays are part of the state: a checkpoint copies them."""

    NAMES = {"sum": np.float64, "count": np.int32, "last": np.int32}

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.n = 0  # rows in use
        self.arrays: dict[str, np.ndarray] = {
            k: np.zeros(0, dtype=d) for k, d in self.NAMES.items()
        }
        self._pending: dict[str, Any] | None = None  # restored, written to files at first use

    def ensure(self, n_rows: int) -> None:
        """Room for rows [0, n_rows) (new rows: sum 0, count 0, last -1)."""
        if self._pending is not None:
            state, self._pending = self._pending, None
            n = int(state["rows"])
            self.ensure(n)
            for name in self.NAMES:
                self.arrays[name][:n] = state[name]
        if n_rows <= self.n:
            return
        capacity = len(self.arrays["sum"])
        if n_rows > capacity:
            new_cap = max(n_rows, 2 * capacity, 1024)
            grown = {}
            for name, dtype in self.NAMES.items():
                fill = -1 if name == "last" else 0
                if self.folder is None:
                    a = np.full(new_cap, fill, dtype=dtype)
                else:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    path = self.folder / f"holdout_{name}.bin"
                    with open(path, "ab") as f:
                        f.truncate(new_cap * np.dtype(dtype).itemsize)
                    a = _map(path, dtype, new_cap, "r+")
                    a[capacity:] = fill
                a[:capacity] = self.arrays[name][:capacity]
                grown[name] = a
            self.arrays = grown
        self.n = n_rows

    def reset(self) -> None:
        self.arrays["sum"][: self.n] = 0.0
        self.arrays["count"][: self.n] = 0
        self.arrays["last"][: self.n] = -1

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            return self._pending
        return {"rows": self.n, **{k: a[: self.n] for k, a in self.arrays.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sums (written to the files when next used)."""
        self.n = 0
        self.arrays = {k: np.zeros(0, dtype=d) for k, d in self.NAMES.items()}
        self._pending = {
            "rows": int(state["rows"]),
            **{k: np.array(state[k], dtype=d) for k, d in self.NAMES.items()},
        }

    def remove(self) -> None:
        self.arrays = {k: np.zeros(0, dtype=d) for k, d in self.NAMES.items()}
        self.n = 0
        self._pending = None
        if self.folder is not None:
            for name in self.NAMES:
                (self.folder / f"holdout_{name}.bin").unlink(missing_ok=True)
