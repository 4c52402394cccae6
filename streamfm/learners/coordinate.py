"""ALS (coordinate descent) and MCMC (Gibbs sampling) for factorization machines, as numba kernels.

The scheme is libFM's (Rendle, "Factorization Machines with libFM", ACM TIST 2012, sections 4.2
and 4.3; Freudenthaler, Schmidt-Thieme & Rendle 2011 for the Bayesian model). With the residual
e_r = t_r - ŷ_r of every training row (t = y for regression, the latent target for probit
classification) and, while factor f is being updated, q_r = Σ_i v_if x_ri, one model parameter θ
enters ŷ linearly with per-row derivative

    h_θ(x_r) = 1 (w0),   x_ri (w_i),   x_ri (q_r - v_if x_ri) (v_if),

so its conditional given everything else needs only Σ_r h e_r and Σ_r h² over the rows where
h ≠ 0: the rows of one column of the design matrix. After θ changes by d, e_r -= h d and
(for v_if) q_r += x_ri d. One sweep over all parameters costs O(k · nnz).

Model and conditional (one parameter θ, Gaussian prior N(μ, 1/λ), Gaussian noise precision α):

    precision  = λ + α Σ h²
    mean       = (α Σ h (e + θ h) + λ μ) / precision          (e includes θ's current part)

- **ALS** (``METHOD_ALS``): θ <- mean with α = 1 and μ = 0 (the caller keeps ``w_mu``, ``v_mu``
  at 0; other values shrink towards them instead), i.e. the exact minimiser over θ of

      ½ Σ_r (t_r - ŷ_r)² + ½ (λ0 w0² + Σ_i λ_w[g_i] w_i² + Σ_i Σ_f λ_v[g_i, f] v_if²),

  so λ has the meaning of libFM's ``-regular`` (libFM minimises Σ e² + Σ λ θ², same minimiser).
  Regularisation values are inputs (``w_lambda``, ``v_lambda`` as for MCMC, ``lambda0`` for w0)
  and are never changed.
- **MCMC** (``METHOD_MCMC``): θ <- a draw from N(mean, 1/precision). Per feature group g:
  w_i ~ N(μ_w[g], 1/λ_w[g]), v_if ~ N(μ_v[g, f], 1/λ_v[g, f]); Normal-Gamma hyper-priors
  μ | λ ~ N(μ0, 1/(β0 λ)), λ ~ Gamma(α0/2, rate γ0/2); noise α ~ Gamma(α0/2, rate γ0/2). All of
  α, μ_w, λ_w, μ_v, λ_v are drawn from their conditionals once per iteration. w0 has the fixed
  prior N(0, 1/lambda0) (libFM: mean w0_mean_0 = 0, precision reg0, default 0: a flat prior); it
  is not part of the hierarchy.
- Hyper-prior values: libFM's (fm_learn_mcmc::init), ``LIBFM_HYPER_PRIOR`` = (α0, γ0, β0, μ0) =
  (1, 1, 1, 0), passed as ``hyper_prior`` (float64[4]).
- Order within an iteration, as libFM's draw_all: residuals (and latent targets), α, w0, λ_w then
  μ_w, all w_i (feature order), λ_v then μ_v for every f, then for f = 0..k-1: q_·f, all v_if.
  Parameters of features that occur in no training row (including ids beyond the CSC's columns)
  are drawn from their prior (MCMC) or set to μ = 0 (ALS); where the precision is 0 (ALS with
  λ = 0) they are set to 0, as libFM does.
- **Classification** (both methods), probit link P(y = 1 | x) = Φ(ŷ(x)): labels y > 0 are
  positive, others negative. The latent target t_r ~ N(ŷ_r, 1) truncated to t > 0 (positive) or
  t < 0 (negative) is drawn afresh at the start of every MCMC iteration (Albert & Chib); ALS uses
  its expectation instead (t = ŷ ± Mills ratio, an EM step), as libFM does for ``-method als
  -task c`` (ALS there is MCMC without sampling). The noise precision is fixed at α = 1 (probit);
  libFM keeps drawing α for classification too, which we do not copy. Predictions are Φ(ŷ) (ALS)
  and the average of Φ(ŷ) over samples (MCMC).

Residuals are recomputed from the parameters at the start of every iteration (O(k · nnz), as libFM
does for numerical stability), and q_·f from scratch before the sweep of factor f. Hence the
per-row arrays ``e`` and ``q`` are scratch: nothing per row survives an iteration boundary, and
the state to checkpoint is small (see ``CoordinateState``).

Randomness: counter-based (``streamfm.learners.sampling``); every draw is a pure function of
(seed, iteration, kind of draw, parameter / group / global row number, uniform index). Same seed
-> bit-identical results; resuming at an iteration from a saved state reproduces the rest.

Arrays (n training rows, p features = len(w), k factors, G groups, nnz non-zeros):

- CSR of the training rows: ``indptr`` int64 (n+1), ``indices`` int32 (nnz, feature ids in
  [0, p)), ``values`` float32 (nnz).
- CSC of the same matrix: ``col_ptr`` int64 (c+1, c <= p columns; ids >= c have no training
  rows), ``row_index`` int32 or int64 (nnz, rows in [0, n), ascending within a column),
  ``col_values`` float32 (nnz). Each (row, feature) at most once (no duplicates).
- ``y`` float64 (n). Parameters, float64, updated in place: ``w0`` (1,), ``w`` (p,), ``V`` (p, k)
  C-contiguous. ``group`` int32 (p,) in [0, G).
- Hyper-parameters, float64, updated in place by MCMC: ``alpha`` (1,), ``w_mu`` (G,),
  ``w_lambda`` (G,), ``v_mu`` (G, k), ``v_lambda`` (G, k) C-contiguous.
- Scratch: ``e`` float64 (n), ``q`` float64 (n). They may be memory-mapped: they are read and
  written by rows in CSR order and by the (ascending) rows of each column in CSC order.

Driving it out of core: ``coordinate_iteration`` only needs the arrays above, which may all be
``np.memmap``s (design, y, e, q); it allocates O(k + G) only. The pieces it calls are public, in
this order, for a learner that wants to split the row passes into chunks: ``residuals`` (rows;
pass the chunk's first global row as ``row_offset`` and ``iteration_key(seed, it,
STREAM_LATENT)``), ``draw_alpha`` (MCMC regression), ``sweep_w0``, ``draw_group_prior`` (w),
``sweep_w`` (columns), ``draw_group_prior`` (each V[:, f]), then per f ``factor_cache`` (rows)
and ``sweep_v`` (columns). Keys are ``iteration_key(seed, it, STREAM_*)`` as in
``coordinate_iteration``. After the iteration, ``predict_rows(..., accumulate=True)`` adds the
sample's test predictions (any chunking of the test rows).

No fastmath, sums in float64 (numba's "numpy" error model: a zero precision gives an infinite
variance, handled as above, not an exception), row and feature ids read as unsigned after one
bounds check per iteration, no Python loop over rows or features: one call of
``coordinate_iteration`` is a whole iteration. Non-finite draws are rejected (the parameter keeps
its value, as in libFM) and counted in the kernels' return value.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from streamfm.learners.memory_hints import CASES_AHEAD, hint_read, hinted_cases
from streamfm.learners.sampling import (
    STREAM_ALPHA,
    STREAM_LATENT,
    STREAM_V,
    STREAM_V_LAMBDA,
    STREAM_V_MU,
    STREAM_W,
    STREAM_W0,
    STREAM_W_LAMBDA,
    STREAM_W_MU,
    gamma,
    iteration_key,
    mills_ratio,
    normal,
    normal_cdf,
    slot_key,
    truncated_normal_left,
)
from streamfm.learners.scoring import predict_csr, score_row
from streamfm.rng import normal_by_id

TASK_REGRESSION = 0
TASK_CLASSIFICATION = 1

__all__ = [
    "LIBFM_HYPER_PRIOR",
    "METHOD_ALS",
    "METHOD_MCMC",
    "CoordinateResult",
    "CoordinateState",
    "conditional_v",
    "conditional_w",
    "conditional_w0",
    "coordinate_iteration",
    "design_arrays",
    "draw_alpha",
    "draw_group_prior",
    "factor_cache",
    "factor_cache_parallel",
    "fit_coordinate",
    "initial_state",
    "numba_threads",
    "predict_rows",
    "residuals",
    "sweep_schedule",
    "sweep_v",
    "sweep_v_parallel",
    "sweep_w",
    "sweep_w0",
    "sweep_w_parallel",
    "threaded_schedule",
]

METHOD_ALS = 0
METHOD_MCMC = 1
#: libFM's hyper-prior (alpha_0, gamma_0, beta_0, mu_0), from fm_learn_mcmc::init.
LIBFM_HYPER_PRIOR = (1.0, 1.0, 1.0, 0.0)
_ALPHA0, _GAMMA0, _BETA0, _MU0 = 0, 1, 2, 3


# --- per-parameter conditionals ------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _posterior(s_he, s_hh, theta, alpha, lam, mu):
    """(mean, variance) of θ's Gaussian conditional from Σ h e and Σ h² (e includes θ's part)."""
    prec = lam + alpha * s_hh
    return (alpha * (s_he + theta * s_hh) + lam * mu) / prec, 1.0 / prec


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _choose(mean, var, sample, slot):
    """The new value: the mean (ALS) or a draw of slot (MCMC); 0 where the precision is 0."""
    if not math.isfinite(var):
        return 0.0
    if sample:
        return mean + math.sqrt(var) * normal(slot)
    return mean


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _gather_w(col_ptr, row_index, col_values, e, i):
    s_he = 0.0
    s_hh = 0.0
    if i < col_ptr.shape[0] - 1:
        for p in range(np.uint64(col_ptr[i]), np.uint64(col_ptr[i + 1])):
            x = np.float64(col_values[p])
            s_he += x * e[np.uint64(row_index[p])]
            s_hh += x * x
    return s_he, s_hh


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _gather_v(col_ptr, row_index, col_values, e, q, i, v):
    s_he = 0.0
    s_hh = 0.0
    if i < col_ptr.shape[0] - 1:
        for p in range(np.uint64(col_ptr[i]), np.uint64(col_ptr[i + 1])):
            r = np.uint64(row_index[p])
            x = np.float64(col_values[p])
            h = x * (q[r] - v * x)
            s_he += h * e[r]
            s_hh += h * h
    return s_he, s_hh


@njit(cache=True, nogil=True, error_model="numpy")
def conditional_w0(e, w0, alpha, lam0, mu0):
    """(mean, variance) of w0's conditional (h = 1 on every row); ALS takes the mean with α = 1."""
    s_he = 0.0
    for r in range(e.shape[0]):
        s_he += e[r]
    return _posterior(s_he, float(e.shape[0]), w0, alpha, lam0, mu0)


