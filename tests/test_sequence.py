"""The `sequence` builder against a slow row-by-row reference."""

import numpy as np
import pyarrow as pa
import pytest

from streamfm.errors import SpecError
from streamfm.features.pipeline import FeaturePipeline
from streamfm.features.registry import parse_builder
from streamfm.testing import round_trip as state_round_trip


def events(n=500, n_users=9, n_items=12, seed=0, nulls=True):
    rng = np.random.default_rng(seed)
    users = [f"u{u}" for u in rng.integers(0, n_users, n)]
    items = [f"i{i}" for i in rng.integers(0, n_items, n)]
    if nulls:
        for r in range(0, n, 23):
            users[r] = None
        for r in range(5, n, 31):
            items[r] = None
    return pa.table({"user": users, "item": items})


def reference(table, length, weighting="uniform", decay=None, normalize="sqrt", learn=True):
    """Row by row: the user's last `length` earlier items, most recent first, repeats merged
    (weights summed), normalised; then the row's item is remembered."""
    history: dict[str, list[str]] = {}
    out = []
    for u, i in zip(table["user"].to_pylist(), table["item"].to_pylist(), strict=True):
        if u is None:
            out.append({})
            continue
        recent = history.get(u, [])[-length:][::-1]
        row: dict[str, float] = {}
        for j, x in enumerate(recent):
            w = {"uniform": 1.0, "linear": (length - j) / length, "exponential": (decay or 0) ** j}
            row[x] = row.get(x, 0.0) + w[weighting]
        if row and normalize != "none":
            v = np.array(list(row.values()))
            s = v.sum() if normalize == "mean" else np.sqrt((v**2).sum())
            row = {x: w / s for x, w in row.items()}
        out.append(row)
        if learn and i is not None:
            history.setdefault(u, []).append(i)
    return out


def rows_of(builder, table, size, training=True):
    """Each row as {item name: value}, the stream cut in batches of `size`."""
    out = []
    for start in range(0, table.num_rows, size):
        batch = table.slice(start, size).combine_chunks().to_batches()[0]
        block = builder.build(batch, training=training)
        keys = pa.array(block.keys).to_pylist()
        for a, b in zip(block.indptr[:-1], block.indptr[1:], strict=True):
            out.append(
                {
                    builder.key_name(k): float(v)
                    for k, v in zip(keys[a:b], block.values[a:b], strict=True)
                }
            )
    return out


def make(**kw):
    spec = {"type": "sequence", "key": "user", "items": "item", **kw}
    return parse_builder(spec, 0).make()


def approx_rows(rows):
    return [{k: pytest.approx(v, rel=1e-6) for k, v in r.items()} for r in rows]


@pytest.mark.parametrize(
    "kw",
    [
        {"length": 1},
        {"length": 4},
        {"length": 4, "normalize": "none"},
        {"length": 5, "weighting": "linear", "normalize": "mean"},
        {"length": 6, "weighting": "exponential", "decay": 0.6},
        {"length": 3, "weighting": "exponential", "normalize": "none"},
    ],
)
@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_rows_equal_the_reference(kw, batch_size):
    table = events()
    b = make(**kw)
    got = rows_of(b, table, batch_size)
    ref_kw = {k: v for k, v in kw.items() if k != "length"}
    if kw.get("weighting") == "exponential":
        ref_kw.setdefault("decay", 0.5)
    assert got == approx_rows(reference(table, kw["length"], **ref_kw))


def test_the_current_item_is_added_after_its_row():
    b = make(length=2, normalize="none")
    table = pa.table({"user": ["a", "a", "a", "b", "a"], "item": ["x", "y", "x", "z", "z"]})
    assert rows_of(b, table, 5) == [{}, {"x": 1.0}, {"y": 1.0, "x": 1.0}, {}, {"x": 1.0, "y": 1.0}]


def test_repeats_in_the_window_add_up_and_order_is_most_recent_first():
    b = make(length=3, weighting="linear", normalize="none")
    table = pa.table({"user": ["a"] * 4, "item": ["x", "y", "x", "q"]})
    block_rows = rows_of(b, table, 4)
    assert list(block_rows[3]) == ["x", "y"]
    assert block_rows[3] == {"x": pytest.approx(1 + 1 / 3), "y": pytest.approx(2 / 3)}


def test_training_false_changes_nothing_and_unknown_keys_are_empty():
    table = events(200, nulls=False)
    b = make(length=3)
    rows_of(b, table, 50)
    state = state_round_trip(b.state_dict())
    probe = pa.table({"user": ["u1", "nobody", "u1"], "item": ["i1", "i2", "new"]})
    first = rows_of(b, probe, 3, training=False)
    assert first[1] == {}
    assert first[0] == first[2]  # nothing was appended for u1
    assert rows_of(b, probe, 3, training=False) == first
    again = state_round_trip(b.state_dict())
    for k in ("hist_indptr", "hist_items", "counts"):
        assert np.array_equal(state[k], again[k])


def test_resume_from_state_continues_exactly():
    table = events(600)
    whole = make(length=4, weighting="exponential", decay=0.8)
    want = rows_of(whole, table, 600)
    a = make(length=4, weighting="exponential", decay=0.8)
    got = rows_of(a, table.slice(0, 250), 33)
    b = make(length=4, weighting="exponential", decay=0.8)
    b.load_state_dict(state_round_trip(a.state_dict()))
    got += rows_of(b, table.slice(250), 41)
    assert got == want


def test_memory_is_bounded_per_key():
    table = events(3000, n_users=5, n_items=400, nulls=False)
    b = make(length=7)
    rows_of(b, table, 1000)
    assert b.ring.shape[1] == 7 and b.ring.shape[0] <= 64
    assert len(b.state_dict()["hist_items"]) == 5 * 7


def test_a_state_that_does_not_fit_is_refused_naming_the_builder():
    b = make(length=3)
    rows_of(b, events(100), 100)
    state = state_round_trip(b.state_dict())
    other = make(length=5)
    with pytest.raises(ValueError, match="sequence_user.*'length'"):
        other.load_state_dict(state)
    state["hist_items"][:] = 10_000
    with pytest.raises(ValueError, match="sequence_user.*unknown item"):
        make(length=3).load_state_dict(state)


def test_parameters_are_checked():
    with pytest.raises(SpecError, match="decay"):
        make(weighting="linear", decay=0.5)
    with pytest.raises(SpecError, match="length"):
        make(length=0)
    with pytest.raises(SpecError, match="weighting"):
        make(weighting="quadratic")
    assert make(weighting="exponential").params.decay == 0.5


def test_in_a_pipeline_previous_items_are_their_own_group():
    p = FeaturePipeline.from_specs(
        [
            {"type": "mf"},
            {"type": "sequence", "key": "user", "items": "item", "length": 2, "name": "prev"},
        ]
    )
    table = pa.table({"user": ["a", "a", "a"], "item": ["x", "y", "z"]})
    chunk = p.transform(table.to_batches()[0], training=True)
    names = [p.feature_name(int(i)) for i in chunk.indices]
    assert names == ["user=a", "item=x", "user=a", "item=y", "prev=x"] + [
        "user=a",
        "item=z",
        "prev=y",
        "prev=x",
    ]
