"""numpy <-> Arrow conversions give what pyarrow's own do, and training never imports pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfm.numpy_arrow import from_numpy, to_numpy

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32]
DTYPES += [np.uint64, np.float32, np.float64]


def values_of(dtype, n: int = 29) -> np.ndarray:
    rng = np.random.default_rng(3)
    if dtype is np.bool_:
        return rng.random(n) < 0.5
    return (rng.random(n) * 100).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_numpy_equals_pyarrow_for_slices_and_chunks(dtype):
    arr = pa.array(values_of(dtype))
    for part in (arr, arr.slice(3), arr.slice(5, 11), arr.slice(29), pa.chunked_array([arr])):
        want = part.to_numpy(zero_copy_only=False)
        got = to_numpy(part)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    chunked = pa.chunked_array([arr.slice(0, 7), arr.slice(7)])
    np.testing.assert_array_equal(to_numpy(chunked), chunked.to_numpy())
    assert not to_numpy(arr).flags.writeable  # a view of Arrow's buffer, as pyarrow's is


def test_to_numpy_with_nulls_and_other_types_goes_through_pyarrow():
    np.testing.assert_array_equal(to_numpy(pa.array([1.0, None])), [1.0, np.nan])
    assert list(to_numpy(pa.array(["a", "b"]))) == ["a", "b"]
    assert len(to_numpy(pa.chunked_array([], pa.int64()))) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_numpy_equals_pa_array(dtype):
    values = values_of(dtype)
    for part in (values, values[::3], values[:0]):
        got = from_numpy(part)
        assert got.equals(pa.array(part)), dtype
        assert got.null_count == 0


def test_from_numpy_leaves_lists_and_text_to_pa_array():
    assert from_numpy([1, None]).equals(pa.array([1, None]))
    assert from_numpy(np.array(["x", "y"])).equals(pa.array(np.array(["x", "y"])))


def test_training_and_predicting_do_not_import_pandas(tmp_path):
    """pyarrow's conversions import pandas when it is installed: ~0.5 s of every start-up."""
    pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    path = tmp_path / "events.parquet"
    users = [f"u{u}" for u in rng.integers(0, 50, 500)]
    table = {"user": users, "item": rng.integers(0, 40, 500), "rating": rng.random(500) * 4 + 1}
    pq.write_table(pa.table(table), path)
    spec = {
        "source": {"path": str(path)},
        "target": "rating",
        "features": [
            {"type": "categorical", "columns": ["user"]},
            {"type": "categorical", "columns": ["item"]},
        ],
        "model": {"k": 4},
        "learner": {"epochs": 2},
        "output": {"dir": str(tmp_path / "run")},
    }
    script = f"""
import sys
import pyarrow.parquet as pq
import streamfm
from streamfm.spec import parse_spec
result = streamfm.train(parse_spec({spec!r}))
streamfm.load_model(result.model_path).predict_table(pq.ParquetFile({str(path)!r}).read())
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