@njit(cache=True, nogil=True, error_model="numpy")
def conditional_w(col_ptr, row_index, col_values, e, i, w_i, alpha, lam, mu):
    """(mean, variance) of w_i's conditional (h = x_ri over column i)."""
    s_he, s_hh = _gather_w(col_ptr, row_index, col_values, e, i)
    return _posterior(s_he, s_hh, w_i, alpha, lam, mu)


@njit(cache=True, nogil=True, error_model="numpy")
def conditional_v(col_ptr, row_index, col_values, e, q, i, v_if, alpha, lam, mu):
    """(mean, variance) of v_if's conditional (h = x_ri (q_r - v_if x_ri) over column i; q = q_·f)."""
    s_he, s_hh = _gather_v(col_ptr, row_index, col_values, e, q, i, v_if)
    return _posterior(s_he, s_hh, v_if, alpha, lam, mu)


# --- sweeps --------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def sweep_w0(e, w0, alpha, lam0, mu0, sample, key):
    """Update w0[0] (mean or draw of slot_key(key, 0)) and e. Returns 1 if the draw was rejected."""
    mean, var = conditional_w0(e, w0[0], alpha, lam0, mu0)
    new = _choose(mean, var, sample, slot_key(key, 0))
    if not math.isfinite(new):
        return 1
    d = new - w0[0]
    w0[0] = new
    for r in range(e.shape[0]):
        e[r] -= d
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def sweep_w(col_ptr, row_index, col_values, e, w, group, w_mu, w_lambda, alpha, sample, key):
    """Update every w_i in feature order (draw of slot_key(key, i) for MCMC) and e.

    Returns the number of rejected (non-finite) draws.
    """
    rejected = 0
    for i in range(w.shape[0]):
        rejected += _update_w(col_ptr, row_index, col_values, e, w, group, w_mu, w_lambda, alpha,
                              sample, key, i)  # fmt: skip
    return rejected


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _update_w(col_ptr, row_index, col_values, e, w, group, w_mu, w_lambda, alpha, sample, key, i):
    """Update w_i and e on column i's rows; 1 if the draw was rejected, else 0."""
    g = group[i]
    s_he, s_hh = _gather_w(col_ptr, row_index, col_values, e, i)
    mean, var = _posterior(s_he, s_hh, w[i], alpha, w_lambda[g], w_mu[g])
    new = _choose(mean, var, sample, slot_key(key, i))
    if not math.isfinite(new):
        return 1
    d = new - w[i]
    w[i] = new
    if d != 0.0 and i < col_ptr.shape[0] - 1:
        for p in range(np.uint64(col_ptr[i]), np.uint64(col_ptr[i + 1])):
            e[np.uint64(row_index[p])] -= np.float64(col_values[p]) * d
    return 0


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _factor_row(indptr, indices, values, V, f, r):
    """Σ_i v_if x_ri of CSR row r (its non-zeros in order)."""
    s = 0.0
    for nz in range(np.uint64(indptr[r]), np.uint64(indptr[r + 1])):
        s += V[np.uint64(indices[nz]), f] * np.float64(values[nz])
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def factor_cache(indptr, indices, values, V, f, q):
    """q_r = Σ_i v_if x_ri for every CSR row r (O(nnz), rows in order)."""
    for r in range(indptr.shape[0] - 1):
        q[r] = _factor_row(indptr, indices, values, V, f, r)


