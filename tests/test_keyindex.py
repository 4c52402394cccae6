"""KeyIndex against a plain dict, including sliced arrays, large strings, nulls and growth."""

import numpy as np
import pyarrow as pa
import pytest

from streamfm.features.keyindex import KeyIndex, key_hashes


def reference_ids(chunks):
    seen, out = {}, []
    for chunk in chunks:
        ids = []
        for k in chunk:
            if k is None:
                ids.append(-1)
                continue
            seen.setdefault(k, len(seen))
            ids.append(seen[k])
        out.append(ids)
    return out, seen


@pytest.mark.parametrize("kind", ["str", "large_str", "int"])
def test_lookup_or_add_matches_a_dict(kind):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3_000, 20_000)
    if kind == "int":
        data = pa.array(values, pa.int64())
    else:
        data = pa.array(
            [f"k{v}é" for v in values], pa.large_string() if kind == "large_str" else pa.string()
        )
    mask = rng.random(20_000) < 0.05
    data = pa.array(
        [None if m else x for m, x in zip(mask, data.to_pylist(), strict=True)], data.type
    )
    index = KeyIndex()
    got, chunks = [], []
    start = 0
    for size in rng.integers(1, 900, 100):
        chunk = data.slice(start, int(size))  # sliced arrays: non-zero offsets
        chunks.append(chunk.to_pylist())
        got.append(index.lookup_or_add(chunk, len(index)).tolist())
        start += int(size)
    want, seen = reference_ids(chunks)
    assert got == want
    assert index.keys == list(seen)
    again = KeyIndex.from_keys(index.keys, index.ids)
    probe = data.slice(0, start)
    np.testing.assert_array_equal(
        again.lookup(probe).ids.clip(-1), index.lookup(probe).ids.clip(-1)
    )


def test_ints_and_strings_are_different_keys_and_hashes_are_stable():
    index = KeyIndex()
    index.lookup_or_add(pa.array([3, 4]), 0)
    assert index.lookup(pa.array(["3"])).ids.tolist() == [-1]
    # Pinned values: hashed feature ids (and so saved models) must not change between versions.
    h1, h2, _ = key_hashes(pa.array(["user42"]))
    assert (int(h1[0]), int(h2[0])) == (2530876724416848508, 7155527103644240353)
    h1, h2, _ = key_hashes(pa.array([7]))
    assert (int(h1[0]), int(h2[0])) == (1566965138873340377, 13316795853037826649)
    assert key_hashes(pa.array(["a"]))[0][0] != key_hashes(pa.array(["b"]))[0][0]


def test_unknown_keys_without_growing():
    index = KeyIndex()
    index.lookup_or_add(pa.array(["a", "b"]), 0)
    assert index.lookup_or_add(pa.array(["b", "z", None]), 2, grow=False).tolist() == [1, -1, -1]
    assert len(index) == 2
