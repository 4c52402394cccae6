"""The fixed-width kernels (rows of one-hot fields, every x 1.0) against the CSR kernels: the
same parameters and predictions bit for bit; chunks that are not fixed width take the CSR path."""

import numpy as np
import pytest

from streamfm.config import LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.learners import sgd
from streamfm.learners.sgd import SGDLearner, chunk_rows, fixed_width


def one_hot_chunk(rng, n, fields, n_features):
    """n rows with one id in each of `fields` slices of [0, n_features), values 1.0."""
    width = n_features // fields
    ids = rng.integers(0, width, size=(n, fields)) + np.arange(fields) * width
    return CSRChunk(
        np.arange(n + 1, dtype=np.int64) * fields,
        ids.astype(np.int32).ravel(),
        np.ones(n * fields, dtype=np.float32),
    )


def learner(optimizer, task, n_features, k=6):
    lrn = SGDLearner(
        ModelConfig(k=k, seed=3, init_std=0.3),
        LearnerConfig(
            optimizer=optimizer,
            learning_rate=0.05,
            reg_bias=0.01,
            reg_linear=0.02,
            reg_factors=0.03,
            schedule="invscaling",
            decay=1e-3,
        ),
        task=task,
    )
    lrn.params.ensure_features(n_features)
    lrn.params.group[: n_features // 2] = 1  # two groups of different L2 strengths
    return lrn


def learn_csr(lrn, chunk, y, order, weights):
    """Learn through the CSR kernels, whatever the chunk's layout."""
    saved = sgd.chunk_rows
    sgd.chunk_rows = lambda c: ("csr", (c.indptr, c.indices, c.values))
    try:
        return lrn.learn(chunk, y, order, weights)
    finally:
        sgd.chunk_rows = saved


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
@pytest.mark.parametrize("fields", [1, 2, 5])
def test_fixed_width_is_bit_identical_to_csr(optimizer, task, weighted, fields):
    rng = np.random.default_rng(fields)
    n_features = 60
    a = learner(optimizer, task, n_features)
    b = learner(optimizer, task, n_features)
    for chunk_no in range(3):
        n = 200
        chunk = one_hot_chunk(rng, n, fields, n_features)
        y = rng.integers(0, 2, n).astype(float) if task == "classification" else rng.normal(3, 1, n)
        order = rng.permutation(n).astype(np.int64)
        weights = rng.uniform(0, 2, n) if weighted else None
        if weighted:
            weights[::7] = 0.0
        pa = a.learn(chunk, y, order, weights)
        assert a.last_layout == "fixed"
        pb = learn_csr(b, chunk, y, order, weights)
        assert b.last_layout == "csr"
        assert pa.tobytes() == pb.tobytes(), f"predictions differ in chunk {chunk_no}"
    for name in ("w0", "w", "V", "acc_w0", "acc_w", "acc_V"):
        assert getattr(a.params, name).tobytes() == getattr(b.params, name).tobytes(), name
    assert a.target_range.tobytes() == b.target_range.tobytes()
    assert a.t == b.t
    test = one_hot_chunk(rng, 50, fields, n_features)
    assert a.predict(test).tobytes() == b.predict(test).tobytes()


def test_detection():
    rng = np.random.default_rng(0)
    chunk = one_hot_chunk(rng, 10, 3, 30)
    assert fixed_width(chunk.indptr, chunk.values) == 3
    layout, (idx,) = chunk_rows(chunk)
    assert layout == "fixed" and idx.shape == (10, 3) and idx.dtype == np.int32
    np.testing.assert_array_equal(idx.ravel(), chunk.indices)
    # a value other than 1.0, rows of different lengths, empty rows, no rows: CSR
    values = chunk.values.copy()
    values[7] = 0.5
    assert chunk_rows(chunk._replace(values=values))[0] == "csr"
    indptr = chunk.indptr.copy()
    indptr[1] = 2  # rows of 2 and 4 non-zeros
    assert chunk_rows(chunk._replace(indptr=indptr))[0] == "csr"
    empty = CSRChunk(np.zeros(4, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    assert chunk_rows(empty)[0] == "csr"
    none = CSRChunk(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    assert chunk_rows(none)[0] == "csr"


def test_a_chunk_that_is_not_fixed_width_takes_the_csr_path():
    rng = np.random.default_rng(1)
    chunk = one_hot_chunk(rng, 40, 2, 20)
    values = chunk.values.copy()
    values[::5] = 2.0
    mixed = chunk._replace(values=values)
    lrn = learner("sgd", "regression", 20)
    lrn.learn(mixed, rng.normal(size=40))
    assert lrn.last_layout == "csr"
    lrn.learn(chunk, rng.normal(size=40))
    assert lrn.last_layout == "fixed"


def kernel_args(lrn, rows, y, order, pred):
    p = lrn.params
    reg_w, reg_v = lrn._group_regs()
    return (
        rows, y, order, (p.w0, p.w, p.V), (p.acc_w0, p.acc_w, p.acc_V),
        (0.01, reg_w, reg_v, p.group), (0.05, 1e-3, 0.5, 0), lrn.target_range, True, pred, False,
    )  # fmt: skip


@pytest.mark.parametrize("layout", ["fixed", "csr"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_order_none_learns_every_row_in_turn(layout, optimizer):
    """order=None (what learn passes without an order) compiles without the order array and
    learns exactly what order = arange(n) learns."""
    rng = np.random.default_rng(4)
    n, n_features = 300, 40
    chunk = one_hot_chunk(rng, n, 2, n_features)
    y = rng.normal(3, 1, n)
    rows = (
        chunk_rows(chunk)[1] if layout == "fixed" else (chunk.indptr, chunk.indices, chunk.values)
    )
    kernel = (sgd.FIXED_KERNELS if layout == "fixed" else sgd.KERNELS)[(optimizer, "squared")]
    runs = []
    for order in (None, np.arange(n, dtype=np.int64)):
        lrn = learner(optimizer, "regression", n_features)
        pred = np.empty(n)
        assert kernel(*kernel_args(lrn, rows, y, order, pred)) == -1
        runs.append((pred, lrn.params))
    (pa, a), (pb, b) = runs
    assert pa.tobytes() == pb.tobytes()
    for name in ("w0", "w", "V", "acc_w0", "acc_w", "acc_V"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


def test_learn_without_an_order_hands_the_kernel_none(monkeypatch):
    seen = []
    one_thread = sgd._one_thread

    def spy(kernel, rows, y, order, *rest):
        seen.append(order)
        return one_thread(kernel, rows, y, order, *rest)

    monkeypatch.setattr(sgd, "_one_thread", spy)
    rng = np.random.default_rng(5)
    chunk = one_hot_chunk(rng, 20, 2, 20)
    lrn = learner("sgd", "regression", 20)
    lrn.learn(chunk, rng.normal(size=20))
    lrn.learn(chunk, rng.normal(size=20), np.arange(20))
    assert seen[0] is None and seen[1] is not None


@pytest.mark.parametrize("layout", ["fixed", "csr"])
@pytest.mark.parametrize("where", ["first", "last", "negative", "half"])
def test_an_id_beyond_the_parameters_anywhere_is_refused_before_any_update(layout, where):
    rng = np.random.default_rng(6)
    n, n_features = 50, 20
    chunk = one_hot_chunk(rng, n, 2, n_features)
    indices = chunk.indices.copy()
    if where != "half":  # one bad id; "half": a model of half the ids the rows use
        indices[0 if where == "first" else -1] = -3 if where == "negative" else n_features
    bad = chunk._replace(indices=indices)
    lrn = learner("sgd", "regression", n_features // 2 if where == "half" else n_features)
    before = lrn.params.V.copy()
    with pytest.raises(IndexError, match="not allocated"):
        if layout == "fixed":
            lrn.learn(bad, np.ones(n))
        else:
            learn_csr(lrn, bad, np.ones(n), None, None)
    assert lrn.last_layout == layout
    assert not lrn.params.w.any() and lrn.params.V.tobytes() == before.tobytes()


def test_targets_of_another_length_are_refused():
    rng = np.random.default_rng(7)
    chunk = one_hot_chunk(rng, 10, 2, 20)
    lrn = learner("sgd", "regression", 20)
    with pytest.raises(ValueError, match="y: expected 10 values"):
        lrn.learn(chunk, np.zeros(9))
