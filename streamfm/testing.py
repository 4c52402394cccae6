"""Checks for code that plugs into streamfm (feature builders), as scikit-learn and river ship them.

from streamfm.testing import check_builder
check_builder(lambda: MyBuilder("mine", MyBuilder.Params(...)), sample_table)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.features.base import Block, FeatureBuilder
from streamfm.store.state import join_arrays, split_arrays


def round_trip(state: Any) -> Any:
    """`state` as a checkpoint or model file would give it back: arrays split out, the rest
    through JSON, arrays joined back in (copies)."""
    arrays: dict[str, np.ndarray] = {}
    tree = json.loads(json.dumps(split_arrays(state, arrays)))
    return join_arrays(tree, {k: np.array(v) for k, v in arrays.items()})


def check_builder(
    builder_factory: Callable[[], FeatureBuilder],
    sample: pa.Table,
    *,
    batch_sizes: tuple[int, ...] = (1, 3, 64),
    bad_rows: tuple[pa.Table, np.ndarray] | None = None,
) -> None:
    """Check the feature-builder contract on `sample` (a table holding the builder's columns);
    AssertionError (or the builder's own exception) naming the broken rule.

    builder_factory() must return a new builder with fresh state each call. Checked:
    valid Blocks (one row per input row; keys without nulls or ids in the reserved range; finite
    float32 values); a zero-row batch works; the rows and the state reached do not depend on how
    the stream is cut into batches; `training=False` changes no state; the state survives a
    checkpoint-like round trip (`round_trip`) and a fresh builder loaded with it builds the same
    rows; `invalid_rows` gives one boolean per row. With `bad_rows = (table, expected mask)`,
    `invalid_rows` flags exactly the rows of the mask.
    """
    first = builder_factory()
    assert isinstance(first, FeatureBuilder), "the factory must return a FeatureBuilder"
    missing = [c for c in first.columns() if c not in sample.column_names]
    assert not missing, f"the sample lacks the builder's columns {missing}"
    batch = _one_batch(sample)

    # Zero rows, before and after learning.
    for training in (True, False):
        empty = builder_factory().build(batch.slice(0, 0), training=training)
        _check_block(first, empty, 0)

    # The stream cut in batches of any size gives the same rows and the same final state.
    whole = builder_factory()
    want = _check_block(whole, whole.build(batch, training=True), batch.num_rows)
    want_state = round_trip(whole.state_dict())
    for size in batch_sizes:
        b = builder_factory()
        got: list = []
        for start in range(0, batch.num_rows, size):
            part = batch.slice(start, size)
            got += _check_block(b, b.build(part, training=True), part.num_rows)
        assert got == want, f"rows differ when the stream is cut in batches of {size}"
        _assert_same_state(round_trip(b.state_dict()), want_state, f"after batches of {size}")

    # Zero rows once the builder has learnt something (e.g. every row of a batch was bad).
    for training in (True, False):
        _check_block(whole, whole.build(batch.slice(0, 0), training=training), 0)
    _assert_same_state(round_trip(whole.state_dict()), want_state, "after a zero-row batch")

    # training=False freezes the state.
    frozen = whole.build(batch, training=False)
    _assert_same_state(round_trip(whole.state_dict()), want_state, "after training=False")
    want_frozen = _check_block(whole, frozen, batch.num_rows)

    # The state round-trips: a fresh builder loaded with it predicts the same rows.
    fresh = builder_factory()
    fresh.load_state_dict(round_trip(whole.state_dict()))
    got = _check_block(fresh, fresh.build(batch, training=False), batch.num_rows)
    assert got == want_frozen, "a builder loaded with the saved state builds other rows"

    # invalid_rows: one boolean per row, per report.
    tables = [(batch, None)]
    if bad_rows is not None:
        tables.append((_one_batch(bad_rows[0]), np.asarray(bad_rows[1], dtype=bool)))
    for table, expected in tables:
        found = np.zeros(table.num_rows, dtype=bool)
        for mask, column, reason in builder_factory().invalid_rows(table):
            mask = np.asarray(mask)
            assert mask.dtype == bool and mask.shape == (table.num_rows,), (
                "invalid_rows must give one boolean per row"
            )
            assert isinstance(column, str) and isinstance(reason, str) and reason
            found |= mask
        if expected is not None:
            assert found.tolist() == expected.tolist(), (
                f"invalid_rows flags rows {np.flatnonzero(found).tolist()}, "
                f"expected {np.flatnonzero(expected).tolist()}"
            )


def _one_batch(table: pa.Table | pa.RecordBatch) -> pa.RecordBatch:
    if isinstance(table, pa.RecordBatch):
        return table
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _check_block(builder: FeatureBuilder, block: Block, n_rows: int) -> list:
    """The block's rows as [(key or id, value), ...] per row, after checking its shape."""
    assert isinstance(block, Block), "build must return a Block"
    assert block.n_rows == n_rows, f"build gave {block.n_rows} rows for a batch of {n_rows}"
    assert block.indptr[0] == 0 and np.all(np.diff(block.indptr) >= 0), "bad indptr"
    assert block.values.dtype == np.float32 and np.isfinite(block.values).all(), (
        "values must be finite float32"
    )
    if block.keys is not None:
        keys = block.keys if isinstance(block.keys, pa.Array) else pa.array(block.keys)
        assert keys.null_count == 0, "keys must not be null"
        names = keys.to_pylist()
    else:
        ids = np.asarray(block.ids)
        assert ids.size == 0 or (ids.min() >= 0 and ids.max() < builder.reserved()), (
            f"ids must lie in [0, reserved()) = [0, {builder.reserved()})"
        )
        names = ids.tolist()
    values = block.values.tolist()
    return [
        list(zip(names[a:b], values[a:b], strict=True))
        for a, b in zip(block.indptr[:-1], block.indptr[1:], strict=True)
    ]


def _assert_same_state(a: Any, b: Any, when: str, path: str = "state") -> None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), f"{path} {when}"
        assert a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), (
            f"{path} differs {when}"
        )
    elif isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{path} has other keys {when}"
        for k in a:
            _assert_same_state(a[k], b[k], when, f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path} has another length {when}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, when, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path} differs {when}: {a!r} != {b!r}"