@njit(cache=True, nogil=True, error_model="numpy")
def sweep_v(col_ptr, row_index, col_values, e, q, V, f, group, v_mu, v_lambda, alpha, sample, key):
    """Update v_if for every feature i (draw of slot_key(slot_key(key, f), i)), and e and q.

    q must hold q_·f (``factor_cache``) on entry; it does on exit too. Returns the number of
    rejected (non-finite) draws.
    """
    rejected = 0
    key_f = slot_key(key, f)
    for i in range(V.shape[0]):
        rejected += _update_v(col_ptr, row_index, col_values, e, q, V, f, group, v_mu, v_lambda,
                              alpha, sample, key_f, i)  # fmt: skip
    return rejected


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _update_v(col_ptr, row_index, col_values, e, q, V, f, group, v_mu, v_lambda, alpha, sample,
              key_f, i):  # fmt: skip
    """Update v_if, and e and q on column i's rows; 1 if the draw was rejected, else 0."""
    g = group[i]
    v = V[i, f]
    s_he, s_hh = _gather_v(col_ptr, row_index, col_values, e, q, i, v)
    mean, var = _posterior(s_he, s_hh, v, alpha, v_lambda[g, f], v_mu[g, f])
    new = _choose(mean, var, sample, slot_key(key_f, i))
    if not math.isfinite(new):
        return 1
    d = new - v
    V[i, f] = new
    if d != 0.0 and i < col_ptr.shape[0] - 1:
        for p in range(np.uint64(col_ptr[i]), np.uint64(col_ptr[i + 1])):
            r = np.uint64(row_index[p])
            x = np.float64(col_values[p])
            qr = q[r]
            e[r] -= x * (qr - v * x) * d
            q[r] = qr + x * d
    return 0


