"""The feature-builder contract (`streamfm.testing.check_builder`) over every registered builder.

Each built-in builder kind has at least one sample spec here; a kind without one fails
`test_every_builder_kind_has_a_contract_case`, so a new builder cannot skip the contract.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfm.features.registry import _BUILTINS, available_builders, parse_builder
from streamfm.testing import check_builder

N = 150


def sample_table() -> pa.Table:
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in rng.integers(0, 12, N)]
    items = [f"i{i}" for i in rng.integers(0, 9, N)]
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    times = [t0 + timedelta(hours=int(h)) for h in np.cumsum(rng.integers(0, 30, N))]
    age = rng.normal(40, 12, N).round(1).tolist()
    for i in range(0, N, 17):
        age[i] = None
    genres = [["drama", "comedy"][: int(k)] for k in rng.integers(0, 3, N)]
    idx = [rng.choice(20, int(k), replace=False).tolist() for k in rng.integers(1, 4, N)]
    val = [rng.uniform(0.5, 2, len(i)).round(2).tolist() for i in idx]
    return pa.table(
        {
            "user": users,
            "item": items,
            "when": pa.array(times, pa.timestamp("s", tz="UTC")),
            "age": age,
            "genres": genres,
            "tags": ["|".join(g) for g in genres],
            "idx": pa.array(idx, pa.list_(pa.int64())),
            "val": pa.array(val, pa.list_(pa.float32())),
        }
    )


def side_tables(folder) -> dict[str, str]:
    items = pa.table(
        {
            "item": [f"i{i}" for i in range(9)],
            "kind": ["a", "b", "c"] * 3,
            "year": [1990.0 + i for i in range(9)],
        }
    )
    history = pa.table(
        {"user": [f"u{i % 12}" for i in range(40)], "item": [f"i{i % 9}" for i in range(40)]}
    )
    pq.write_table(items, folder / "items.parquet")
    pq.write_table(history, folder / "history.parquet")
    return {"items": str(folder / "items.parquet"), "history": str(folder / "history.parquet")}


def cases(tables: dict[str, str]) -> dict[str, dict]:
    return {
        "categorical": {"type": "categorical", "columns": ["user"]},
        "categorical-cross-hashed": {
            "type": "categorical",
            "columns": ["user", "item"],
            "hash_bits": 6,
            "missing": "category",
        },
        "numeric-standardize": {
            "type": "numeric",
            "columns": ["age"],
            "transform": "standardize",
            "missing": "indicator",
        },
        "numeric-bins": {"type": "numeric", "columns": ["age"], "bins": [20, 40, 60]},
        "set-list": {"type": "set", "column": "genres", "normalize": "sqrt"},
        "set-text": {"type": "set", "column": "tags", "delimiter": "|"},
        "implicit-causal": {"type": "implicit", "key": "user", "items": "item", "max_items": 4},
        "implicit-keep-first": {
            "type": "implicit",
            "key": "item",
            "items": "user",
            "max_items": 3,
            "when_full": "keep_first",
        },
        "sequence": {"type": "sequence", "key": "user", "items": "item", "length": 3},
        "sequence-exponential": {
            "type": "sequence",
            "key": "item",
            "items": "user",
            "length": 4,
            "weighting": "exponential",
            "decay": 0.7,
            "normalize": "mean",
        },
        "sequence-linear": {
            "type": "sequence",
            "key": "user",
            "items": "item",
            "length": 6,
            "weighting": "linear",
            "normalize": "none",
        },
        "implicit-table": {
            "type": "implicit",
            "key": "user",
            "items": "item",
            "source": "table",
            "table": {"path": tables["history"]},
        },
        "time": {
            "type": "time",
            "column": "when",
            "encodings": ["hour", "weekday", "bin"],
            "cross": ["user"],
        },
        "join": {
            "type": "join",
            "key": "item",
            "table": {"path": tables["items"]},
            "features": [
                {"type": "categorical", "columns": ["kind"]},
                {"type": "numeric", "columns": ["year"], "transform": "standardize"},
            ],
        },
        "libfm": {"type": "libfm"},
    }


CASE_NAMES = list(cases({"items": "", "history": ""}))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return side_tables(tmp_path_factory.mktemp("side"))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_builder_contract(case, tables):
    parsed = parse_builder(cases(tables)[case], 0)
    check_builder(parsed.make, sample_table())


def test_every_builder_kind_has_a_contract_case():
    covered = {spec["type"] for spec in cases({"items": "", "history": ""}).values()}
    assert set(_BUILTINS) <= covered
    assert set(available_builders()) - covered <= {"tokens"}  # the example plugin: its own test


def test_bad_values_are_reported_per_row():
    bad = pa.table({"age": ["41", "x", None, "12.5", "?"]})
    parsed = parse_builder({"type": "numeric", "columns": ["age"]}, 0)
    check_builder(parsed.make, bad.slice(0, 1), bad_rows=(bad, [False, True, False, False, True]))


def test_a_broken_builder_is_caught():
    from streamfm.features.base import Block
    from streamfm.features.categorical import CategoricalBuilder

    class Forgetful(CategoricalBuilder):
        """Builds rows that depend on where a batch starts (breaks batch-size invariance)."""

        def build(self, batch, *, training):
            block = super().build(batch, training=training)
            values = block.values.copy()
            values[:1] = 2.0
            return Block(block.indptr, values, keys=block.keys)

    parsed = parse_builder({"type": "categorical", "columns": ["user"]}, 0)
    with pytest.raises(AssertionError, match="batches of 1"):
        check_builder(lambda: Forgetful(parsed.name, parsed.params), sample_table())
