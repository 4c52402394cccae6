"""Per-case SGD and AdaGrad (libFM's `-method sgd`, xLearn's default): the kernel and its learner.

The kernel is one loop over cases composed of the shared row scorer (`scoring.score_row`), a loss
(`losses`) and a step rule (`steps`), passed in as jitted functions and inlined, so that every
combination compiles to one tight loop; `KERNELS` holds the compiled combinations (numba caches
each on disk, and only the one a run uses is loaded).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from numba import njit, types
from numba.extending import overload

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.errors import DivergenceError
from streamfm.learners import losses, steps
from streamfm.learners.base import LearnerHooks
from streamfm.learners.memory_hints import CASES_AHEAD, hint_read, hinted_cases
from streamfm.learners.params import FMParams
from streamfm.learners.scoring import fixed_cell, predict_csr, score_cells

Task = Literal["regression", "classification"]
LOSS_OF_TASK = {"regression": "squared", "classification": "logistic"}


@njit(cache=True, nogil=True, inline="always")
def _unit_weight(weights, r):
    return 1.0


@njit(cache=True, nogil=True, inline="always")
def _case_weight(weights, r):
    return weights[r]


@njit(nogil=True, inline="always", error_model="numpy")
def _sgd_pass(
    rows, y, order, params, state, regs, rate, target_range, clip, out, shared,
    output, gradient, observe, step_linear, step_factor,
):  # fmt: skip
    """`_weighted_pass` with every case of weight 1 (the constant folds away: the unweighted
    kernels compile to the loop they were before weights existed)."""
    return _weighted_pass(
        rows, y, y, order, params, state, regs, rate, target_range, clip, out, shared,
        _unit_weight, output, gradient, observe, step_linear, step_factor,
    )  # fmt: skip


@njit(nogil=True, inline="always", error_model="numpy")
def _weighted_pass(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
    weight_of, output, gradient, observe, step_linear, step_factor,
):  # fmt: skip
    """`_layout_pass` over the rows of a CSR chunk, rows = (indptr, indices, values)."""
    return _layout_pass(
        rows, _csr_span, _csr_cell, csr_top, y, weights, order, params, state, regs, rate,
        target_range, clip, out, shared, weight_of, output, gradient, observe, step_linear,
        step_factor,
    )  # fmt: skip


@njit(nogil=True, inline="always", error_model="numpy")
def _fixed_pass(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
    weight_of, output, gradient, observe, step_linear, step_factor,
):  # fmt: skip
    """`_layout_pass` over a fixed-width chunk, rows = (idx,) with idx (n, fields) int32: every
    row has `fields` non-zeros of value 1.0 (see `fixed_width`)."""
    return _layout_pass(
        rows, _fixed_span, fixed_cell, _fixed_top, y, weights, order, params, state, regs, rate,
        target_range, clip, out, shared, weight_of, output, gradient, observe, step_linear,
        step_factor,
    )  # fmt: skip


# --- row layouts: where a row's non-zeros are (span), what they are (cell), the largest id (top)


@njit(nogil=True, inline="always")
def _csr_span(rows, r):
    indptr = rows[0]
    return np.uint64(indptr[r]), np.uint64(indptr[r + 1])


@njit(nogil=True, inline="always")
def _csr_cell(rows, r, nz):
    return rows[1][nz], rows[2][nz]


@njit(nogil=True, inline="always")
def csr_top(rows):
    """(largest id read as unsigned, whether there is any id): negative ids count as huge."""
    indices = rows[1]
    top = np.uint32(0)
    for nz in range(indices.shape[0]):
        top = max(top, np.uint32(indices[nz]))
    return top, indices.shape[0] > 0


@njit(nogil=True, inline="always")
def _fixed_span(rows, r):
    return np.uint64(0), np.uint64(rows[0].shape[1])


@njit(nogil=True, inline="always")
def _fixed_top(rows):
    # One flat loop, which LLVM vectorises (a loop over rows and fields took 3-7% of an MF pass
    # at k 8, this one under 1%, side by side); ravel is a view of the C-contiguous idx that
    # chunk_rows makes.
    ids = np.ravel(rows[0])
    top = np.uint32(0)
    for q in range(ids.shape[0]):
        top = max(top, np.uint32(ids[q]))
    return top, ids.shape[0] > 0


# --- the cases of a pass: the rows `order` (int64 row numbers), or None: every row in turn


def case_count(order, n_rows):
    """How many cases a pass over `order` learns: len(order), or n_rows if order is None."""
    return n_rows if order is None else order.shape[0]


def case_row(order, ii):
    """The row of case ii: order[ii], or ii if order is None."""
    return ii if order is None else order[ii]


# Chosen by type when a kernel compiles, so that order=None leaves no load of order[ii] in the
# loop (fixed width, k 8: 1.09x the cases/s of order = arange(n) at 2 fields, 1.04x at 10,
# 1.02x at 100; side by side).
@overload(case_count, inline="always")
def _case_count(order, n_rows):
    if isinstance(order, types.NoneType):
        return lambda order, n_rows: n_rows
    return lambda order, n_rows: order.shape[0]


@overload(case_row, inline="always")
def _case_row(order, ii):
    if isinstance(order, types.NoneType):
        return lambda order, ii: ii
    return lambda order, ii: order[ii]


@njit(cache=True, nogil=True)
def fixed_width(indptr, values):
    """The number of non-zeros of every row if all rows have the same number (>= 1) and every
    value is 1.0 (one-hot fields, crosses, MF), else -1: the chunk then learns through the
    fixed-width kernels (`FIXED_KERNELS`). One pass over indptr and values, no temporaries."""
    n = indptr.shape[0] - 1
    if n <= 0:
        return -1
    width = indptr[1] - indptr[0]
    if width <= 0:
        return -1
    for r in range(1, n):
        if indptr[r + 1] - indptr[r] != width:
            return -1
    for nz in range(indptr[0], indptr[n]):
        if values[nz] != 1.0:
            return -1
    return width


@njit(nogil=True, inline="always", error_model="numpy")
def _layout_pass(
    rows, span, cell, top_id, y, weights, order, params, state, regs, rate, target_range, clip,
    out, shared, weight_of, output, gradient, observe, step_linear, step_factor,
):  # fmt: skip
    """One pass of per-case updates over the rows `order` (int64 row numbers; None: every row of
    the chunk, len(y) of them, in turn) of a chunk.

    rows: the chunk in a row layout read by span(rows, r) -> [start, stop) of row r's non-zeros,
    cell(rows, r, nz) -> (id, x) and top_id(rows) -> (largest id as unsigned, any ids): CSR
    (indptr, indices, values), or fixed width (idx,) whose x is the constant 1.0, so that its
    products by x vanish at compile time and leave the very same operations in the same order
    (bit-identical results, tests/test_fixed_width.py).
    params = (w0, w, V) float32, updated in place;
    state = the step rule's per-coordinate arrays shaped like params (AdaGrad: sums of squared
    gradients; SGD: unused); regs = (reg0, reg_w_by_group, reg_v_by_group, group) with group[j]
    the feature group of id j; rate = (lr0, decay, power_t, t0), t0 cases learnt before this call;
    shared: whether other threads update params meanwhile (Hogwild; only the memory hints heed it);
    output, gradient, observe: the loss's jitted functions; step_linear, step_factor: the step rule's;
    weight_of(weights, r): the weight s of row r (float64 >= 0).

    For each case: score it, out[row] = loss output (the prediction made before the update), then
    step w0, w and V of its features along the gradient of the loss plus L2 terms reg·θ (reg0 for
    w0, by each feature's group for w and V; touched coordinates only) — libFM's update. A case of
    weight s steps along s times that gradient (its loss and L2 terms count s times); a case of
    weight 0 changes nothing, not even the range of targets seen (the schedule still counts it).
    Returns -1, or the position in `order` of the first case whose prediction or gradient was not
    finite (parameters are then as they were before it). Raises IndexError, before any update,
    if a feature id is negative or >= len(w).
    """
    w0, w, V = params
    acc_w0, acc_w, acc_V = state
    reg0, reg_w_by_group, reg_v_by_group, group = regs
    lr0, decay, power_t, t0 = rate
    k = V.shape[1]
    n_params = w.shape[0]
    top, any_id = top_id(rows)
    if any_id and top >= n_params:
        raise IndexError("sgd kernel: a feature id is negative or beyond the parameter arrays")
    limit = np.uint32(n_params)
    sums = np.zeros(k, dtype=np.float64)
    sqs = np.zeros(k, dtype=np.float64)
    with_acc = acc_V.shape[0] == V.shape[0]  # SGD's are empty
    n_cases = case_count(order, y.shape[0])
    # Hint the memory of a later case (learners.memory_hints) by hinted_cases' rule, and on a
    # model of any size when other threads update it (shared): under Hogwild threads the
    # core's cache is no shelter, as half the rows a case reads were last written by the other
    # core (2 threads at 10,000 features: 1.2-1.5x -> 1.5-1.8x one thread's cases/s). One
    # thread on a model that stays in its cache gains nothing from them and pays their
    # instructions (10,000 features, k 8, fixed width: 2 fields 0.98x, 10 fields 0.95x,
    # 100 fields 0.92x the cases/s without them, side by side).
    hinted = n_cases if shared else hinted_cases(V, n_cases)
    for ii in range(n_cases):
        ahead = ii + CASES_AHEAD
        if ahead < hinted:
            r_ahead = case_row(order, ahead)
            start_ahead, stop_ahead = span(rows, r_ahead)
            for nz in range(start_ahead, stop_ahead):
                j_ahead, _x = cell(rows, r_ahead, nz)
                hint_read(V, np.uint32(j_ahead))
                hint_read(w, np.uint32(j_ahead))
                if with_acc:  # AdaGrad's sums, read and written with them
                    hint_read(acc_V, np.uint32(j_ahead))
                    hint_read(acc_w, np.uint32(j_ahead))
        r = case_row(order, ii)
        start, stop = span(rows, r)
        p, inter, sq = score_cells(rows, cell, r, start, stop, w0, w, V, limit, sums, sqs)
        score = p + 0.5 * (inter - sq)
        yr = y[r]
        pred = output(score, target_range, clip)
        out[r] = pred
        g = gradient(pred, yr)
        if not (math.isfinite(score) and math.isfinite(g) and math.isfinite(inter)):
            return ii
        s = weight_of(weights, r)
        if s == 0.0:
            continue
        observe(yr, target_range)
        lr = steps.learning_rate(lr0, decay, power_t, t0 + ii)
        # The weight multiplies the gradient and the L2 strengths (s = 1: exactly the same numbers).
        g = g * s
        v0 = w0[0]
        step_linear(w0, acc_w0, 0, v0, g + reg0 * s * v0, lr)
        for nz in range(start, stop):
            j, x = cell(rows, r, nz)
            j = np.uint32(j)
            gi = group[j]
            rv = reg_v_by_group[gi] * s
            wj = w[j]
            step_linear(w, acc_w, j, wj, g * x + reg_w_by_group[gi] * s * wj, lr)
            gx = g * x
            gxx = gx * x
            for f in range(k):
                v = V[j, f]
                step_factor(V, acc_V, j, f, v, gx * sums[f] - gxx * v + rv * v, lr)
    return -1


# --- the compiled combinations (module-level, so that numba can cache each on disk)


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_squared(rows, y, order, params, state, regs, rate, target_range, clip, out, shared):
    return _sgd_pass(
        rows, y, order, params, state, regs, rate, target_range, clip, out, shared,
        losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_logistic(rows, y, order, params, state, regs, rate, target_range, clip, out, shared):
    return _sgd_pass(
        rows, y, order, params, state, regs, rate, target_range, clip, out, shared,
        losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_squared(rows, y, order, params, state, regs, rate, target_range, clip, out, shared):
    return _sgd_pass(
        rows, y, order, params, state, regs, rate, target_range, clip, out, shared,
        losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_logistic(rows, y, order, params, state, regs, rate, target_range, clip, out, shared):
    return _sgd_pass(
        rows, y, order, params, state, regs, rate, target_range, clip, out, shared,
        losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


KERNELS = {
    ("sgd", "squared"): sgd_squared,
    ("sgd", "logistic"): sgd_logistic,
    ("adagrad", "squared"): adagrad_squared,
    ("adagrad", "logistic"): adagrad_logistic,
}


# --- the same with a weight per case (the kernels' `weights`: float64, one per row of the chunk)


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_squared_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _weighted_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_logistic_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _weighted_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_squared_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _weighted_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_logistic_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _weighted_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


WEIGHTED_KERNELS = {
    ("sgd", "squared"): sgd_squared_weighted,
    ("sgd", "logistic"): sgd_logistic_weighted,
    ("adagrad", "squared"): adagrad_squared_weighted,
    ("adagrad", "logistic"): adagrad_logistic_weighted,
}


# --- the fixed-width layout (rows = (idx,), idx (n, fields) int32, every x 1.0): the same
# combinations, unweighted and weighted


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_squared_fixed(rows, y, order, params, state, regs, rate, target_range, clip, out, shared):
    return _fixed_pass(
        rows, y, y, order, params, state, regs, rate, target_range, clip, out, shared,
        _unit_weight, losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_logistic_fixed(rows, y, order, params, state, regs, rate, target_range, clip, out, shared):
    return _fixed_pass(
        rows, y, y, order, params, state, regs, rate, target_range, clip, out, shared,
        _unit_weight, losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_squared_fixed(
    rows, y, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _fixed_pass(
        rows, y, y, order, params, state, regs, rate, target_range, clip, out, shared,
        _unit_weight, losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_logistic_fixed(
    rows, y, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _fixed_pass(
        rows, y, y, order, params, state, regs, rate, target_range, clip, out, shared,
        _unit_weight, losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_squared_fixed_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _fixed_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_logistic_fixed_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _fixed_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.sgd_linear, steps.sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_squared_fixed_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _fixed_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_logistic_fixed_weighted(
    rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared
):
    return _fixed_pass(
        rows, y, weights, order, params, state, regs, rate, target_range, clip, out, shared,
        _case_weight, losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.adagrad_linear, steps.adagrad_factor,
    )  # fmt: skip


FIXED_KERNELS = {
    ("sgd", "squared"): sgd_squared_fixed,
    ("sgd", "logistic"): sgd_logistic_fixed,
    ("adagrad", "squared"): adagrad_squared_fixed,
    ("adagrad", "logistic"): adagrad_logistic_fixed,
}
FIXED_WEIGHTED_KERNELS = {
    ("sgd", "squared"): sgd_squared_fixed_weighted,
    ("sgd", "logistic"): sgd_logistic_fixed_weighted,
    ("adagrad", "squared"): adagrad_squared_fixed_weighted,
    ("adagrad", "logistic"): adagrad_logistic_fixed_weighted,
}


def unallocated_id_error(n_features: int) -> IndexError:
    """The error of a kernel that met a feature id beyond the parameters."""
    return IndexError(
        f"a feature id of the chunk is negative or not allocated (the parameters hold "
        f"{n_features} features): the chunk is corrupt or was built for another model"
    )


def divergence_error(case: int, row: int, what: str, advice: str) -> DivergenceError:
    """The error of a kernel whose case number `case` (1-based, of the run) at row `row`
    (1-based, of the chunk) made `what` non-finite; `advice`: what to try."""
    return DivergenceError(
        f"training diverged at case {case} (row {row} of the current chunk): {what} became "
        f"non-finite. {advice}"
    )


class SGDLearner(LearnerHooks):
    """Per-case SGD (or AdaGrad) on a growing FM, one chunk at a time (the `Learner` protocol).

    State that decides the next update: the parameters with the step rule's accumulators, the
    number of cases learnt (`t`, drives the learning-rate schedule) and the range of targets seen
    (`target_range`, for clipping regression predictions). Feature ids must have been made room
    for (`params.ensure_features`) before a chunk using them is learnt.
    """

    methods = ("sgd", "adagrad")

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        task: Task = "regression",
        group_regularization: dict[int, GroupRegularization] | None = None,
        params: FMParams | None = None,
    ) -> None:
        if task not in LOSS_OF_TASK:
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        self.config = learner
        self.task: Task = task
        self.params = params or FMParams(
            model.k,
            seed=model.seed,
            init_std=model.init_std,
            adagrad=learner.optimizer == "adagrad",
            adagrad_init=learner.adagrad_init,
        )
        self.t = 0
        self.target_range = np.array([np.inf, -np.inf], dtype=np.float64)
        self.group_regularization: dict[int, GroupRegularization] = dict(group_regularization or {})
        self._regs: tuple[np.ndarray, np.ndarray] | None = None
        self._regs_seen = 0  # features whose groups the per-group arrays cover
        # the row layout of the last chunk learnt: "csr" or "fixed" ("mf": the ranking
        # learner's MF-layout BPR kernel)
        self.last_layout = ""

    # --- regularisation by group
    def _group_regs(self) -> tuple[np.ndarray, np.ndarray]:
        """L2 strengths of w and V per group (float64), rebuilt only when new groups appear."""
        p = self.params
        if self._regs is not None and self._regs_seen == p.n_features:
            return self._regs
        top = int(p.group[self._regs_seen : p.n_features].max(initial=0))
        n_groups = max(top + 1, max([0, *self.group_regularization]) + 1)
        if self._regs is None or n_groups > len(self._regs[0]):
            n_groups = max(n_groups, len(self._regs[0]) if self._regs else 0)
            reg_w = np.full(n_groups, self.config.reg_linear, dtype=np.float64)
            reg_v = np.full(n_groups, self.config.reg_factors, dtype=np.float64)
            for g, reg in self.group_regularization.items():
                if reg.linear is not None:
                    reg_w[g] = reg.linear
                if reg.factors is not None:
                    reg_v[g] = reg.factors
            self._regs = (reg_w, reg_v)
        self._regs_seen = p.n_features
        return self._regs

    def set_group_regularization(self, groups: dict[int, GroupRegularization]) -> None:
        """Replace the per-group L2 overrides."""
        self.group_regularization = dict(groups)
        self._regs = None
        self._regs_seen = 0

    # --- learning
    def learn(
        self,
        chunk: CSRChunk,
        y: np.ndarray,
        order: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """One pass over the chunk's rows (in `order`, default as given).

        y: float64 targets (classification: 0/1). weights: one finite weight >= 0 per row (None:
        all 1), multiplying the case's gradient. Returns the predictions made before each case's
        update (float64, n_rows; regression values or P(y=1)), for progressive validation.
        """
        n = chunk.n_rows
        y = np.ascontiguousarray(y, dtype=np.float64)
        if y.shape != (n,):
            raise ValueError(f"y: expected {n} values, got shape {y.shape}")
        reg_w, reg_v = self._group_regs()
        p = self.params
        cfg = self.config
        decay = float(cfg.decay) if cfg.schedule == "invscaling" else 0.0
        key = ("adagrad" if p.adagrad else "sgd", LOSS_OF_TASK[self.task])
        layout, rows = chunk_rows(chunk)
        self.last_layout = layout
        fixed = layout == "fixed"
        if weights is None:
            kernel = (FIXED_KERNELS if fixed else KERNELS)[key]
        else:
            weights = np.ascontiguousarray(weights, dtype=np.float64)
            if weights.shape != (n,):
                raise ValueError(f"weights: expected {n} values, got shape {weights.shape}")
            kernel = _with_weights(
                (FIXED_WEIGHTED_KERNELS if fixed else WEIGHTED_KERNELS)[key], weights
            )
        pred = np.empty(n, dtype=np.float64)
        run = _hogwild if cfg.threads > 1 else _one_thread
        try:
            bad = run(
                kernel,
                rows,
                y,
                order,
                (p.w0, p.w[: p.n_features], p.V[: p.n_features]),
                (p.acc_w0, p.acc_w[: p.n_features], p.acc_V[: p.n_features]),
                (float(cfg.reg_bias), reg_w, reg_v, p.group),
                (float(cfg.learning_rate), decay, float(cfg.power_t), int(self.t)),
                self.target_range,
                bool(cfg.clip_predictions),
                pred,
                cfg.threads,
            )
        except IndexError:
            raise unallocated_id_error(p.n_features) from None
        if bad >= 0:
            self.t += int(bad)
            raise divergence_error(
                self.t + 1,
                (bad if order is None else int(order[bad])) + 1,
                "the prediction",
                "The learning rate is too large for this data: try a smaller "
                f"learner.learning_rate (now {cfg.learning_rate:g}), AdaGrad, or scaling large "
                "feature values.",
            )
        self.t += n
        if not np.isfinite(p.w0[0]):
            raise DivergenceError(
                f"training diverged by case {self.t}: the bias became non-finite; "
                f"try a smaller learner.learning_rate (now {cfg.learning_rate:g})"
            )
        return pred

    def check_finite(self) -> None:
        """Raise DivergenceError if any seen parameter is non-finite (never hand out a NaN model)."""
        if not self.params.all_finite():
            raise DivergenceError(
                f"training diverged: parameters became non-finite after {self.t} cases; try a smaller "
                f"learner.learning_rate (now {self.config.learning_rate:g})"
            )

    # --- prediction
    def decision_function(self, chunk: CSRChunk) -> np.ndarray:
        """Raw FM scores y(x), float64 (n_rows,); unseen feature ids contribute nothing."""
        p = self.params
        out = np.empty(chunk.n_rows, dtype=np.float64)
        predict_csr(chunk.indptr, chunk.indices, chunk.values, p.w0, p.w, p.V, p.n_features, out)
        return out

    def predict(self, chunk: CSRChunk) -> np.ndarray:
        """Regression: scores clipped to the training targets' range (if configured).
        Classification: P(y=1)."""
        s = self.decision_function(chunk)
        if self.task == "classification":
            return sigmoid(s)
        lo, hi = self.target_range
        if self.config.clip_predictions and lo <= hi:
            np.clip(s, lo, hi, out=s)
        return s

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """Counters and parameters (arrays are views of the live ones: copy to keep them)."""
        lo, hi = self.target_range
        return {
            "task": self.task,
            "t": int(self.t),
            "target_range": [
                float(lo) if np.isfinite(lo) else None,
                float(hi) if np.isfinite(hi) else None,
            ],
            "group_regularization": {
                str(g): r.model_dump() for g, r in self.group_regularization.items()
            },
            "params": self.params.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.task = state["task"]
        self.t = int(state["t"])
        lo, hi = state["target_range"]
        self.target_range[:] = [np.inf if lo is None else lo, -np.inf if hi is None else hi]
        self.set_group_regularization(
            {int(g): GroupRegularization(**r) for g, r in state["group_regularization"].items()}
        )
        self.params.load_state_dict(state["params"])


def _one_thread(kernel, rows, y, order, params, state, regs, rate, target_range, clip, out, _):
    return kernel(rows, y, order, params, state, regs, rate, target_range, clip, out, False)


#: Hogwild splits a chunk only into slices of at least this many cases (smaller ones are not
#: worth a thread's hand-off).
MIN_CASES_PER_THREAD = 2048
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_LINE = 32  # float32 entries between two threads' private values (128 bytes: no shared line)


def _pool(workers: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, "streamfm-hogwild")
        return pool


def _hogwild(kernel, rows, y, order, params, state, regs, rate, target_range, clip, out, threads):
    """Learn the cases `order` with `threads` threads, Hogwild (Niu et al., 2011): thread i takes
    the i-th contiguous slice of `order` (its schedule counts from the slice's start) and runs the
    same kernel (numba, nogil) on the shared w, V and their accumulators, without locks.

    Only the bias w0 (and AdaGrad's sum for it), which every case updates, is private to each
    thread during the chunk (on its own cache lines: sharing it would move one cache line between
    the cores at every case), and so is the range of targets seen; after the chunk w0 is the
    mean of the threads' values, its accumulator the start plus every thread's increase, and the
    range the union. Returns -1, or the position in `order` of a case that diverged."""
    n = y.shape[0] if order is None else order.shape[0]
    parts = min(threads, n // MIN_CASES_PER_THREAD)
    if parts <= 1:
        return kernel(rows, y, order, params, state, regs, rate, target_range, clip, out, False)
    if order is None:  # the threads take slices of it
        order = np.arange(n, dtype=np.int64)
    w0, w, V = params
    acc_w0, acc_w, acc_V = state
    lr0, decay, power_t, t0 = rate
    bounds = [n * i // parts for i in range(parts + 1)]
    private_w0 = np.zeros((parts, _LINE), dtype=w0.dtype)
    private_acc = np.zeros((parts, _LINE), dtype=acc_w0.dtype)
    ranges = np.zeros((parts, _LINE // 2), dtype=np.float64)
    private_w0[:, 0] = w0[0]
    private_acc[:, 0] = acc_w0[0]
    ranges[:, :2] = target_range

    def one(i: int) -> int:
        return kernel(
            rows, y, order[bounds[i] : bounds[i + 1]], (private_w0[i, :1], w, V),
            (private_acc[i, :1], acc_w, acc_V), regs, (lr0, decay, power_t, t0 + bounds[i]),
            ranges[i, :2], clip, out, True,
        )  # fmt: skip

    pool = _pool(threads - 1)
    futures = [pool.submit(one, i) for i in range(1, parts)]
    results = [one(0)] + [f.result() for f in futures]  # (waits for all: they share w and V)
    w0[0] = private_w0[:, 0].astype(np.float64).mean()
    acc_w0[0] = acc_w0[0] + (private_acc[:, 0].astype(np.float64) - acc_w0[0]).sum()  # SGD: 0
    target_range[0] = ranges[:, 0].min()
    target_range[1] = ranges[:, 1].max()
    bad = [bounds[i] + b for i, b in enumerate(results) if b >= 0]
    return min(bad) if bad else -1


def chunk_rows(chunk: CSRChunk) -> tuple[str, tuple[np.ndarray, ...]]:
    """The layout the kernels take the chunk in: ("fixed", (idx,)) when every row has the same
    number of non-zeros, all 1.0 (idx: (n_rows, width) int32, a view of the chunk's indices),
    else ("csr", (indptr, indices, values))."""
    width = int(fixed_width(chunk.indptr, chunk.values)) if chunk.n_rows else -1
    if width < 1:
        return "csr", (chunk.indptr, chunk.indices, chunk.values)
    start = int(chunk.indptr[0])
    idx = chunk.indices[start : start + chunk.n_rows * width].reshape(chunk.n_rows, width)
    return "fixed", (np.ascontiguousarray(idx, dtype=np.int32),)


def _with_weights(kernel, weights: np.ndarray):
    """A weighted kernel called like an unweighted one."""

    def call(rows, y, *rest):
        return kernel(rows, y, weights, *rest)

    return call


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Element-wise 1 / (1 + exp(-z)) without overflow (float64)."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out
