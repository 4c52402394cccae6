"""Kernels against slow references: prediction, one SGD / AdaGrad step, finite differences."""

import numpy as np
import pytest
import scipy.sparse as sp
from reference import gradient, loss, naive_fm

from streamfm.config import LearnerConfig, ModelConfig
from streamfm.csr import to_chunk
from streamfm.learners.sgd import SGDLearner


def random_problem(seed=0, n=40, d=30, k=5, density=0.2):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = rng.uniform(-2, 2, X.nnz)
    X.data = X.data.astype(np.float32).astype(np.float64)  # exactly representable in float32
    w0 = np.float32(rng.normal())
    w = rng.normal(size=d).astype(np.float32)
    V = rng.normal(size=(d, k)).astype(np.float32)
    return X, float(w0), w, V


def learner_with(w0, w, V, task="regression", **cfg):
    lrn = SGDLearner(ModelConfig(k=V.shape[1]), LearnerConfig(**cfg), task=task)
    lrn.params.ensure_features(len(w))
    lrn.params.w0[0] = w0
    lrn.params.w[: len(w)] = w
    lrn.params.V[: len(w)] = V
    return lrn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_time_prediction_equals_naive_double_sum(seed):
    X, w0, w, V = random_problem(seed)
    lrn = learner_with(w0, w, V)
    got = lrn.decision_function(to_chunk(X)[0])
    want = naive_fm(X.toarray(), w0, w.astype(float), V.astype(float))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prediction_ignores_unseen_feature_ids():
    X, w0, w, V = random_problem(3, d=30)
    lrn = learner_with(w0, w[:20], V[:20])
    got = lrn.decision_function(to_chunk(X)[0])
    Xd = X.toarray()
    np.testing.assert_allclose(got, naive_fm(Xd[:, :20], w0, w[:20], V[:20]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_analytic_gradient_matches_finite_differences(task):
    X, w0, w, V = random_problem(4, n=3, d=8, k=3, density=0.6)
    x = X.toarray()[0]
    y = 1.0 if task == "classification" else 0.7
    w, V = w.astype(float), V.astype(float)
    reg = (0.1, 0.2, 0.3)
    g0, gw, gV = gradient(x, y, w0, w, V, task, reg)
    eps = 1e-6

    def num(f):
        return (f(eps) - f(-eps)) / (2 * eps)

    assert num(lambda e: loss(x, y, w0 + e, w, V, task, reg)) == pytest.approx(g0, rel=1e-6)
    for i in range(len(w)):
        dw = np.zeros_like(w)
        dw[i] = 1
        assert num(lambda e, dw=dw: loss(x, y, w0, w + e * dw, V, task, reg)) == pytest.approx(
            gw[i], rel=1e-5, abs=1e-8
        )
        for f in range(V.shape[1]):
            dV = np.zeros_like(V)
            dV[i, f] = 1
            assert num(lambda e, dV=dV: loss(x, y, w0, w, V + e * dV, task, reg)) == pytest.approx(
                gV[i, f], rel=1e-5, abs=1e-8
            )


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_one_step_equals_numpy_reference(task, optimizer):
    X, w0, w, V = random_problem(5, n=1, d=12, k=4, density=0.5)
    x = X.toarray()[0]
    y = 1.0 if task == "classification" else 2.5
    lr, reg = 0.05, (0.1, 0.2, 0.3)
    lrn = learner_with(
        w0,
        w,
        V,
        task=task,
        optimizer=optimizer,
        learning_rate=lr,
        reg_bias=reg[0],
        reg_linear=reg[1],
        reg_factors=reg[2],
        clip_predictions=False,
    )
    lrn.learn(to_chunk(X)[0], np.array([y]))
    g0, gw, gV = gradient(x, y, w0, w.astype(float), V.astype(float), task, reg)
    nz = x != 0
    if optimizer == "sgd":
        e0, ew, eV = w0 - lr * g0, w - lr * gw, V - lr * gV
    else:  # accumulators start at adagrad_init = 1
        e0 = w0 - lr * g0 / np.sqrt(1 + g0**2)
        ew = np.where(nz, w - lr * gw / np.sqrt(1 + gw**2), w)
        eV = np.where(nz[:, None], V - lr * gV / np.sqrt(1 + gV**2), V)
    p = lrn.params
    assert p.w0[0] == pytest.approx(e0, rel=1e-5)
    np.testing.assert_allclose(p.w[:12], ew, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.V[:12], eV, rtol=1e-5, atol=1e-6)


def test_regression_predictions_clipped_to_seen_target_range():
    X, w0, w, V = random_problem(6, n=50)
    lrn = learner_with(w0, w, V, learning_rate=1e-4)
    y = np.linspace(1, 5, 50)
    pred_before = lrn.learn(to_chunk(X)[0], y)
    # The first case has no target seen yet: unclipped. Later ones stay in the range seen before them.
    for r in range(1, 50):
        assert y[:r].min() <= pred_before[r] <= y[:r].max()
    assert np.all((lrn.predict(to_chunk(X)[0]) >= 1) & (lrn.predict(to_chunk(X)[0]) <= 5))


def test_invscaling_schedule_equals_reference_rates():
    X, w0, w, V = random_problem(7, n=2, d=10, k=2, density=0.5)
    a = learner_with(w0, w, V, schedule="invscaling", learning_rate=0.1, decay=0.5, power_t=0.5)
    a.learn(to_chunk(X[:1])[0], np.array([1.0]))
    a.learn(to_chunk(X[1:2])[0], np.array([2.0]))
    # The second case (t = 1) uses lr = 0.1 / (1 + 0.5)^0.5: one constant-rate step at that rate
    # from the state after the first case must give the same parameters.
    b = learner_with(w0, w, V, learning_rate=0.1)
    b.learn(to_chunk(X[:1])[0], np.array([1.0]))
    b.config = LearnerConfig(learning_rate=0.1 / 1.5**0.5)
    b.learn(to_chunk(X[1:2])[0], np.array([2.0]))
    np.testing.assert_allclose(a.params.V, b.params.V, rtol=1e-6)
    np.testing.assert_allclose(a.params.w, b.params.w, rtol=1e-6)


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_weighted_step_follows_the_weighted_gradient(task, optimizer):
    """A case of weight s steps along s times its gradient (loss and L2), as the reference says."""
    X, w0, w, V = random_problem(8, n=1, d=12, k=4, density=0.5)
    x = X.toarray()[0]
    y = 1.0 if task == "classification" else 2.5
    lr, reg, s = 0.05, (0.1, 0.2, 0.3), 2.75
    cfg = dict(
        task=task,
        optimizer=optimizer,
        learning_rate=lr,
        reg_bias=reg[0],
        reg_linear=reg[1],
        reg_factors=reg[2],
        clip_predictions=False,
    )
    lrn = learner_with(w0, w, V, **cfg)
    lrn.learn(to_chunk(X)[0], np.array([y]), weights=np.array([s]))
    g0, gw, gV = (s * g for g in gradient(x, y, w0, w.astype(float), V.astype(float), task, reg))
    nz = x != 0
    if optimizer == "sgd":
        e0, ew, eV = w0 - lr * g0, w - lr * gw, V - lr * gV
    else:
        e0 = w0 - lr * g0 / np.sqrt(1 + g0**2)
        ew = np.where(nz, w - lr * gw / np.sqrt(1 + gw**2), w)
        eV = np.where(nz[:, None], V - lr * gV / np.sqrt(1 + gV**2), V)
    p = lrn.params
    assert p.w0[0] == pytest.approx(e0, rel=1e-5)
    np.testing.assert_allclose(p.w[:12], ew, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.V[:12], eV, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_unit_weights_are_bit_identical_and_zero_weights_drop_the_case(task, optimizer):
    X, w0, w, V = random_problem(9, n=60, d=30, k=4)
    y = np.linspace(-1, 3, 60) if task == "regression" else (np.arange(60) % 3 == 0) * 1.0
    cfg = dict(task=task, optimizer=optimizer, learning_rate=0.02, reg_linear=0.01)
    chunk = to_chunk(X)[0]
    plain, ones = learner_with(w0, w, V, **cfg), learner_with(w0, w, V, **cfg)
    p_plain = plain.learn(chunk, y)
    p_ones = ones.learn(chunk, y, weights=np.ones(60))
    np.testing.assert_array_equal(p_plain, p_ones)
    for a, b in ((plain.params.w, ones.params.w), (plain.params.V, ones.params.V)):
        np.testing.assert_array_equal(a, b)
    assert plain.target_range.tolist() == ones.target_range.tolist()
    # Weight 0 for every third row == the rows without them (predictions of the kept rows too).
    weights = np.where(np.arange(60) % 3 == 1, 0.0, 1.0)
    keep = np.flatnonzero(weights)
    zero, subset = learner_with(w0, w, V, **cfg), learner_with(w0, w, V, **cfg)
    p_zero = zero.learn(chunk, y, weights=weights)
    p_subset = subset.learn(to_chunk(X[keep])[0], y[keep])
    np.testing.assert_array_equal(p_zero[keep], p_subset)
    np.testing.assert_array_equal(zero.params.V, subset.params.V)
    np.testing.assert_array_equal(zero.params.w, subset.params.w)
    assert zero.params.w0[0] == subset.params.w0[0]
    assert zero.target_range.tolist() == subset.target_range.tolist()


def test_weights_must_match_the_rows():
    X, w0, w, V = random_problem(10, n=5)
    with pytest.raises(ValueError, match="expected 5 values"):
        learner_with(w0, w, V).learn(to_chunk(X)[0], np.ones(5), weights=np.ones(4))
