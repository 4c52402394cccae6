"""Arrays that grow in place: the state's large arrays (parameters, vocabularies, histories).

Growing a numpy array copies it: the old and the new array are alive together, so the peak
memory of a growth is the array twice over (for the factors of 10M features, ~300 MB more for
a moment). Large arrays are therefore kept each in an anonymous private memory mapping of its
own, which grows with `mremap` (Linux): the pages stay where they are, nothing is copied, and
the new rows are zero pages that take no memory until written.

Growing in place needs the mapping to have no other users: an array still referenced elsewhere
(a view in a state being written, a buffer handed to Arrow) makes `mmap.resize` refuse, and the
array is then copied as any numpy array would be (so a view never points at freed memory).
Where `mremap` is not available (other systems), every growth is such a copy.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

# Arrays of at least this many bytes get a mapping of their own (smaller ones are ordinary
# arrays: a mapping costs whole pages, and copying them costs little).
MAPPED_BYTES = 1 << 20
_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)


def _nbytes(rows: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
    n = rows * dtype.itemsize
    for d in shape:
        n *= int(d)
    return n


def _mapped(rows: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zeroed array of `rows` rows in a new anonymous mapping (pages taken when written)."""
    mm = mmap.mmap(-1, max(_nbytes(rows, shape, dtype), 1), flags=_FLAGS)
    return _view(mm, rows, shape, dtype)


def _view(mm: mmap.mmap, rows: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    count = _nbytes(rows, shape, dtype) // dtype.itemsize
    return np.frombuffer(mm, dtype=dtype, count=count).reshape((rows, *shape))


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The mapping `array` is the whole of (as `_mapped` made it), else None."""
    base = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer's base
        base = base.obj
    if isinstance(base, mmap.mmap) and array.flags.c_contiguous and array.nbytes == len(base):
        return base
    return None


def empty_rows(rows: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed array of shape (rows, *shape) that `resize_rows` can grow in place."""
    dtype = np.dtype(dtype)
    if _FLAGS and _nbytes(rows, shape, dtype) >= MAPPED_BYTES:
        return _mapped(rows, shape, dtype)
    return np.zeros((rows, *shape), dtype=dtype)


def resize_rows(owner: Any, name: str, rows: int) -> np.ndarray:
    """Make `owner.<name>` an array of `rows` rows (first axis; more than it has), its rows
    kept and the new ones zero; returns it.

    The attribute is let go of before the mapping is grown, so that only other holders of the
    array stop an in-place growth; the new array is set on `owner` before returning.
    """
    array = getattr(owner, name)
    have, shape, dtype = array.shape[0], array.shape[1:], array.dtype
    if rows <= have:
        return array
    mm = _mapping_of(array)
    if mm is not None:
        setattr(owner, name, None)
        del array
        try:
            mm.resize(_nbytes(rows, shape, dtype))
        except (BufferError, OSError, ValueError, SystemError):
            array = _view(mm, have, shape, dtype)  # still in use elsewhere: copy it
        else:
            out = _view(mm, rows, shape, dtype)
            setattr(owner, name, out)
            return out
    out = empty_rows(rows, shape, dtype)
    out[:have] = array
    setattr(owner, name, None)
    del array
    setattr(owner, name, out)
    return out


def grow_attribute(owner: Any, name: str, rows: int) -> np.ndarray:
    """Make the array `owner.<name>` hold at least `rows` rows (first axis), content kept,
    new rows zero.

    Capacity grows by a quarter at a time: unused capacity is address space (and memory when
    a growth has to copy), so growth is kept small rather than rare (copying costs O(rows) in
    all, like a doubling's, only 4x more; growing in place copies nothing).
    """
    array = getattr(owner, name)
    have = array.shape[0]
    if rows <= have:
        return array
    del array
    return resize_rows(owner, name, max(rows, have + have // 4, 64))