# --- the same sweeps on several threads, bit for bit -------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def sweep_schedule(col_ptr, row_index, n_rows, n_features):
    """(level_ptr int64 (L+1), features int64 (p)): the features in waves that threads may
    update side by side with exactly the results of the sequential sweep in feature order.

    A feature's wave is one more than the latest wave of an earlier feature sharing a row with
    it (features without rows: wave 0). Features of one wave share no row, so their updates
    touch disjoint e and q and commute; every earlier feature a feature depends on is in an
    earlier wave. Within a wave, features stay in feature order. One-hot groups (a user, an item
    per row) give few waves: ~80 for 116k planted-data features. O(nnz + n + p)."""
    n_cols = col_ptr.shape[0] - 1
    row_wave = np.full(n_rows, -1, dtype=np.int64)
    wave = np.zeros(n_features, dtype=np.int64)
    for i in range(min(n_cols, n_features)):
        latest = -1
        for p in range(np.uint64(col_ptr[i]), np.uint64(col_ptr[i + 1])):
            latest = max(latest, row_wave[np.uint64(row_index[p])])
        wave[i] = latest + 1
        for p in range(np.uint64(col_ptr[i]), np.uint64(col_ptr[i + 1])):
            row_wave[np.uint64(row_index[p])] = latest + 1
    n_waves = wave.max() + 1 if n_features else 0
    level_ptr = np.zeros(n_waves + 1, dtype=np.int64)
    for i in range(n_features):
        level_ptr[wave[i] + 1] += 1
    for w in range(n_waves):
        level_ptr[w + 1] += level_ptr[w]
    features = np.empty(n_features, dtype=np.int64)
    fill = level_ptr[:-1].copy()
    for i in range(n_features):
        features[fill[wave[i]]] = i
        fill[wave[i]] += 1
    return level_ptr, features


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def sweep_w_parallel(level_ptr, features, col_ptr, row_index, col_values, e, w, group, w_mu,
                     w_lambda, alpha, sample, key):  # fmt: skip
    """``sweep_w`` wave by wave (``sweep_schedule``), each wave's features on numba's threads:
    the same result bit for bit."""
    rejected = 0
    for level in range(level_ptr.shape[0] - 1):
        for j in prange(level_ptr[level], level_ptr[level + 1]):
            rejected += _update_w(col_ptr, row_index, col_values, e, w, group, w_mu, w_lambda,
                                  alpha, sample, key, features[j])  # fmt: skip
    return rejected


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def sweep_v_parallel(level_ptr, features, col_ptr, row_index, col_values, e, q, V, f, group, v_mu,
                     v_lambda, alpha, sample, key):  # fmt: skip
    """``sweep_v`` wave by wave on numba's threads: the same result bit for bit."""
    rejected = 0
    key_f = slot_key(key, f)
    for level in range(level_ptr.shape[0] - 1):
        for j in prange(level_ptr[level], level_ptr[level + 1]):
            rejected += _update_v(col_ptr, row_index, col_values, e, q, V, f, group, v_mu,
                                  v_lambda, alpha, sample, key_f, features[j])  # fmt: skip
    return rejected


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def factor_cache_parallel(indptr, indices, values, V, f, q):
    """``factor_cache`` with the rows on numba's threads (each q_r alone: the same values)."""
    for r in prange(indptr.shape[0] - 1):
        q[r] = _factor_row(indptr, indices, values, V, f, r)


# --- hyper-parameters ----------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def draw_alpha(e, hyper_prior, key):
    """A draw of the noise precision α ~ Gamma((α0 + n)/2, rate (γ0 + Σ e²)/2) (slot_key(key, 0))."""
    ss = 0.0
    for r in range(e.shape[0]):
        ss += e[r] * e[r]
    shape = 0.5 * (hyper_prior[_ALPHA0] + e.shape[0])
    rate = 0.5 * (hyper_prior[_GAMMA0] + ss)
    return gamma(shape, slot_key(key, 0)) / rate


@njit(cache=True, nogil=True, error_model="numpy")
def draw_group_prior(theta, group, mu, lam, hyper_prior, key_mu, key_lambda):
    """Draw λ[g] then μ[g] for every group g (in place) given the parameters theta (p,).

    λ_g ~ Gamma((α0 + n_g + 1)/2, rate (γ0 + β0 (μ_g - μ0)² + Σ_{i in g} (θ_i - μ_g)²)/2) with the
    current μ_g, then μ_g ~ N((Σ_{i in g} θ_i + β0 μ0)/(n_g + β0), 1/((n_g + β0) λ_g)) with the
    new λ_g (libFM's order). n_g counts all features of group g, with or without training rows.
    Draws: slot_key(key_lambda, g) and slot_key(key_mu, g). Non-finite draws are rejected (the
    value is kept); returns their number.
    """
    alpha0 = hyper_prior[_ALPHA0]
    gamma0 = hyper_prior[_GAMMA0]
    beta0 = hyper_prior[_BETA0]
    mu0 = hyper_prior[_MU0]
    n_groups = mu.shape[0]
    count = np.zeros(n_groups, dtype=np.float64)
    sum_sq = np.zeros(n_groups, dtype=np.float64)
    total = np.zeros(n_groups, dtype=np.float64)
    for i in range(theta.shape[0]):
        g = group[i]
        d = theta[i] - mu[g]
        count[g] += 1.0
        sum_sq[g] += d * d
        total[g] += theta[i]
    rejected = 0
    for g in range(n_groups):
        dm = mu[g] - mu0
        rate = 0.5 * (gamma0 + beta0 * dm * dm + sum_sq[g])
        new = gamma(0.5 * (alpha0 + count[g] + 1.0), slot_key(key_lambda, g)) / rate
        if math.isfinite(new):
            lam[g] = new
        else:
            rejected += 1
        prec = (count[g] + beta0) * lam[g]
        new = (total[g] + beta0 * mu0) / (count[g] + beta0) + normal(
            slot_key(key_mu, g)
        ) / math.sqrt(prec)
        if math.isfinite(new):
            mu[g] = new
        else:
            rejected += 1
    return rejected


