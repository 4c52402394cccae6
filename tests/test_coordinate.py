"""ALS and MCMC kernels (streamfm.learners.coordinate) against dense float64 numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from streamfm.datasets import make_planted_fm
from streamfm.learners import coordinate as cd
from streamfm.learners import sampling as sm
from streamfm.learners.coordinate import TASK_CLASSIFICATION, TASK_REGRESSION
from tests.reference import auc, naive_fm

K = 3
NO_KEY = np.uint64(0)  # keys are uint64: always pass them as such (one compiled signature)


def key_of(seed, iteration, stream):
    return np.uint64(sm.iteration_key(seed, iteration, stream))


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    """A small design (float32 values, some non-binary), targets and random parameters."""
    X, y, _ = make_planted_fm(50, n_features=9, k=K, nnz_per_row=4, noise=0.3, seed=5)
    rng = np.random.default_rng(7)
    params = (np.array([0.3]), rng.normal(0, 0.5, 9), rng.normal(0, 0.5, (9, K)))
    return X, y, cd.design_arrays(X), params


def copy_params(params):
    return tuple(np.array(a, copy=True) for a in params)


def with_value(params, which, value):
    w0, w, V = copy_params(params)
    if which[0] == "w0":
        w0[0] = value
    elif which[0] == "w":
        w[which[1]] = value
    else:
        V[which[1], which[2]] = value
    return w0, w, V


def value_of(params, which):
    w0, w, V = params
    return {"w0": lambda: w0[0], "w": lambda: w[which[1]], "v": lambda: V[which[1], which[2]]}[
        which[0]
    ]()


def dense_affine(Xd, params, which):
    """ŷ = a + b θ as a function of one parameter θ, from the naive dense FM (it is affine)."""
    a = naive_fm(Xd, *_unpack(with_value(params, which, 0.0)))
    b = naive_fm(Xd, *_unpack(with_value(params, which, 1.0))) - a
    two = naive_fm(Xd, *_unpack(with_value(params, which, 2.0)))
    np.testing.assert_allclose(two, a + 2.0 * b, atol=1e-12)
    return a, b


def _unpack(params):
    w0, w, V = params
    return float(w0[0]), w, V


def dense_conditional(Xd, y, params, which, alpha, lam, mu):
    """Gaussian conditional of θ: y ~ N(a + b θ, 1/α), θ ~ N(μ, 1/λ). (mean, variance)."""
    a, b = dense_affine(Xd, params, which)
    prec = lam + alpha * b @ b
    return (alpha * b @ (y - a) + lam * mu) / prec, 1.0 / prec


def objective(Xd, y, params, lam0, lam_w, lam_v):
    """½ Σ (y - ŷ)² + ½ (λ0 w0² + Σ λ_w w² + Σ λ_v V²) (one group)."""
    w0, w, V = params
    r = y - naive_fm(Xd, *_unpack(params))
    return 0.5 * (r @ r + lam0 * w0[0] ** 2 + lam_w * w @ w + lam_v * np.sum(V * V))


def residual_and_cache(arrays, y, params, f=0):
    indptr, indices, values = arrays[:3]
    e = np.empty(len(y))
    q = np.empty(len(y))
    cd.residuals(indptr, indices, values, y, *params, TASK_REGRESSION, False, NO_KEY, 0, e)
    cd.factor_cache(indptr, indices, values, params[2], f, q)
    return e, q


# --- ALS: exact coordinate minimisers ------------------------------------------------------------


@pytest.mark.parametrize("which", [("w0",), ("w", 4), ("v", 2, 1)])
def test_als_update_is_the_exact_minimiser(small, which):
    X, y, arrays, params = small
    Xd = X.toarray().astype(np.float64)
    lam = 0.7
    col_ptr, row_index, col_values = arrays[3:]
    f = which[2] if which[0] == "v" else 0
    e, q = residual_and_cache(arrays, y, params, f)
    theta = value_of(params, which)
    if which[0] == "w0":
        got, _ = cd.conditional_w0(e, theta, 1.0, lam, 0.0)
    elif which[0] == "w":
        got, _ = cd.conditional_w(col_ptr, row_index, col_values, e, which[1], theta, 1.0, lam, 0.0)
    else:
        got, _ = cd.conditional_v(
            col_ptr, row_index, col_values, e, q, which[1], theta, 1.0, lam, 0.0
        )
    # The objective restricted to θ is a parabola: its minimiser from the dense design.
    a, b = dense_affine(Xd, params, which)
    want = b @ (y - a) / (b @ b + lam)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)

    def obj(t):
        r = y - a - b * t
        return 0.5 * (r @ r + lam * t * t)

    assert obj(got) <= min(obj(got - 1e-3), obj(got + 1e-3))


def test_als_sweeps_equal_sequential_dense_minimisation_and_keep_caches_exact(small):
    """sweep_w / sweep_v update every coordinate in turn: each the exact minimiser given the
    values already updated, and e, q stay equal to y - ŷ and X v_·f."""
    X, y, arrays, params = small
    Xd = X.toarray().astype(np.float64)
    lam_w, lam_v = 0.4, 0.9
    col_ptr, row_index, col_values = arrays[3:]
    group = np.zeros(9, dtype=np.int32)
    f = 1

    dense = copy_params(params)
    for i in range(9):
        mean, _ = dense_conditional(Xd, y, dense, ("w", i), 1.0, lam_w, 0.0)
        dense = with_value(dense, ("w", i), mean)
    for i in range(9):
        mean, _ = dense_conditional(Xd, y, dense, ("v", i, f), 1.0, lam_v, 0.0)
        dense = with_value(dense, ("v", i, f), mean)

    kern = copy_params(params)
    e, q = residual_and_cache(arrays, y, kern, f)
    one = np.ones(1)
    rej = cd.sweep_w(
        col_ptr,
        row_index,
        col_values,
        e,
        kern[1],
        group,
        np.zeros(1),
        lam_w * one,
        1.0,
        False,
        NO_KEY,
    )
    assert rej == 0
    cd.sweep_v(
        col_ptr, row_index, col_values, e, q, kern[2], f, group, np.zeros((1, K)),
        np.full((1, K), lam_v), 1.0, False, NO_KEY,
    )  # fmt: skip
    for got, want in zip(kern, dense, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(e, y - naive_fm(Xd, *_unpack(kern)), atol=1e-10)
    np.testing.assert_allclose(q, Xd @ kern[2][:, f], atol=1e-10)


def test_als_regularised_loss_never_increases(small):
    X, y, arrays, params = small
    Xd = X.toarray().astype(np.float64)
    lam0, lam_w, lam_v = 0.1, 0.3, 0.5
    indptr, indices, values, col_ptr, row_index, col_values = arrays
    w0, w, V = copy_params(params)
    group = np.zeros(9, dtype=np.int32)
    w_mu, w_lambda = np.zeros(1), np.full(1, lam_w)
    v_mu, v_lambda = np.zeros((1, K)), np.full((1, K), lam_v)
    e = np.empty(len(y))
    q = np.empty(len(y))
    losses = [objective(Xd, y, (w0, w, V), lam0, lam_w, lam_v)]
    for _ in range(4):
        cd.residuals(indptr, indices, values, y, w0, w, V, TASK_REGRESSION, False, NO_KEY, 0, e)
        cd.sweep_w0(e, w0, 1.0, lam0, 0.0, False, NO_KEY)
        losses.append(objective(Xd, y, (w0, w, V), lam0, lam_w, lam_v))
        cd.sweep_w(col_ptr, row_index, col_values, e, w, group, w_mu, w_lambda, 1.0, False, NO_KEY)
        losses.append(objective(Xd, y, (w0, w, V), lam0, lam_w, lam_v))
        for f in range(K):
            cd.factor_cache(indptr, indices, values, V, f, q)
            cd.sweep_v(
                col_ptr,
                row_index,
                col_values,
                e,
                q,
                V,
                f,
                group,
                v_mu,
                v_lambda,
                1.0,
                False,
                NO_KEY,
            )
            losses.append(objective(Xd, y, (w0, w, V), lam0, lam_w, lam_v))
    steps = np.diff(losses)
    assert np.all(steps <= 1e-12 * losses[0]), steps
    assert losses[-1] < 0.5 * losses[0]
    # The whole-iteration kernel does the same sweeps in the same order.
    p2 = copy_params(params)
    alpha = np.ones(1)
    for it in range(4):
        cd.coordinate_iteration(
            *arrays, y, *p2, group, alpha, w_mu, w_lambda, v_mu, v_lambda, lam0,
            np.array(cd.LIBFM_HYPER_PRIOR), cd.METHOD_ALS, TASK_REGRESSION, 0, it, e, q,
            *cd.NO_SCHEDULE,
        )  # fmt: skip
    for got, want in zip(p2, (w0, w, V), strict=True):
        np.testing.assert_array_equal(got, want)


# --- MCMC: conditionals and draws ----------------------------------------------------------------


@pytest.mark.parametrize("which", [("w0",), ("w", 3), ("v", 6, 2)])
def test_mcmc_conditional_mean_and_variance_equal_dense(small, which):
    X, y, arrays, params = small
    Xd = X.toarray().astype(np.float64)
    alpha, lam, mu = 2.5, 3.0, 0.4
    col_ptr, row_index, col_values = arrays[3:]
    f = which[2] if which[0] == "v" else 0
    e, q = residual_and_cache(arrays, y, params, f)
    theta = value_of(params, which)
    if which[0] == "w0":
        got = cd.conditional_w0(e, theta, alpha, lam, mu)
    elif which[0] == "w":
        got = cd.conditional_w(col_ptr, row_index, col_values, e, which[1], theta, alpha, lam, mu)
    else:
        got = cd.conditional_v(
            col_ptr, row_index, col_values, e, q, which[1], theta, alpha, lam, mu
        )
    want = dense_conditional(Xd, y, params, which, alpha, lam, mu)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def _moments_match(draws, mean, var, sigmas=5.0):
    n = len(draws)
    assert abs(draws.mean() - mean) < sigmas * np.sqrt(var / n), (draws.mean(), mean)
    # sd of the sample variance of normal draws: var * sqrt(2 / (n - 1))
    assert abs(draws.var(ddof=1) / var - 1.0) < sigmas * np.sqrt(2.0 / (n - 1))


@pytest.mark.parametrize("kind", ["w0", "w", "v"])
def test_mcmc_draws_have_the_conditional_moments(small, kind):
    """Many draws (keys of different iterations) from one fixed state: sample moments vs the
    dense conditional. The first parameter of each sweep conditions on the starting values."""
    X, y, arrays, params = small
    Xd = X.toarray().astype(np.float64)
    alpha, lam, mu = 1.7, 2.0, -0.3
    col_ptr, row_index, col_values = arrays[3:]
    group = np.zeros(9, dtype=np.int32)
    e0, q0 = residual_and_cache(arrays, y, params, 0)
    which = {"w0": ("w0",), "w": ("w", 0), "v": ("v", 0, 0)}[kind]
    mean, var = dense_conditional(Xd, y, params, which, alpha, lam, mu)
    n = 20000
    draws = np.empty(n)
    for it in range(n):
        w0, w, V = copy_params(params)
        e = e0.copy()
        if kind == "w0":
            cd.sweep_w0(e, w0, alpha, lam, mu, True, key_of(9, it, sm.STREAM_W0))
            draws[it] = w0[0]
        elif kind == "w":
            key = key_of(9, it, sm.STREAM_W)
            cd.sweep_w(
                col_ptr, row_index, col_values, e, w, group, np.full(1, mu), np.full(1, lam),
                alpha, True, key,
            )  # fmt: skip
            draws[it] = w[0]
        else:
            key = key_of(9, it, sm.STREAM_V)
            cd.sweep_v(
                col_ptr, row_index, col_values, e, q0.copy(), V, 0, group, np.full((1, K), mu),
                np.full((1, K), lam), alpha, True, key,
            )  # fmt: skip
            draws[it] = V[0, 0]
    _moments_match(draws, mean, var)
    assert stats.kstest((draws - mean) / np.sqrt(var), "norm").pvalue > 1e-4


HYPER = np.array([2.0, 0.5, 3.0, 0.2])  # alpha_0, gamma_0, beta_0, mu_0 (not libFM's, on purpose)


def test_alpha_draws_follow_the_gamma_posterior():
    e = np.random.default_rng(1).normal(0, 0.8, 40)
    shape = (HYPER[0] + len(e)) / 2
    rate = (HYPER[1] + e @ e) / 2
    draws = np.array([cd.draw_alpha(e, HYPER, key_of(3, it, 4)) for it in range(20000)])
    assert stats.kstest(draws, stats.gamma(shape, scale=1 / rate).cdf).pvalue > 1e-4
    assert draws.mean() == pytest.approx(shape / rate, rel=5 * np.sqrt(1 / shape / 20000))


def test_group_prior_draws_follow_the_normal_gamma_conditionals():
    """λ_g | θ, μ_g ~ Gamma((α0 + n_g + 1)/2, (γ0 + β0 (μ_g - μ0)² + Σ (θ - μ_g)²)/2), then
    μ_g | θ, λ_g ~ N((Σ θ + β0 μ0)/(n_g + β0), 1/((n_g + β0) λ_g)), per group."""
    rng = np.random.default_rng(2)
    group = np.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=np.int32)
    theta = rng.normal(0.5, 0.7, 10)
    mu_start = np.array([0.1, -0.2])
    n_draws = 20000
    lam_draws = np.empty((n_draws, 2))
    z = np.empty((n_draws, 2))
    a0, g0, b0, m0 = HYPER
    for it in range(n_draws):
        mu, lam = mu_start.copy(), np.ones(2)
        k_mu, k_lam = key_of(4, it, 5), key_of(4, it, 6)
        assert cd.draw_group_prior(theta, group, mu, lam, HYPER, k_mu, k_lam) == 0
        lam_draws[it] = lam
        for g in range(2):
            sel = theta[group == g]
            m = (sel.sum() + b0 * m0) / (len(sel) + b0)
            z[it, g] = (mu[g] - m) * np.sqrt((len(sel) + b0) * lam[g])
    for g in range(2):
        sel = theta[group == g]
        shape = (a0 + len(sel) + 1) / 2
        rate = (g0 + b0 * (mu_start[g] - m0) ** 2 + np.sum((sel - mu_start[g]) ** 2)) / 2
        dist = stats.gamma(shape, scale=1 / rate)
        assert stats.kstest(lam_draws[:, g], dist.cdf).pvalue > 1e-4
        assert abs(lam_draws[:, g].mean() - dist.mean()) < 5 * dist.std() / np.sqrt(n_draws)
        _moments_match(z[:, g], 0.0, 1.0)
        assert stats.kstest(z[:, g], "norm").pvalue > 1e-4


@pytest.mark.parametrize("shape", [0.4, 1.0, 3.5, 200.0])
def test_gamma_draws(shape):
    x = sm.gamma_draws(shape, key_of(1, 0, sm.STREAM_TEST), 50000)
    assert stats.kstest(x, stats.gamma(shape).cdf).pvalue > 1e-4


@pytest.mark.parametrize("a", [-2.0, 0.0, 0.7, 6.0])
def test_truncated_normal_draws(a):
    x = sm.truncated_normal_draws(a, key_of(2, 0, sm.STREAM_TEST), 50000)
    assert x.min() > a
    assert stats.kstest(x, stats.truncnorm(a, np.inf).cdf).pvalue > 1e-4


def test_normal_draws_and_cdf():
    x = sm.normal_draws(key_of(3, 0, sm.STREAM_TEST), 50000)
    assert stats.kstest(x, "norm").pvalue > 1e-4
    grid = np.linspace(-9, 9, 37)
    np.testing.assert_allclose([sm.normal_cdf(v) for v in grid], stats.norm.cdf(grid), rtol=1e-13)
    np.testing.assert_allclose(
        [sm.mills_ratio(v) for v in (-5.0, 0.0, 3.0, 29.0, 31.0, 60.0)],
        [stats.truncnorm(v, np.inf).mean() for v in (-5.0, 0.0, 3.0, 29.0, 31.0, 60.0)],
        rtol=1e-9,
    )


# --- rows: residuals, latent targets, predictions ------------------------------------------------


def test_residuals_latent_targets_and_predictions(small):
    X, y, arrays, params = small
    Xd = X.toarray().astype(np.float64)
    indptr, indices, values = arrays[:3]
    yhat = naive_fm(Xd, *_unpack(params))
    labels = (y > np.median(y)).astype(np.float64)
    e = np.empty(len(y))
    cd.residuals(indptr, indices, values, y, *params, TASK_REGRESSION, True, NO_KEY, 0, e)
    np.testing.assert_allclose(e, y - yhat, atol=1e-12)
    # ALS: the expectation of the truncated latent target
    cd.residuals(indptr, indices, values, labels, *params, TASK_CLASSIFICATION, False, NO_KEY, 0, e)
    lo = np.where(labels > 0, -yhat, -np.inf)
    hi = np.where(labels > 0, np.inf, -yhat)
    np.testing.assert_allclose(e, stats.truncnorm(lo, hi).mean(), rtol=1e-9)
    # MCMC: a draw on the right side of 0, keyed by the global row number (row_offset)
    key = key_of(0, 3, sm.STREAM_LATENT)
    cd.residuals(indptr, indices, values, labels, *params, TASK_CLASSIFICATION, True, key, 0, e)
    t = yhat + e
    assert np.all((t > 0) == (labels > 0))
    tail = np.empty(len(y) - 20)
    cd.residuals(
        indptr[20:] - indptr[20], indices[indptr[20] :], values[indptr[20] :], labels[20:],
        *params, TASK_CLASSIFICATION, True, key, 20, tail,
    )  # fmt: skip
    np.testing.assert_array_equal(tail, e[20:])
    # predictions: clipped, Φ, accumulated
    out = np.full(len(y), 1.0)
    cd.predict_rows(indptr, indices, values, *params, TASK_REGRESSION, 1.0, 0.0, False, out)
    np.testing.assert_allclose(out, yhat, atol=1e-12)
    cd.predict_rows(indptr, indices, values, *params, TASK_REGRESSION, -0.5, 0.5, True, out)
    np.testing.assert_allclose(out, yhat + np.clip(yhat, -0.5, 0.5), atol=1e-12)
    cd.predict_rows(indptr, indices, values, *params, TASK_CLASSIFICATION, 1.0, 0.0, False, out)
    np.testing.assert_allclose(out, stats.norm.cdf(yhat), rtol=1e-12)


@pytest.mark.parametrize("what", ["row", "feature", "group"])
def test_bad_ids_are_rejected(small, what):
    X, y, arrays, params = small
    bad = [a.copy() for a in arrays]
    group = np.zeros(9, np.int32)
    if what == "row":
        bad[4][3] = len(y)
    elif what == "feature":
        bad[1][5] = -1
    else:
        group[2] = 1
    w0, w, V = copy_params(params)
    hyper = (np.ones(1), np.zeros(1), np.ones(1), np.zeros((1, K)), np.ones((1, K)))
    with pytest.raises(IndexError):
        cd.coordinate_iteration(
            *bad, y, w0, w, V, group, *hyper, 0.0, np.array(cd.LIBFM_HYPER_PRIOR),
            cd.METHOD_MCMC, TASK_REGRESSION, 0, 0, np.empty(len(y)), np.empty(len(y)),
            *cd.NO_SCHEDULE,
        )  # fmt: skip
    np.testing.assert_array_equal(V, params[2])  # checked before anything changes


# --- determinism and resumption ------------------------------------------------------------------


def _same_state(a: cd.CoordinateState, b: cd.CoordinateState):
    assert a.iteration == b.iteration and a.n_pred == b.n_pred
    for name in ("w0", "w", "V", "alpha", "w_mu", "w_lambda", "v_mu", "v_lambda", "pred_sum"):
        x, z = getattr(a, name), getattr(b, name)
        assert (x is None) == (z is None)
        if x is not None:
            np.testing.assert_array_equal(x, z, err_msg=name)


@pytest.mark.parametrize(
    "method,task", [("mcmc", "regression"), ("mcmc", "classification"), ("als", "regression")]
)
def test_same_seed_same_bits_and_resume_equals_straight_run(method, task):
    X, y, _ = make_planted_fm(600, n_features=40, k=3, nnz_per_row=4, task=task, seed=11)
    Xt, yt = X[500:], y[500:]
    X, y = X[:500], y[:500]
    groups = np.arange(40) % 3
    kw = dict(method=method, task=task, k=3, seed=4, groups=groups, reg=(0.0, 0.1, 0.2))
    kw |= dict(burn_in=2, X_test=Xt, y_test=yt)
    straight = cd.fit_coordinate(X, y, n_iter=10, **kw)
    again = cd.fit_coordinate(X, y, n_iter=10, **kw)
    _same_state(straight.state, again.state)
    first = cd.fit_coordinate(X, y, n_iter=5, **kw)
    resumed = cd.fit_coordinate(X, y, n_iter=10, state=first.state, **kw)
    _same_state(resumed.state, straight.state)
    np.testing.assert_array_equal(resumed.test_pred, straight.test_pred)
    assert [h["test"] for h in first.history + resumed.history] == [
        h["test"] for h in straight.history
    ]
    other = cd.fit_coordinate(X, y, n_iter=10, **(kw | {"seed": 5}))
    assert not np.array_equal(other.V, straight.V)


# --- planted recovery ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_regression():
    X, y, truth = make_planted_fm(20000, n_features=100, k=4, nnz_per_row=5, noise=0.5, seed=3)
    m = 16000
    floor = np.sqrt(np.mean((truth["clean"][m:] - y[m:]) ** 2))
    trivial = np.sqrt(np.mean((y[:m].mean() - y[m:]) ** 2))
    return X[:m], y[:m], X[m:], y[m:], floor, trivial


def test_mcmc_recovers_a_planted_fm_to_the_noise_floor(planted_regression):
    X, y, Xt, yt, floor, trivial = planted_regression
    r = cd.fit_coordinate(X, y, method="mcmc", k=4, n_iter=60, burn_in=20, X_test=Xt, y_test=yt)
    rmse = np.sqrt(np.mean((r.test_pred - yt) ** 2))
    assert rmse == pytest.approx(r.history[-1]["test"])
    assert rmse < 1.05 * floor, (rmse, floor, trivial)
    assert r.state.n_pred == 40
    assert all(h["rejected"] == 0 for h in r.history)
    # the noise precision is learnt: close to 1 / 0.5²
    assert np.mean([h["alpha"] for h in r.history[20:]]) == pytest.approx(4.0, rel=0.15)


def test_als_on_a_planted_fm(planted_regression):
    X, y, Xt, yt, floor, trivial = planted_regression
    r = cd.fit_coordinate(
        X, y, method="als", k=4, n_iter=15, reg=(0.0, 0.1, 1.0), X_test=Xt, y_test=yt
    )
    assert r.history[-1]["test"] < 1.1 * floor < 0.5 * trivial
    train = [h["train"] for h in r.history]
    assert train[-1] < train[0]


@pytest.mark.parametrize("method", ["mcmc", "als"])
def test_probit_classification_on_a_planted_binary_task(method):
    X, y, truth = make_planted_fm(
        20000, n_features=100, k=4, nnz_per_row=5, task="classification", seed=3
    )
    m = 16000
    r = cd.fit_coordinate(
        X[:m], y[:m], method=method, task="classification", k=4, n_iter=40, burn_in=10,
        reg=(0.0, 0.1, 1.0), X_test=X[m:], y_test=y[m:],
    )  # fmt: skip
    best = auc(y[m:], truth["clean"][m:])
    got = auc(y[m:], r.test_pred)
    assert got == pytest.approx(r.history[-1]["test"])
    assert got > 0.8 and got > best - 0.03, (got, best)
    assert np.all((r.test_pred > 0) & (r.test_pred < 1))
    assert all(h["alpha"] == 1.0 for h in r.history)


def test_features_without_training_rows():
    """ALS with λ = 0: such a parameter has precision 0 and is set to 0 (libFM); MCMC draws it
    from its prior. Nothing divides by zero."""
    X, y, _ = make_planted_fm(300, n_features=20, k=2, nnz_per_row=3, seed=2)
    X = X.tolil()
    X[:, 7] = 0.0
    X = X.tocsr()
    X.eliminate_zeros()
    als = cd.fit_coordinate(X, y, method="als", k=2, n_iter=2, reg=(0.0, 0.0, 0.0))
    assert als.w[7] == 0.0 and np.all(als.V[7] == 0.0)
    assert np.isfinite(als.V).all() and np.isfinite(als.w).all()
    mc = cd.fit_coordinate(X, y, method="mcmc", k=2, n_iter=3)
    assert np.isfinite(mc.V).all() and mc.w[7] != 0.0
    assert all(h["rejected"] == 0 for h in als.history + mc.history)


# --- several threads: waves of features that share no row ---------------------------------------


def mixed_design(seed=5, n=600):
    """Rows with a user and an item (one-hot groups 0, 1), 0-3 tags (group 2, several per row,
    real values) and a dense numeric feature (group 3): waves must handle more than one-hots.
    Feature ids interleave the groups, as a stream allocates them."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_users, n_items, n_tags = 40, 30, 12
    rows, cols, vals = [], [], []
    for r in range(n):
        feats = {3 * rng.integers(n_users): 1.0, 3 * rng.integers(n_items) + 1: 1.0}
        for t in rng.choice(n_tags, rng.integers(0, 4), replace=False):
            feats[3 * t + 2] = rng.random() + 0.5
        feats[3 * max(n_users, n_items) + 1] = rng.normal()
        for c, v in feats.items():
            rows.append(r)
            cols.append(c)
            vals.append(v)
    p = 3 * max(n_users, n_items) + 3  # the last features: no training rows
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, p))
    groups = np.array([i % 3 for i in range(p)], dtype=np.int32)
    groups[3 * max(n_users, n_items) + 1] = 3
    y = X @ rng.normal(size=p) + rng.normal(0, 0.1, n)
    return X, y, groups


