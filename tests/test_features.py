"""Feature builders and the FeatureSpace against slow per-row references."""

import numpy as np
import pyarrow as pa
import pytest

from streamfm.errors import DataError, SpecError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.features.registry import make_builder
from streamfm.features.space import UNSEEN_ID
from streamfm.testing import round_trip


def pipeline(*specs):
    return FeaturePipeline.from_specs(list(specs))


def rows_of(chunk):
    """The chunk as a list of {id: value} dicts (one per row)."""
    return [
        dict(zip(chunk.indices[a:b].tolist(), chunk.values[a:b].tolist(), strict=True))
        for a, b in zip(chunk.indptr[:-1], chunk.indptr[1:], strict=True)
    ]


def batches(table, size):
    return [
        table.slice(i, size).combine_chunks().to_batches()[0]
        for i in range(0, table.num_rows, size)
    ]


def events(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user": pa.array([f"u{u}" for u in rng.integers(0, 30, n)]),
            "item": pa.array(rng.integers(0, 50, n), pa.int64()),
            "age": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 12, n))),
        }
    )


def test_ids_follow_first_sight_order_whatever_the_batch_size():
    table = events()
    specs = (
        {"type": "categorical", "columns": ["user"]},
        {"type": "categorical", "columns": ["item"]},
    )
    a, b = pipeline(*specs), pipeline(*specs)
    whole = rows_of(a.transform(table.to_batches()[0], training=True))
    parts = sum((rows_of(b.transform(x, training=True)) for x in batches(table, 7)), [])
    assert whole == parts
    # Reference: a row-by-row reader gives ids in order of first sight, user before item.
    ref, seen = [], {}
    for u, i in zip(table["user"].to_pylist(), table["item"].to_pylist(), strict=True):
        row = {}
        for key in (("user", u), ("item", str(i))):
            seen.setdefault(key, len(seen))
            row[seen[key]] = 1.0
        ref.append(row)
    assert whole == ref
    assert a.feature_name(0) == f"user={table['user'][0].as_py()}"


def test_unseen_values_contribute_nothing_at_predict_time():
    p = pipeline({"type": "categorical", "columns": ["user"]})
    p.transform(pa.record_batch({"user": ["a", "b"]}), training=True)
    chunk = p.transform(pa.record_batch({"user": ["b", "zzz"]}), training=False)
    assert rows_of(chunk) == [{1: 1.0}, {UNSEEN_ID: 1.0}]
    assert p.space.n_ids == 2


def test_categorical_cross_hash_and_missing():
    batch = pa.record_batch({"u": ["a", "a", None, "b"], "d": [1, 2, 1, 1]})
    cross = pipeline({"type": "categorical", "columns": ["u", "d"]})
    got = rows_of(cross.transform(batch, training=True))
    assert got == [{0: 1.0}, {1: 1.0}, {}, {2: 1.0}]
    assert cross.feature_name(1) == "u_x_d=a|2"
    missing = pipeline({"type": "categorical", "columns": ["u"], "missing": "category"})
    assert rows_of(missing.transform(batch, training=True)) == [
        {0: 1.0},
        {0: 1.0},
        {1: 1.0},
        {2: 1.0},
    ]
    hashed = pipeline({"type": "categorical", "columns": ["u"], "hash_bits": 4})
    rows = rows_of(hashed.transform(batch, training=True))
    assert rows[0] == rows[1] and rows[2] == {} and all(0 <= k < 16 for r in rows for k in r)
    assert hashed.space.n_ids == 16


def test_categorical_keys_agree_across_column_types():
    p = pipeline({"type": "categorical", "columns": ["x"]})
    a = rows_of(p.transform(pa.record_batch({"x": pa.array([3, 4], pa.int32())}), training=True))
    b = rows_of(p.transform(pa.record_batch({"x": ["3", "4"]}), training=False))
    c = rows_of(p.transform(pa.record_batch({"x": [3.0, 4.0]}), training=False))
    assert a == b == c