# --- rows: scores, residuals and latent targets --------------------------------------------------


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _score_row(indptr, indices, values, r, w0, w, V, sums, sqs):
    """ŷ of CSR row r by the shared row scorer; ids >= len(w) are ignored."""
    lin, inter, sq = score_row(
        np.uint64(indptr[r]), np.uint64(indptr[r + 1]), indices, values, w0, w, V,
        np.uint32(w.shape[0]), sums, sqs,
    )  # fmt: skip
    return lin + 0.5 * (inter - sq)


@njit(cache=True, nogil=True, error_model="numpy")
def residuals(indptr, indices, values, y, w0, w, V, task, sample, key, row_offset, e):
    """e_r = t_r - ŷ_r for every CSR row r.

    Regression: t = y. Classification: t is the latent target of row_offset + r: a draw (sample)
    of N(ŷ, 1) truncated to > 0 for y > 0 and < 0 otherwise (slot_key(key, row_offset + r)), or
    its expectation (not sample). Only t - ŷ is stored.
    """
    k = V.shape[1]
    sums = np.empty(k, dtype=np.float64)
    sqs = np.empty(k, dtype=np.float64)
    n = indptr.shape[0] - 1
    hinted = hinted_cases(V, n)
    for r in range(n):
        if r + CASES_AHEAD < hinted:  # hint a later row's memory (learners.memory_hints)
            for nz in range(indptr[r + CASES_AHEAD], indptr[r + CASES_AHEAD + 1]):
                hint_read(V, np.uint32(indices[nz]))
                hint_read(w, np.uint32(indices[nz]))
        p = _score_row(indptr, indices, values, r, w0, w, V, sums, sqs)
        if task == TASK_CLASSIFICATION:
            # positive: t = ŷ + z with z ~ N(0,1) | z > -ŷ;  negative: t = ŷ - z, z | z > ŷ
            a = -p if y[r] > 0.0 else p
            if sample:
                z = truncated_normal_left(a, slot_key(key, row_offset + r))
            else:
                z = mills_ratio(a)
            e[r] = z if y[r] > 0.0 else -z
        else:
            e[r] = y[r] - p


@njit(cache=True, nogil=True, error_model="numpy")
def predict_rows(indptr, indices, values, w0, w, V, task, clip_lo, clip_hi, accumulate, out):
    """Predictions of CSR rows into out (float64, n): written, or added when accumulate.

    Regression: ŷ clipped to [clip_lo, clip_hi] when clip_lo <= clip_hi (libFM clips to the
    training targets' range). Classification: Φ(ŷ). MCMC's prediction is the running sum over
    samples divided by their number. Ids >= len(w) are ignored.
    """
    k = V.shape[1]
    sums = np.empty(k, dtype=np.float64)
    sqs = np.empty(k, dtype=np.float64)
    clip = clip_lo <= clip_hi
    n = indptr.shape[0] - 1
    hinted = hinted_cases(V, n)
    for r in range(n):
        if r + CASES_AHEAD < hinted:  # hint a later row's memory (learners.memory_hints)
            for nz in range(indptr[r + CASES_AHEAD], indptr[r + CASES_AHEAD + 1]):
                hint_read(V, np.uint32(indices[nz]))
                hint_read(w, np.uint32(indices[nz]))
        p = _score_row(indptr, indices, values, r, w0, w, V, sums, sqs)
        if task == TASK_CLASSIFICATION:
            p = normal_cdf(p)
        elif clip:
            p = min(max(p, clip_lo), clip_hi)
        if accumulate:
            out[r] += p
        else:
            out[r] = p


# --- one iteration -------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _check_inputs(indptr, indices, col_ptr, row_index, group, V, v_mu, v_lambda, w_mu, e, q):
    """Everything the unchecked (unsigned) indexing of the sweeps relies on: O(n + p + nnz)."""
    n_rows = e.shape[0]
    n_params = V.shape[0]
    n_groups = w_mu.shape[0]
    if indptr.shape[0] != n_rows + 1 or q.shape[0] != n_rows:
        raise ValueError("coordinate_iteration: CSR rows, len(y), len(e), len(q) differ")
    if col_ptr.shape[0] - 1 > n_params or group.shape[0] != n_params:
        raise ValueError("coordinate_iteration: more CSC columns than features, or bad len(group)")
    if v_mu.shape[0] != n_groups or v_lambda.shape[0] != n_groups:
        raise ValueError("coordinate_iteration: hyper-parameters of different numbers of groups")
    if v_mu.shape[1] != V.shape[1] or v_lambda.shape[1] != V.shape[1]:
        raise ValueError("coordinate_iteration: v_mu / v_lambda are not (groups, k)")
    nnz = indices.shape[0]
    if row_index.shape[0] != nnz or indptr[0] != 0 or col_ptr[0] != 0:
        raise ValueError("coordinate_iteration: CSR and CSC differ in nnz, or bad pointers")
    if indptr[n_rows] != nnz or col_ptr[col_ptr.shape[0] - 1] != nnz:
        raise ValueError("coordinate_iteration: CSR and CSC pointers do not end at nnz")
    for r in range(n_rows):
        if indptr[r + 1] < indptr[r]:
            raise ValueError("coordinate_iteration: CSR indptr decreases")
    for i in range(col_ptr.shape[0] - 1):
        if col_ptr[i + 1] < col_ptr[i]:
            raise ValueError("coordinate_iteration: CSC col_ptr decreases")
    for i in range(n_params):
        if group[i] < 0 or group[i] >= n_groups:
            raise IndexError("coordinate_iteration: a group id is negative or >= len(w_mu)")
    for nz in range(nnz):
        if indices[nz] < 0 or indices[nz] >= n_params:
            raise IndexError("coordinate_iteration: a CSR feature id is negative or >= len(w)")
    for nz in range(nnz):
        if row_index[nz] < 0 or row_index[nz] >= n_rows:
            raise IndexError("coordinate_iteration: a CSC row number is negative or >= len(y)")


