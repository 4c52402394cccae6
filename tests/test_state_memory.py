"""Memory follows the state actually stored: vocabularies hold no Python object per key,
histories grow with the items a key has (not with max_items), and saved states are arrays,
not JSON lists. Sizes here are bytes counted, not timings; benchmarks/bench_state_memory.py
measures peak RSS of whole runs."""

import json
import zipfile

import numpy as np
import pyarrow as pa

from streamfm.features.keyindex import KeyIndex
from streamfm.features.registry import parse_builder
from streamfm.spec import parse_spec
from streamfm.store.trained import TrainedModel
from streamfm.testing import round_trip


def array_bytes(obj) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


def test_a_vocabulary_costs_a_few_bytes_per_key_beside_its_text():
    index = KeyIndex()
    keys = pa.array([f"user{i:07d}" for i in range(100_000)])  # 11 bytes of text each
    for start in range(0, len(keys), 10_000):
        index.lookup_or_add(keys.slice(start, 10_000), start)
    assert len(index) == 100_000 and index.key(12_345) == "user0012345"
    per_key = array_bytes(index) / len(index)
    assert per_key < 11 + 8 + 4 + 4 * 4 * 1.25 + 8  # text, offset, id, table at load >= 1/4
    assert not any(isinstance(v, list) for v in vars(index).values())


def test_implicit_histories_grow_with_the_items_stored():
    builder = parse_builder(
        {"type": "implicit", "key": "user", "items": "item", "max_items": 200}, 0
    ).make()
    users = np.repeat(np.arange(5_000), 2)
    rng = np.random.default_rng(0)
    batch = pa.record_batch(
        {
            "user": pa.array([f"u{u}" for u in rng.permutation(users)]),
            "item": pa.array([f"i{i}" for i in rng.integers(0, 50, len(users))]),
        }
    )
    for start in range(0, batch.num_rows, 1_000):
        builder.build(batch.slice(start, 1_000), training=True)
    histories = builder.arena.nbytes + builder.start.nbytes + builder.cap.nbytes
    histories += builder.counts.nbytes
    # 2 items of a bound of 200 per user: a few dozen bytes, where a matrix of max_items slots
    # per user took 800.
    assert histories / 5_000 < 64


def test_a_keep_latest_history_is_the_same_whatever_the_batches():
    spec = {"type": "implicit", "key": "user", "items": "item", "max_items": 3}
    rng = np.random.default_rng(1)
    batch = pa.record_batch(
        {
            "user": [f"u{u}" for u in rng.integers(0, 40, 3_000)],
            "item": [f"i{i}" for i in rng.integers(0, 500, 3_000)],
        }
    )
    states = []
    for size in (1, 17, 3_000):
        b = parse_builder(spec, 0).make()
        for start in range(0, batch.num_rows, size):
            b.build(batch.slice(start, size), training=True)
        states.append(round_trip(b.state_dict()))
    for s in states[1:]:
        np.testing.assert_array_equal(s["hist_items"], states[0]["hist_items"])
        np.testing.assert_array_equal(s["counts"], states[0]["counts"])


def test_saved_vocabularies_are_arrays_not_json(tmp_path):
    spec = parse_spec(
        {
            "source": {"path": "x.csv"},
            "target": "y",
            "features": [
                {"type": "categorical", "columns": ["user"]},
                {"type": "implicit", "key": "user", "items": "item", "max_items": 20},
            ],
            "model": {"k": 2},
        }
    )
    model = TrainedModel.from_spec(spec)
    n = 20_000
    batch = pa.record_batch(
        {"user": [f"u{i}" for i in range(n)], "item": [f"i{i % 97}" for i in range(n)]}
    )
    model.pipeline.transform(batch, training=True)
    model.learner.params.ensure_features(model.pipeline.space.n_ids)
    model.save(tmp_path / "m.sfm")
    with zipfile.ZipFile(tmp_path / "m.sfm") as z:
        meta = z.read("meta.json")
    assert len(meta) < 20_000, "keys went into meta.json"
    again = TrainedModel.load(tmp_path / "m.sfm")
    assert again.pipeline.feature_name(5) == model.pipeline.feature_name(5) == "user=u5"
    probe = batch.slice(100, 50)
    np.testing.assert_array_equal(again.predict_batch(probe), model.predict_batch(probe))
    assert json.loads(meta)["format_version"] == 3