def standardize_reference(x):
    """Per row: (x - mean) / std over the non-missing values seen so far, this row included."""
    out, seen = [], []
    for v in x:
        if np.isnan(v):
            out.append(None)
            continue
        seen.append(v)
        mean, std = np.mean(seen), np.std(seen)
        out.append((v - mean) / std if std > 0 else 0.0)
    return out


def test_numeric_standardize_is_causal_and_batch_independent():
    table = events(300, seed=1)
    spec = {
        "type": "numeric",
        "columns": ["age"],
        "transform": "standardize",
        "missing": "indicator",
    }
    p = pipeline(spec)
    got = sum((rows_of(p.transform(b, training=True)) for b in batches(table, 13)), [])
    ref = standardize_reference(table["age"].to_numpy(zero_copy_only=False))
    for row, want in zip(got, ref, strict=True):
        if want is None:
            assert row == {1: 1.0}  # the missing indicator
        elif want == 0.0:
            assert row == {}
        else:
            assert row[0] == pytest.approx(want, rel=1e-5)
    # Predicting uses the frozen statistics of all training rows.
    x = table["age"].to_numpy(zero_copy_only=False)
    mean, std = np.nanmean(x), np.nanstd(x)
    frozen = rows_of(p.transform(pa.record_batch({"age": [50.0]}), training=False))
    assert frozen[0][0] == pytest.approx((50 - mean) / std, rel=1e-5)
    # State round trip.
    q = pipeline(spec)
    q.load_state_dict(round_trip(p.state_dict()))
    assert rows_of(q.transform(pa.record_batch({"age": [50.0]}), training=False)) == frozen


def test_numeric_transforms_and_missing_policies():
    batch = pa.record_batch({"x": [1.0, -3.0, None, 1000.0]})
    log = pipeline({"type": "numeric", "columns": ["x"], "transform": "log1p", "clip": [None, 100]})
    got = rows_of(log.transform(batch, training=True))
    assert got[0][0] == pytest.approx(np.log1p(1.0))
    assert got[1][0] == pytest.approx(-np.log1p(3.0))
    assert got[2] == {}
    assert got[3][0] == pytest.approx(np.log1p(100.0))
    strict = pipeline({"type": "numeric", "columns": ["x"], "missing": "error"})
    with pytest.raises(DataError, match=r"row 3, column 'x'"):
        strict.transform(batch, training=True)
    text = pipeline({"type": "numeric", "columns": ["x"]})
    with pytest.raises(DataError, match="not a number"):
        text.transform(pa.record_batch({"x": ["1", "abc"]}), training=True)


def test_libfm_builder_maps_file_indices_to_compact_ids():
    idx = pa.array([[10, 99999], [], [10]], pa.list_(pa.int64()))
    val = pa.array([[1.0, 0.5], [], [2.0]], pa.list_(pa.float32()))
    p = pipeline({"type": "libfm"})
    got = rows_of(p.transform(pa.record_batch({"idx": idx, "val": val}), training=True))
    assert got == [{0: 1.0, 1: 0.5}, {}, {0: 2.0}]


def test_missing_column_names_the_builder():
    p = pipeline({"type": "categorical", "columns": ["user"], "name": "who"})
    with pytest.raises(DataError, match="builder 'who' needs column 'user'.*columns: item"):
        p.transform(pa.record_batch({"item": [1]}), training=True)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "categorical"},
            r"features\[0\] \(categorical 'categorical'\): columns: required",
        ),
        (
            {"type": "categorical", "columns": ["a"], "hash_bit": 3},
            "hash_bit: unknown key.*hash_bits",
        ),
        ({"type": "numeric", "columns": ["a"], "transform": "sqrt"}, "transform: must be one of"),
        ({"type": "nope"}, "unknown feature builder type 'nope'"),
        ({"type": "os:path"}, "not a FeatureBuilder"),
        ({"columns": ["a"]}, "missing key 'type'"),
    ],
)
def test_bad_builder_parameters_name_the_builder(spec, message):
    with pytest.raises(SpecError, match=message):
        make_builder(spec, 0)


def test_builder_names_must_be_unique():
    with pytest.raises(SpecError, match="unique"):
        pipeline(
            {"type": "categorical", "columns": ["a"]}, {"type": "categorical", "columns": ["a"]}
        )