@njit(cache=True, nogil=True, error_model="numpy")
def coordinate_iteration(
    indptr,
    indices,
    values,
    col_ptr,
    row_index,
    col_values,
    y,
    w0,
    w,
    V,
    group,
    alpha,
    w_mu,
    w_lambda,
    v_mu,
    v_lambda,
    lambda0,
    hyper_prior,
    method,
    task,
    seed,
    iteration,
    e,
    q,
    level_ptr,
    features,
):
    """One ALS or MCMC iteration over all parameters (and, MCMC, hyper-parameters), in place.

    See the module docstring for arrays and order. ``method``: METHOD_ALS or METHOD_MCMC; ``task``:
    TASK_REGRESSION or TASK_CLASSIFICATION; ``seed``, ``iteration``: ints >= 0 that key every
    draw; ``lambda0``: w0's prior precision (ALS: its regularisation). ``e`` and ``q`` are scratch
    (n,); on return e holds t - ŷ for the new parameters (t: y, or this iteration's latent
    targets). ``level_ptr``, ``features``: a ``sweep_schedule`` of this design, for the w and V
    sweeps (and the factor caches) on numba's threads with the same result; empty arrays (0,):
    one thread. Returns the number of rejected non-finite draws (0 normally).
    """
    n = e.shape[0]
    threaded = level_ptr.shape[0] > 0
    if threaded and (features.shape[0] != w.shape[0] or level_ptr[-1] != w.shape[0]):
        raise ValueError("coordinate_iteration: the sweep schedule is not of these features")
    k = V.shape[1]
    if y.shape[0] != n or w.shape[0] != V.shape[0] or w_lambda.shape[0] != w_mu.shape[0]:
        raise ValueError("coordinate_iteration: len(y) != len(e), len(w) != len(V) or bad w_lambda")
    _check_inputs(indptr, indices, col_ptr, row_index, group, V, v_mu, v_lambda, w_mu, e, q)
    sample = method == METHOD_MCMC
    residuals(
        indptr,
        indices,
        values,
        y,
        w0,
        w,
        V,
        task,
        sample,
        iteration_key(seed, iteration, STREAM_LATENT),
        0,
        e,
    )
    if task == TASK_CLASSIFICATION or not sample:
        alpha[0] = 1.0
    else:
        a = draw_alpha(e, hyper_prior, iteration_key(seed, iteration, STREAM_ALPHA))
        if math.isfinite(a):
            alpha[0] = a
    a = alpha[0]
    rejected = sweep_w0(e, w0, a, lambda0, 0.0, sample, iteration_key(seed, iteration, STREAM_W0))
    if sample:
        rejected += draw_group_prior(
            w,
            group,
            w_mu,
            w_lambda,
            hyper_prior,
            iteration_key(seed, iteration, STREAM_W_MU),
            iteration_key(seed, iteration, STREAM_W_LAMBDA),
        )
    key_w = iteration_key(seed, iteration, STREAM_W)
    if threaded:
        rejected += sweep_w_parallel(level_ptr, features, col_ptr, row_index, col_values, e, w,
                                     group, w_mu, w_lambda, a, sample, key_w)  # fmt: skip
    else:
        rejected += sweep_w(col_ptr, row_index, col_values, e, w, group, w_mu, w_lambda, a,
                            sample, key_w)  # fmt: skip
    if sample:
        key_mu = iteration_key(seed, iteration, STREAM_V_MU)
        key_lambda = iteration_key(seed, iteration, STREAM_V_LAMBDA)
        for f in range(k):
            rejected += draw_group_prior(
                V[:, f],
                group,
                v_mu[:, f],
                v_lambda[:, f],
                hyper_prior,
                slot_key(key_mu, f),
                slot_key(key_lambda, f),
            )
    key_v = iteration_key(seed, iteration, STREAM_V)
    for f in range(k):
        if threaded:
            factor_cache_parallel(indptr, indices, values, V, f, q)
            rejected += sweep_v_parallel(level_ptr, features, col_ptr, row_index, col_values, e,
                                         q, V, f, group, v_mu, v_lambda, a, sample, key_v)  # fmt: skip
        else:
            factor_cache(indptr, indices, values, V, f, q)
            rejected += sweep_v(col_ptr, row_index, col_values, e, q, V, f, group, v_mu,
                                v_lambda, a, sample, key_v)  # fmt: skip
    return rejected


# --- in-memory driver ----------------------------------------------------------------------------

METHODS = {"als": METHOD_ALS, "mcmc": METHOD_MCMC}
TASKS = {"regression": TASK_REGRESSION, "classification": TASK_CLASSIFICATION}
_STREAM_INIT_V = 0  # as FMParams: same seed, same initial V
_STREAM_INIT_W = 1


