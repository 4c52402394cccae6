"""numpy <-> Arrow for flat numeric and boolean arrays, without pyarrow importing pandas.

pyarrow's `Array.to_numpy` and `pa.array` import pandas on their first call when it is
installed: ~0.5 s of every command's start-up, for conversions that are buffer views."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Values of a numeric or boolean Arrow array as numpy (1-d, read-only; zero-copy except for
    booleans and several chunks), as `Array.to_numpy(zero_copy_only=False)` gives them; other
    types, and arrays with nulls, go through that method."""
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    dtype = _NUMPY_TYPES.get(values.type.id)
    if dtype is None or values.null_count:
        return values.to_numpy(zero_copy_only=False)
    data = values.buffers()[1]
    n, offset = len(values), values.offset
    if dtype is bool:  # Arrow packs booleans 8 to a byte, least significant bit first
        bits = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        out = np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].view(np.bool_)
        out.flags.writeable = False
        return out
    if n == 0:
        return np.zeros(0, dtype=dtype)
    out = np.frombuffer(data, dtype=dtype, count=n, offset=offset * np.dtype(dtype).itemsize)
    out.flags.writeable = False  # Arrow's buffer: read-only, as pyarrow's own view is
    return out


def from_numpy(values: np.ndarray) -> pa.Array:
    """A 1-d numeric or boolean numpy array as an Arrow array without nulls (zero-copy for
    contiguous numbers); `pa.array(values)` for anything else (lists, text, 2-d)."""
    kind = (
        _ARROW_TYPES.get(values.dtype.str.lstrip("<=|")) if isinstance(values, np.ndarray) else None
    )
    if kind is None or values.ndim != 1:
        return pa.array(values)
    if values.dtype == np.bool_:
        data = np.packbits(values, bitorder="little")
    else:
        data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(data)])


_ARROW_TYPES = {
    "b1": pa.bool_(),
    **{f"i{b // 8}": getattr(pa, f"int{b}")() for b in (8, 16, 32, 64)},
    **{f"u{b // 8}": getattr(pa, f"uint{b}")() for b in (8, 16, 32, 64)},
    "f4": pa.float32(),
    "f8": pa.float64(),
}
_NUMPY_TYPES = {t.id: np.dtype(k) for k, t in _ARROW_TYPES.items() if k != "b1"} | {
    pa.bool_().id: bool
}