def test_sweep_schedule_waves_share_no_row_and_keep_dependencies():
    X, _, _ = mixed_design()
    indptr, indices, values, col_ptr, row_index, col_values = cd.design_arrays(X)
    n, p = X.shape
    level_ptr, features = cd.sweep_schedule(col_ptr, row_index, n, p + 4)  # 4 without columns
    assert sorted(features) == list(range(p + 4))
    wave = np.empty(p + 4, dtype=np.int64)
    for w in range(len(level_ptr) - 1):
        members = features[level_ptr[w] : level_ptr[w + 1]]
        assert np.all(np.diff(members) > 0)  # feature order within a wave
        wave[members] = w
        rows = np.concatenate([row_index[col_ptr[i] : col_ptr[i + 1]] for i in members if i < p])
        assert len(rows) == len(np.unique(rows)), f"wave {w}: two features share a row"
    for r in range(n):  # every pair of features sharing a row: the earlier in an earlier wave
        ids = np.sort(X.indices[X.indptr[r] : X.indptr[r + 1]])
        assert np.all(np.diff(wave[ids]) > 0)
    assert 1 < len(level_ptr) - 1 < p  # (a feature on every row makes this design wave-heavy)


@pytest.mark.parametrize("method", ["als", "mcmc"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_threads_give_the_model_of_one_thread_bit_for_bit(method, task):
    X, y, groups = mixed_design()
    if task == "classification":
        y = (y > np.median(y)).astype(np.float64)
    kw = dict(method=method, task=task, k=3, n_iter=6, seed=4, groups=groups, X_test=X[:50])
    kw["reg"] = (0.1, 0.5, 1.0)
    one = cd.fit_coordinate(X, y, **kw)
    two = cd.fit_coordinate(X, y, threads=2, **kw)
    for name in ("w0", "w", "V", "alpha", "w_mu", "w_lambda", "v_mu", "v_lambda"):
        np.testing.assert_array_equal(getattr(two.state, name), getattr(one.state, name), name)
    if method == "mcmc":
        np.testing.assert_array_equal(two.state.pred_sum, one.state.pred_sum)


def test_a_schedule_of_other_features_is_refused():
    X, y, groups = mixed_design()
    arrays = cd.design_arrays(X)
    n, p = X.shape
    s = cd.initial_state(p, 2, 4, seed=0, reg=(0.0, 0.1, 0.1))
    level_ptr, features = cd.sweep_schedule(arrays[3], arrays[4], n, p - 1)
    with pytest.raises(ValueError, match="schedule"):
        cd.coordinate_iteration(
            *arrays, y, s.w0, s.w, s.V, groups, s.alpha, s.w_mu, s.w_lambda, s.v_mu,
            s.v_lambda, 0.0, np.array(cd.LIBFM_HYPER_PRIOR), cd.METHOD_ALS, TASK_REGRESSION, 0, 0,
            np.empty(n), np.empty(n), level_ptr, features,
        )  # fmt: skip