@dataclass
class CoordinateState:
    """Everything that decides the iterations still to come, at an iteration boundary.

    Together with the fixed inputs (training data and targets, test rows, method, task, seed,
    groups, lambda0, hyper_prior, burn_in, clip range), this is all a checkpoint needs: resuming
    from it reproduces an uninterrupted run bit for bit. Per-row arrays are *not* state: the
    residuals e (and the probit latent targets, which are keyed by (seed, iteration, row)) are
    recomputed from the parameters at the start of each iteration, and q from V for each factor.

    - ``iteration``: int, the next iteration to run (iterations done so far).
    - ``w0`` (1,), ``w`` (p,), ``V`` (p, k): float64 parameters (the last sample, for MCMC).
    - ``alpha`` (1,), ``w_mu`` (G,), ``w_lambda`` (G,), ``v_mu`` (G, k), ``v_lambda`` (G, k):
      float64 hyper-parameters. MCMC draws them (their initial values barely matter: λ is drawn
      before it is used; libFM starts at α = 1, μ = 0, λ = -regular). ALS reads ``w_lambda``,
      ``v_lambda`` as the fixed regularisation and needs ``w_mu`` = ``v_mu`` = 0, α = 1.
    - ``pred_sum`` (n_test,) float64 or None: MCMC's sum of test predictions (clipped ŷ, or Φ(ŷ))
      over the samples of iterations >= burn_in; ``n_pred``: int, how many samples it holds.
    """

    iteration: int
    w0: np.ndarray
    w: np.ndarray
    V: np.ndarray
    alpha: np.ndarray
    w_mu: np.ndarray
    w_lambda: np.ndarray
    v_mu: np.ndarray
    v_lambda: np.ndarray
    pred_sum: np.ndarray | None = None
    n_pred: int = 0

    def copy(self) -> CoordinateState:
        def dup(a):
            return None if a is None else np.array(a, copy=True)

        return CoordinateState(
            self.iteration,
            *(dup(a) for a in (self.w0, self.w, self.V, self.alpha, self.w_mu, self.w_lambda)),
            dup(self.v_mu),
            dup(self.v_lambda),
            dup(self.pred_sum),
            self.n_pred,
        )


@dataclass
class CoordinateResult:
    """What ``fit_coordinate`` returns.

    ``history``: one dict per iteration run: ``iteration``, ``seconds`` (the
    ``coordinate_iteration`` call), ``seconds_predict`` (scoring the test rows), ``alpha``,
    ``rejected`` (non-finite draws), ``train`` (RMSE of the current parameters, unclipped; AUC for
    classification) and ``test`` (RMSE / AUC of the current test prediction: MCMC's running
    average once iteration >= burn_in, else the current sample) when there are test rows.
    ``test_pred``: the final test prediction (MCMC: average over ``state.n_pred`` samples; ALS:
    current parameters), clipped to the training targets' range (regression, ``clip``) or Φ(ŷ).
    """

    state: CoordinateState
    history: list[dict] = field(default_factory=list)
    test_pred: np.ndarray | None = None

    @property
    def w0(self) -> float:
        return float(self.state.w0[0])

    @property
    def w(self) -> np.ndarray:
        return self.state.w

    @property
    def V(self) -> np.ndarray:
        return self.state.V


def _csr_arrays(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(X.indptr, dtype=np.int64),
        np.ascontiguousarray(X.indices, dtype=np.int32),
        np.ascontiguousarray(X.data, dtype=np.float32),
    )


def design_arrays(X) -> tuple[np.ndarray, ...]:
    """CSR and CSC arrays of a sparse matrix for ``coordinate_iteration``.

    Returns (indptr int64, indices int32, values float32, col_ptr int64, row_index int32 (int64
    beyond 2^31 - 1 rows), col_values float32), with duplicate entries summed and indices sorted.
    """
    import scipy.sparse as sp  # here: the training loop's learners never need scipy

    X = sp.csr_matrix(X, copy=True)
    X.sum_duplicates()
    X.sort_indices()
    C = X.tocsc()
    C.sort_indices()
    rows = np.int32 if X.shape[0] < 2**31 else np.int64
    return (
        *_csr_arrays(X),
        np.ascontiguousarray(C.indptr, dtype=np.int64),
        np.ascontiguousarray(C.indices, dtype=rows),
        np.ascontiguousarray(C.data, dtype=np.float32),
    )


def _by_group(value, n_groups: int, k: int | None) -> np.ndarray:
    shape = (n_groups,) if k is None else (n_groups, k)
    a = np.asarray(value, dtype=np.float64)
    if k is not None and a.ndim == 1:
        a = a[:, None]
    return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.float64).copy()


def initial_state(
    n_features: int,
    k: int,
    n_groups: int,
    *,
    init_std: float = 0.1,
    seed: int = 0,
    reg: tuple = (0.0, 0.0, 0.0),
    n_test: int = 0,
) -> CoordinateState:
    """State before iteration 0, as libFM starts: w0 = 0, w and V ~ N(0, init_std²) (counter-based
    by feature id, V as ``FMParams``), α = 1, μ = 0, λ_w = reg[1], λ_v = reg[2] (scalars, (G,) or
    (G, k) for λ_v)."""
    ids = np.arange(n_features)
    return CoordinateState(
        iteration=0,
        w0=np.zeros(1),
        w=init_std * normal_by_id(seed, ids, 1, _STREAM_INIT_W)[:, 0],
        V=np.ascontiguousarray(init_std * normal_by_id(seed, ids, k, _STREAM_INIT_V)),
        alpha=np.ones(1),
        w_mu=np.zeros(n_groups),
        w_lambda=_by_group(reg[1], n_groups, None),
        v_mu=np.zeros((n_groups, k)),
        v_lambda=_by_group(reg[2], n_groups, k),
        pred_sum=np.zeros(n_test) if n_test else None,
        n_pred=0,
    )


def _metric(task: int, y: np.ndarray, pred: np.ndarray) -> float:
    if task == TASK_CLASSIFICATION:
        from streamfm.metrics import AUC

        m = AUC()
        m.update((y > 0).astype(np.float64), pred)
        return m.value()
    return float(np.sqrt(np.mean(np.square(pred - y))))


