"""SGDA (SGD with adaptive regularisation): the λ step against a numerical derivative, held-out
rows, chunking, resume and the training loop."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from streamfm.config import LearnerConfig, ModelConfig
from streamfm.csr import to_chunk
from streamfm.datasets import make_event_log, make_planted_fm
from streamfm.learners.base import make_learner
from streamfm.learners.sgda import held_out_rows
from streamfm.spec import parse_spec
from streamfm.store.state import copy_state
from streamfm.training.loop import train
from tests.reference import naive_fm

K = 3


def learner(n_features, groups, method="sgda", **kw):
    cfg = {"learning_rate": 0.05, "reg_linear": 0.02, "reg_factors": 0.03, **kw}
    lrn = make_learner(ModelConfig(k=K, seed=4), LearnerConfig(method=method, **cfg), "regression")
    lrn.params.ensure_features(n_features)
    lrn.params.group[:n_features] = groups
    return lrn


def test_reg_step_follows_the_derivative_of_the_validation_loss():
    """Rows 0 and 2 are learnt, row 1 is held out; after row 2's parameter step, one λ step on
    row 1. λ_new = λ - η_λ ∂ℓ(ŷ'(λ))/∂λ, the derivative taken numerically in float64."""
    rng = np.random.default_rng(0)
    p, groups = 8, np.array([0, 0, 1, 1, 1, 2, 2, 2])
    X = np.zeros((3, p))
    for r, cols in enumerate(([0, 2, 5], [1, 2, 6, 7], [0, 3, 6])):
        X[r, cols] = rng.uniform(0.5, 1.5, len(cols)).astype(np.float32)
    y = np.array([1.0, 2.5, -0.5])
    lrn = learner(p, groups, clip_predictions=False, sgda={"validation_every": 2})
    # Targets chosen so that the hash holds out row 1 only.
    chunk, _ = to_chunk(sp.csr_matrix(X))
    for y1 in np.linspace(2.5, 3.5, 101):
        y[1] = y1
        if held_out_rows(chunk.indptr, chunk.indices, chunk.values, y, 4, 2).tolist() == [
            False, True, False,
        ]:  # fmt: skip
            break
    else:
        raise AssertionError("no target holds out row 1 only")
    pr = lrn.params
    w0, w, V = (np.array(a[:p], dtype=np.float64) for a in (pr.w0, pr.w, pr.V))
    lam_w = np.full(3, 0.02)
    lam_v = np.full((3, K), 0.03)
    lr = 0.05
    grad_w, grad_V = np.zeros(p), np.zeros((p, K))
    for r in (0, 2):  # the parameter steps (float64 reference of libFM's update)
        x = X[r]
        nz = x != 0
        g = naive_fm(x[None], w0[0], w, V)[0] - y[r]
        s = V.T @ x
        gw, gV = g * x, g * (np.outer(x, s) - V * (x**2)[:, None])
        grad_w[nz], grad_V[nz] = gw[nz], gV[nz]
        w0 = w0 - lr * g
        w = np.where(nz, w - lr * (gw + lam_w[groups] * w), w)
        V = np.where(nz[:, None], V - lr * (gV + lam_v[groups] * V), V)

    def val_loss(lw, lv):
        w1 = w - lr * (grad_w + lw[groups] * w)
        V1 = V - lr * (grad_V + lv[groups] * V)
        return 0.5 * (naive_fm(X[1][None], w0[0], w1, V1)[0] - y[1]) ** 2

    eps = 1e-6
    want_w, want_v = lam_w.copy(), lam_v.copy()
    for g in range(3):
        d = np.zeros(3)
        d[g] = eps
        deriv = (val_loss(lam_w + d, lam_v) - val_loss(lam_w - d, lam_v)) / (2 * eps)
        want_w[g] = max(0.0, lam_w[g] - lr * deriv)
        for f in range(K):
            d = np.zeros((3, K))
            d[g, f] = eps
            deriv = (val_loss(lam_w, lam_v + d) - val_loss(lam_w, lam_v - d)) / (2 * eps)
            want_v[g, f] = max(0.0, lam_v[g, f] - lr * deriv)
    pred = lrn.learn(chunk, y)
    np.testing.assert_allclose(lrn.reg_w, want_w, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lrn.reg_v, want_v, rtol=1e-5, atol=1e-9)
    assert lrn.n_held_out == 1 and lrn.reg_steps == 1
    assert (lrn.reg_w != 0.02).any() and (lrn.reg_v != 0.03).any()
    # The held-out case is predicted (progressive validation) with the parameters it met.
    assert np.isfinite(pred).all()


@pytest.fixture(scope="module")
def planted():
    X, y, _ = make_planted_fm(4000, n_features=60, k=K, nnz_per_row=4, noise=0.3, seed=5)
    return sp.csr_matrix(X), y, np.arange(60) % 3


def run(planted, sizes, **kw):
    X, y, groups = planted
    lrn = learner(60, groups, **{"sgda": {"validation_rows": 40}, **kw})
    preds = []
    for _ in range(2):
        a = 0
        for size in sizes:
            chunk, _ = to_chunk(X[a : a + size])
            preds.append(lrn.learn(chunk, y[a : a + size]))
            a += size
    return lrn, np.concatenate(preds)


def test_chunking_and_resume_change_nothing(planted):
    whole, p1 = run(planted, [4000])
    pieces, p2 = run(planted, [1, 999, 77, 923, 2000])
    np.testing.assert_array_equal(whole.params.V, pieces.params.V)
    np.testing.assert_array_equal(whole.reg_v, pieces.reg_v)
    np.testing.assert_array_equal(p1, p2)
    # Resume from a state taken in the middle of the stream.
    X, y, groups = planted
    first = learner(60, groups, sgda={"validation_rows": 40})
    for a in (0, 1500):
        chunk, _ = to_chunk(X[a : a + 1500])
        first.learn(chunk, y[a : a + 1500])
    state = copy_state(first.state_dict())
    again = learner(60, groups, sgda={"validation_rows": 40})
    again.load_state_dict(state)
    chunk, _ = to_chunk(X[3000:])
    again.learn(chunk, y[3000:])
    chunk, _ = to_chunk(X)
    again.learn(chunk, y)
    np.testing.assert_array_equal(again.params.V, whole.params.V)
    np.testing.assert_array_equal(again.reg_w, whole.reg_w)
    assert again.window.n_rows == 40 and again.n_held_out == whole.n_held_out > 600


def test_held_out_rows_are_not_learnt_with_frozen_regularisation_it_is_sgd(planted):
    X, y, groups = planted
    frozen, _ = run(planted, [4000], sgda={"validation_rows": 40, "reg_learning_rate": 1e-300})

    assert (frozen.reg_w == 0.02).all() and (frozen.reg_v == 0.03).all()
    chunk, _ = to_chunk(X)
    held = held_out_rows(chunk.indptr, chunk.indices, chunk.values, y, 4, 10)
    assert 300 < held.sum() < 500  # about one row in ten, the same in both passes
    keep = np.flatnonzero(~held)
    sgd = learner(60, groups, method="sgd")
    for _ in range(2):
        chunk, _ = to_chunk(X[keep])
        sgd.learn(chunk, y[keep])
    np.testing.assert_array_equal(frozen.params.V, sgd.params.V)
    np.testing.assert_array_equal(frozen.params.w, sgd.params.w)


def test_sgda_trains_from_a_spec_and_may_follow(tmp_path):
    events, _ = make_event_log(n_users=200, n_items=100, n_events=6000, seed=5)
    pq.write_table(events.slice(0, 5000), tmp_path / "train.parquet")
    pq.write_table(events.slice(5000), tmp_path / "test.parquet")
    spec = {
        "source": {"path": str(tmp_path / "train.parquet")},
        "target": "rating",
        "features": [{"type": "mf"}],
        "model": {"k": 4},
        "learner": {"method": "sgda", "epochs": 3, "learning_rate": 0.02},
        "validation": {"source": {"path": str(tmp_path / "test.parquet")}},
        "output": {"dir": str(tmp_path / "out")},
    }
    result = train(parse_spec(spec))
    assert len(result.history) == 3 and "holdout_rmse" in result.history[-1]
    learnt = result.model.learner
    assert 1200 < learnt.n_held_out < 1800 and (learnt.reg_v != 0.01).any()
    follow = {**spec, "source": {**spec["source"], "follow": True}, "learner": {"method": "sgda"}}
    assert parse_spec({**follow, "learner": {"method": "sgda", "epochs": 1}}).source.follow
