"""Memory hints (`learners.memory_hints`): no effect on values, and in the SGD and BPR kernels'
compiled code."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import streamfm.learners.ranking as ranking
import streamfm.learners.sgd as sgd
from streamfm.datasets import make_implicit_events
from streamfm.learners.memory_hints import hint_read
from streamfm.spec import parse_spec
from streamfm.store.trained import TrainedModel


@numba.njit
def _sum_with_hints(vector, matrix, ahead):
    total = 0.0
    for i in range(matrix.shape[0]):
        hint_read(vector, i + ahead)  # beyond the end too: a hint cannot fault
        hint_read(matrix, i + ahead)
        total += vector[i]
        for f in range(matrix.shape[1]):
            total += matrix[i, f]
    return total


def test_hints_change_no_value_and_reach_the_code():
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(1000).astype(np.float32)
    matrix = rng.standard_normal((1000, 37)).astype(np.float32)  # rows not line-aligned
    before = (vector.copy(), matrix.copy())
    got = _sum_with_hints(vector, matrix, 3)
    want = 0.0
    for i in range(1000):  # the same order of additions
        want += float(vector[i])
        for f in range(37):
            want += float(matrix[i, f])
    assert got == want
    np.testing.assert_array_equal(vector, before[0])
    np.testing.assert_array_equal(matrix, before[1])
    llvm_ir = next(iter(_sum_with_hints.inspect_llvm().values()))
    assert "llvm.prefetch" in llvm_ir


@pytest.mark.parametrize("features", ["mf", "csr"])
def test_bpr_kernels_hint_the_rows_of_later_events(features):
    """The compiled BPR kernels (MF layout and CSR) hold the hints: a kernel without them is
    bit for bit the same (tests/test_ranking_mf.py), only slower (benchmarks/bench_bpr.py)."""
    events, _ = make_implicit_events(n_users=30, n_items=20, events_per_user=10, seed=1)
    builders = [
        {"type": "categorical", "columns": ["user"], "name": "user"},
        {"type": "categorical", "columns": ["item"], "name": "item"},
    ]
    if features == "csr":
        builders.append({"type": "categorical", "columns": ["user", "item"], "name": "cross"})
    spec = {
        "source": {"path": "unused.parquet"},
        "task": "ranking",
        "features": builders,
        "ranking": {"item": "item", "negatives": {"per_positive": 2}},
        "model": {"k": 4, "seed": 0},
        "output": {"dir": "unused"},
    }
    model = TrainedModel.from_spec(parse_spec(spec))
    chunk = model.pipeline.transform(events, training=True)
    model.sync_features()
    model.learner.learn(chunk, np.ones(chunk.n_rows))
    assert model.learner.last_layout == features
    assert _holds_hints(ranking.sgd_bpr_mf if features == "mf" else ranking.sgd_bpr)


def _holds_hints(kernel) -> bool:
    """Whether the compiled code of `kernel` (its first signature) has a prefetch."""
    signature = kernel.signatures[0]
    # a cached kernel keeps no IR: compile its source again, uncached, to read the IR
    fresh = numba.njit(nogil=True, error_model="numpy")(kernel.py_func)
    fresh.compile(signature)
    return "llvm.prefetch" in fresh.inspect_llvm(signature)


def test_sgd_kernel_hints_the_rows_of_later_cases():
    """The SGD kernels hold the hints (one compiled layout is read: the fixed-width and CSR
    kernels are the same `_layout_pass`); without them they give the same numbers, only slower
    (benchmarks/bench_kernels.py)."""
    rng = np.random.default_rng(0)
    events, _ = make_implicit_events(n_users=30, n_items=20, events_per_user=10, seed=1)
    events = events.append_column("rating", [rng.integers(1, 6, events.num_rows).astype(float)])
    spec = {
        "source": {"path": "unused.parquet"},
        "target": "rating",
        "features": [
            {"type": "categorical", "columns": ["user"], "name": "user"},
            {"type": "categorical", "columns": ["item"], "name": "item"},
        ],
        "model": {"k": 4, "seed": 0},
        "output": {"dir": "unused"},
    }
    model = TrainedModel.from_spec(parse_spec(spec))
    chunk = model.pipeline.transform(events, training=True)
    model.sync_features()
    model.learner.learn(chunk, events.column("rating").to_numpy())
    assert model.learner.last_layout == "fixed"
    assert _holds_hints(sgd.FIXED_KERNELS["sgd", "squared"])
