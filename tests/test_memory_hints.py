"""Memory hints (`learners.memory_hints`): no effect on values, and in the SGD and BPR kernels'
compiled code."""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest
from reference import naive_fm

import streamfm.learners.ranking as ranking
import streamfm.learners.sgd as sgd
from streamfm.datasets import make_implicit_events
from streamfm.learners import coordinate
from streamfm.learners.memory_hints import hint_read
from streamfm.learners.scoring import predict_csr
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
    assert _holds_hints(ranking.sgd_bpr_mf_uniform if features == "mf" else ranking.sgd_bpr)


def _holds_hints(kernel) -> bool:
    """Whether the compiled code of `kernel` (its first signature) has a prefetch."""
    signature = kernel.signatures[0]
    with warnings.catch_warnings():
        # loaded from numba's cache, the kernel keeps no IR: numba warns and returns nothing
        warnings.filterwarnings("error", "Inspection disabled", UserWarning)
        try:  # compiled in this process (numba's cache was cold): its IR is at hand
            return "llvm.prefetch" in kernel.inspect_llvm(signature)
        except UserWarning:
            pass
    # compile its source again, uncached, to read the IR (40 s for a BPR kernel here)
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


def test_prediction_kernels_hint_the_rows_of_later_rows():
    """predict_csr (SGD learners) and predict_rows / residuals (ALS, MCMC) hold the hints, and
    predict what the naive FM predicts."""
    rng = np.random.default_rng(2)
    n, n_features, k = 40, 30, 3
    dense = (rng.random((n, n_features)) < 0.2) * rng.standard_normal((n, n_features))
    indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(dense)[1].astype(np.int32)
    values = dense[dense != 0].astype(np.float32)
    w0 = np.array([0.3], dtype=np.float32)
    w = rng.standard_normal(n_features).astype(np.float32)
    V = rng.standard_normal((n_features, k)).astype(np.float32)
    want = naive_fm(values_dense(indptr, indices, values, n_features), float(w0[0]), w, V)
    out = np.zeros(n)
    predict_csr(indptr, indices, values, w0, w, V, n_features, out)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    rows = np.zeros(n)
    coordinate.predict_rows(indptr, indices, values, w0, w, V, 0, 1.0, 0.0, False, rows)
    np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-5)
    e = np.zeros(n)
    coordinate.residuals(indptr, indices, values, want, w0, w, V, 0, False, np.uint64(0), 0, e)
    np.testing.assert_allclose(e, 0.0, atol=1e-5)
    for kernel in (predict_csr, coordinate.predict_rows, coordinate.residuals):
        assert _holds_hints(kernel), kernel.__name__


def values_dense(indptr, indices, values, n_features):
    """The CSR rows as a dense float64 matrix."""
    dense = np.zeros((indptr.shape[0] - 1, n_features))
    for r in range(indptr.shape[0] - 1):
        dense[r, indices[indptr[r] : indptr[r + 1]]] = values[indptr[r] : indptr[r + 1]]
    return dense