NO_SCHEDULE = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def threaded_schedule(col_ptr, row_index, n_rows: int, n_features: int, threads: int) -> tuple:
    """The (level_ptr, features) arguments of ``coordinate_iteration``: a ``sweep_schedule`` for
    threads > 1, else empty arrays (one thread)."""
    if threads <= 1:
        return NO_SCHEDULE
    return sweep_schedule(col_ptr, row_index, n_rows, n_features)


@contextmanager
def numba_threads(threads: int):
    """numba's parallel loops on `threads` threads (at most the cores numba found) for a block."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def fit_coordinate(
    X,
    y,
    *,
    method: str = "mcmc",
    task: str = "regression",
    k: int = 8,
    n_iter: int = 50,
    burn_in: int = 0,
    init_std: float = 0.1,
    seed: int = 0,
    groups=None,
    reg: tuple = (0.0, 0.0, 0.0),
    hyper_prior: tuple = LIBFM_HYPER_PRIOR,
    X_test=None,
    y_test=None,
    clip: bool = True,
    state: CoordinateState | None = None,
    metrics: bool = True,
    threads: int = 1,
) -> CoordinateResult:
    """Fit an FM by ALS or MCMC on in-memory sparse rows (for tests and benchmarks).

    ``X``: (n, p) scipy sparse, ``y``: (n,) targets (classification: y > 0 is the positive
    class). ``groups``: (p,) int feature groups (default all 0). ``reg`` = (λ0, λ_w, λ_v): ALS's
    regularisation (λ_w, λ_v scalars or per group); for MCMC λ0 is w0's prior precision (libFM's
    reg0; 0 = flat) and λ_w, λ_v only initial values. Runs iterations ``state.iteration`` ..
    ``n_iter - 1`` (from ``state``, a ``CoordinateState`` saved earlier, or from
    ``initial_state``). MCMC test predictions average the samples of iterations >= ``burn_in``
    (libFM: burn_in 0). ``clip``: clip regression test predictions to the training targets' range
    (libFM does). ``metrics``: compute train/test metrics each iteration (outside the timings).
    ``threads`` > 1: the sweeps on that many threads, with the same results (``sweep_schedule``).
    """
    if method not in METHODS or task not in TASKS:
        raise ValueError(f"method must be in {list(METHODS)}, task in {list(TASKS)}")
    m, t = METHODS[method], TASKS[task]
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    n, p = X.shape
    y = np.ascontiguousarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if groups is None:
        groups = np.zeros(p, dtype=np.int32)
    groups = np.ascontiguousarray(groups, dtype=np.int32)
    if groups.shape != (p,) or (p and groups.min() < 0):
        raise ValueError("groups must be (n_features,) non-negative ints")
    n_groups = int(groups.max(initial=0)) + 1
    arrays = design_arrays(X)
    test = None
    if X_test is not None:
        test = _csr_arrays(sp.csr_matrix(X_test))
    n_test = 0 if test is None else test[0].shape[0] - 1
    if state is None:
        state = initial_state(
            p, k, n_groups, init_std=init_std, seed=seed, reg=reg, n_test=n_test if m else 0
        )
    else:
        state = state.copy()
    s = state
    if m == METHOD_MCMC and n_test and s.pred_sum is None:
        s.pred_sum = np.zeros(n_test)
    if s.V.shape != (p, k) or s.w_mu.shape != (n_groups,):
        raise ValueError("state does not match the data (n_features, k or groups)")
    hp = np.asarray(hyper_prior, dtype=np.float64)
    lo, hi = (float(y.min()), float(y.max())) if clip and t == TASK_REGRESSION and n else (1.0, 0.0)
    e = np.empty(n)
    q = np.empty(n)
    buf = np.empty(n_test)
    schedule = threaded_schedule(arrays[3], arrays[4], n, p, threads)
    result = CoordinateResult(state=s)
    for it in range(s.iteration, n_iter):
        t0 = time.perf_counter()
        with numba_threads(threads):
            rejected = coordinate_iteration(
                *arrays, y, s.w0, s.w, s.V, groups, s.alpha, s.w_mu, s.w_lambda, s.v_mu,
                s.v_lambda, float(reg[0]), hp, m, t, seed, it, e, q, *schedule,
            )  # fmt: skip
        t1 = time.perf_counter()
        if test is not None:
            averaging = m == METHOD_MCMC and it >= burn_in
            if averaging:
                predict_rows(*test, s.w0, s.w, s.V, t, lo, hi, True, s.pred_sum)
                s.n_pred += 1
            else:
                predict_rows(*test, s.w0, s.w, s.V, t, lo, hi, False, buf)
        t2 = time.perf_counter()
        s.iteration = it + 1
        row = {
            "iteration": it,
            "seconds": t1 - t0,
            "seconds_predict": t2 - t1,
            "alpha": float(s.alpha[0]),
            "rejected": int(rejected),
        }
        if metrics:
            if t == TASK_REGRESSION:
                row["train"] = float(np.sqrt(np.mean(np.square(e)))) if n else math.nan
            else:
                raw = np.empty(n)
                predict_csr(*arrays[:3], s.w0, s.w, s.V, p, raw)
                row["train"] = _metric(t, y, raw)
            if test is not None and y_test is not None:
                cur = s.pred_sum / s.n_pred if averaging else buf
                row["test"] = _metric(t, np.asarray(y_test, dtype=np.float64), cur)
        result.history.append(row)
    if test is not None:
        if m == METHOD_MCMC and s.n_pred:
            result.test_pred = s.pred_sum / s.n_pred
        else:
            result.test_pred = np.empty(n_test)
            predict_rows(*test, s.w0, s.w, s.V, t, lo, hi, False, result.test_pred)
    return result
