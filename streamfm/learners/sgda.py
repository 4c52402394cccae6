"""SGD with adaptive regularisation (`learner.method: sgda`; Rendle, "Learning Recommender
Systems with Adaptive Regularization", WSDM 2012; libFM's ``-method sgda``).

Per-group L2 values λ are not set by hand: they are learnt by gradient steps on held-out rows,
interleaved with the steps of the parameters θ. One row in ``sgda.validation_every`` is held out
(predicted, never learnt): which ones is decided by a hash of the row's features, values and
target and the seed (`held_out_rows`), so that the same rows stay held out in every epoch,
whatever the shuffling; they join a window of the latest ``sgda.validation_rows`` held-out rows.
After each parameter step on a training case, one row v of the window (cycling through it) makes
a λ step:

    θ' = θ - η_j (g_θ + λ_g θ)           the parameters after their next step: g_θ the loss
                                         gradient of θ's last training step (kept per
                                         coordinate), η_j its step size (sgd: η; adagrad:
                                         η / sqrt(its accumulator))
    ∂ℓ(ŷ'(x_v), y_v)/∂λ_w[g]    = ℓ'(ŷ') · (-Σ_{j in g} x_j η_j w_j)
    ∂ℓ(ŷ'(x_v), y_v)/∂λ_v[g, f] = ℓ'(ŷ') · (-[ (Σ_j x_j v'_jf) Σ_{j in g} x_j η_jf v_jf
                                                - Σ_{j in g} x_j² η_jf v_jf v'_jf ])
    λ <- min(1/η, max(0, λ - η_λ ∂ℓ/∂λ))

(ŷ' uses w0 as it is, as libFM does; λ_w per group, λ_v per group and factor; w0's L2
``reg_bias`` stays fixed; the bound 1/η keeps a shrinking step from passing 0, which libFM does
not bound.) With our step θ - η(g + λθ) and ½(ŷ - y)², η_λ = η is libFM's choice (its steps are
twice ours: θ - 2η'(g + λθ)). λ starts at the spec's reg_linear / reg_factors (with the `groups`
overrides). ``sgda.steps: sgd`` is Rendle's and libFM's method; ``adagrad`` the same with
per-coordinate step sizes.

Differences from libFM: its validation rows are a separate file, cycled in order; ours are a
bounded window of held-out rows of the stream (so follow mode and stdin work); libFM makes no λ
step in its first iteration, we do from the first held-out row on.

The kernel is composed like `learners.sgd`: the shared row scorer, a loss of `losses` and a step
rule of `steps`, one module-level specialisation per (step rule, loss), cached by numba. Which
rows are held out and which window row each λ step takes do not depend on how the stream is cut
into chunks; the window is part of the state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk, concat, take_rows
from streamfm.errors import DivergenceError, SpecError
from streamfm.learners import losses, steps
from streamfm.learners.memory_hints import CASES_AHEAD, hint_read, hinted_cases
from streamfm.learners.params import FMParams
from streamfm.learners.sampling import slot_key, splitmix64
from streamfm.learners.scoring import score_row
from streamfm.learners.sgd import (
    LOSS_OF_TASK,
    SGDLearner,
    Task,
    divergence_error,
    unallocated_id_error,
)


@njit(cache=True, nogil=True, error_model="numpy")
def held_out_rows(indptr, indices, values, y, seed, every):
    """Which rows are held out: one in `every`, by a hash of the row's feature ids, values
    (to 1e-6) and target (to 1e-9) and the seed. The same rows are held out in every epoch
    and whatever the order or chunking (a row learnt in one epoch is never a held-out row in
    another)."""
    out = np.zeros(indptr.shape[0] - 1, dtype=np.bool_)
    for r in range(indptr.shape[0] - 1):
        h = splitmix64(np.uint64(seed))
        for nz in range(indptr[r], indptr[r + 1]):
            h = slot_key(h, np.uint64(np.int64(indices[nz])))
            h = slot_key(h, np.uint64(np.int64(round(values[nz] * 1e6)) & 0x7FFFFFFFFFFFFFFF))
        h = slot_key(h, np.uint64(np.int64(round(y[r] * 1e9)) & 0x7FFFFFFFFFFFFFFF))
        out[r] = h % np.uint64(every) == np.uint64(0)
    return out


@njit(nogil=True, inline="always", error_model="numpy")
def _reg_step(
    vr, yv, params, state, grads, regs, lr, reg_lr, target_range, clip, scratch, output,
    gradient, rate_linear, rate_factor,
):  # fmt: skip
    """One λ step on validation row vr = (start, stop, indices, values) with target yv."""
    start, stop, indices, values = vr
    w0, w, V = params
    _, acc_w, acc_V = state
    grad_w, grad_V = grads
    reg_max = 1.0 / lr  # a shrinking step never goes past 0: η λ <= 1
    reg_w, reg_v, group = regs
    mark, sum_a, sum_b, v_sums, v_sqs = scratch
    k = V.shape[1]
    # ŷ' with the parameters after their next step
    p = float(w0[0])
    for f in range(k):
        v_sums[f] = 0.0
        v_sqs[f] = 0.0
    for nz in range(start, stop):
        j = np.uint32(indices[nz])
        x = np.float64(values[nz])
        g = group[j]
        wj = np.float64(w[j])
        p += (wj - rate_linear(acc_w, j, lr) * (grad_w[j] + reg_w[g] * wj)) * x
        for f in range(k):
            v = np.float64(V[j, f])
            d = (v - rate_factor(acc_V, j, f, lr) * (grad_V[j, f] + reg_v[g, f] * v)) * x
            v_sums[f] += d
            v_sqs[f] += d * d
    for f in range(k):
        p += 0.5 * (v_sums[f] * v_sums[f] - v_sqs[f])
    dl = gradient(output(p, target_range, clip), yv)
    if not math.isfinite(dl):
        return
    # λ_w[g]: Σ_{j in g} x_j w_j
    for nz in range(start, stop):
        sum_a[group[np.uint32(indices[nz])]] = 0.0
        mark[group[np.uint32(indices[nz])]] = 0
    for nz in range(start, stop):
        j = np.uint32(indices[nz])
        sum_a[group[j]] += np.float64(values[nz]) * rate_linear(acc_w, j, lr) * np.float64(w[j])
    for nz in range(start, stop):
        g = group[np.uint32(indices[nz])]
        if mark[g] == 0:
            mark[g] = 1
            reg_w[g] = min(reg_max, max(0.0, reg_w[g] - reg_lr * dl * (-sum_a[g])))
    # λ_v[g, f]: S'_f Σ_{j in g} x_j v_jf - Σ_{j in g} x_j² v_jf v'_jf
    for f in range(k):
        for nz in range(start, stop):
            g = group[np.uint32(indices[nz])]
            sum_a[g] = 0.0
            sum_b[g] = 0.0
            mark[g] = 0
        for nz in range(start, stop):
            j = np.uint32(indices[nz])
            x = np.float64(values[nz])
            g = group[j]
            v = np.float64(V[j, f])
            eta = rate_factor(acc_V, j, f, lr)
            vd = v - eta * (grad_V[j, f] + reg_v[g, f] * v)
            sum_a[g] += x * eta * v
            sum_b[g] += x * eta * v * x * vd
        s_dash = v_sums[f]
        for nz in range(start, stop):
            g = group[np.uint32(indices[nz])]
            if mark[g] == 0:
                mark[g] = 1
                grad = dl * (-(s_dash * sum_a[g] - sum_b[g]))
                reg_v[g, f] = min(reg_max, max(0.0, reg_v[g, f] - reg_lr * grad))


@njit(nogil=True, inline="always", error_model="numpy")
def _sgda_pass(
    rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window,
    counters, output, gradient, observe, step_linear, step_factor, rate_linear, rate_factor,
):  # fmt: skip
    """One pass of SGDA over the rows `order` of a CSR chunk (see the module docstring).

    rows = (indptr, indices, values); params = (w0, w, V) float32, updated in place; grads =
    (acc_w0, acc_w, acc_V): each coordinate's last loss gradient (written); regs = (reg0,
    reg_w (G,) float64, reg_v (G, k) float64, group), the λ updated in place; rate = (lr0,
    decay, power_t, t0, reg_lr, every, window size) with t0 the cases seen before this call;
    window =
    (indptr, indices, values, y, base): the held-out rows with global numbers base, base + 1,
    ... (the carried window, then this chunk's held-out rows in case order); counters: int64
    [held-out rows seen, λ steps made], updated.
    Returns -1, or the position in `order` of the first case whose prediction or gradient was not
    finite. Raises IndexError, before any update, if a feature id is out of range.
    """
    indptr, indices, values = rows
    w0, w, V = params
    acc_w0, acc_w, acc_V = state
    grad_w, grad_V = grads
    reg0, reg_w, reg_v, group = regs
    lr0, decay, power_t, t0, reg_lr, size_max = rate
    win_ptr, win_idx, win_val, win_y, base = window
    k = V.shape[1]
    n_params = w.shape[0]
    top = np.uint32(0)
    for nz in range(indices.shape[0]):
        top = max(top, np.uint32(indices[nz]))
    if indices.shape[0] > 0 and top >= n_params:
        raise IndexError("sgda kernel: a feature id is negative or beyond the parameter arrays")
    for nz in range(win_idx.shape[0]):
        if np.uint32(win_idx[nz]) >= n_params:
            raise IndexError("sgda kernel: a held-out row's feature id is out of range")
    limit = np.uint32(n_params)
    n_groups = reg_w.shape[0]
    sums = np.zeros(k, dtype=np.float64)
    sqs = np.zeros(k, dtype=np.float64)
    scratch = (
        np.zeros(n_groups, dtype=np.int64),
        np.zeros(n_groups, dtype=np.float64),
        np.zeros(n_groups, dtype=np.float64),
        np.zeros(k, dtype=np.float64),
        np.zeros(k, dtype=np.float64),
    )
    with_acc = acc_V.shape[0] == V.shape[0]  # AdaGrad's sums (SGD's are empty)
    hinted = hinted_cases(V, order.shape[0])
    for ii in range(order.shape[0]):
        ahead = ii + CASES_AHEAD  # hint a later case's memory (learners.memory_hints)
        if ahead < hinted:
            r_ahead = order[ahead]
            for nz in range(indptr[r_ahead], indptr[r_ahead + 1]):
                j_ahead = np.uint32(indices[nz])
                hint_read(V, j_ahead)
                hint_read(w, j_ahead)
                hint_read(grad_V, j_ahead)  # written with them
                hint_read(grad_w, j_ahead)
                if with_acc:
                    hint_read(acc_V, j_ahead)
                    hint_read(acc_w, j_ahead)
        r = order[ii]
        case = t0 + ii
        start = np.uint64(indptr[r])
        stop = np.uint64(indptr[r + 1])
        p, inter, sq = score_row(start, stop, indices, values, w0, w, V, limit, sums, sqs)
        score = p + 0.5 * (inter - sq)
        yr = y[r]
        pred = output(score, target_range, clip)
        out[r] = pred
        if not (math.isfinite(score) and math.isfinite(inter)):
            return ii
        observe(yr, target_range)
        if held[r]:  # held out: joins the window, never learnt
            counters[0] += 1
            continue
        g = gradient(pred, yr)
        if not math.isfinite(g):
            return ii
        lr = steps.learning_rate(lr0, decay, power_t, case)
        v0 = w0[0]
        step_linear(w0, acc_w0, 0, v0, g + reg0 * v0, lr)
        for nz in range(start, stop):
            j = np.uint32(indices[nz])
            x = values[nz]
            gi = group[j]
            wj = w[j]
            grad_w[j] = g * x
            step_linear(w, acc_w, j, wj, g * x + reg_w[gi] * wj, lr)
            gx = g * x
            gxx = gx * x
            for f in range(k):
                v = V[j, f]
                gv = gx * sums[f] - gxx * v
                grad_V[j, f] = gv
                step_factor(V, acc_V, j, f, v, gv + reg_v[gi, f] * v, lr)
        seen = counters[0]
        if seen == 0:
            continue
        size = min(seen, size_max)
        pick = seen - size + counters[1] % size - base  # row of the window
        counters[1] += 1
        vs = np.uint64(win_ptr[pick])
        ve = np.uint64(win_ptr[pick + 1])
        _reg_step(
            (vs, ve, win_idx, win_val), win_y[pick], params, state, grads, (reg_w, reg_v, group),
            lr, reg_lr, target_range, clip, scratch, output, gradient, rate_linear, rate_factor,
        )  # fmt: skip
    return -1


@njit(cache=True, nogil=True, inline="always")
def _rate_sgd_linear(acc, j, lr):
    return lr


@njit(cache=True, nogil=True, inline="always")
def _rate_sgd_factor(acc, j, f, lr):
    return lr


@njit(cache=True, nogil=True, inline="always")
def _rate_adagrad_linear(acc, j, lr):
    return lr / math.sqrt(np.float64(acc[j]))


@njit(cache=True, nogil=True, inline="always")
def _rate_adagrad_factor(acc, j, f, lr):
    return lr / math.sqrt(np.float64(acc[j, f]))


@njit(cache=True, nogil=True, error_model="numpy")
def sgda_sgd_squared(
    rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c
):
    return _sgda_pass(
        rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c,
        losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.sgd_linear, steps.sgd_factor, _rate_sgd_linear, _rate_sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgda_sgd_logistic(
    rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c
):
    return _sgda_pass(
        rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c,
        losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.sgd_linear, steps.sgd_factor, _rate_sgd_linear, _rate_sgd_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgda_adagrad_squared(
    rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c
):
    return _sgda_pass(
        rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c,
        losses.squared_output, losses.squared_gradient, losses.squared_observe,
        steps.adagrad_linear, steps.adagrad_factor, _rate_adagrad_linear, _rate_adagrad_factor,
    )  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgda_adagrad_logistic(
    rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c
):
    return _sgda_pass(
        rows, y, held, order, params, state, grads, regs, rate, target_range, clip, out, window, c,
        losses.logistic_output, losses.logistic_gradient, losses.logistic_observe,
        steps.adagrad_linear, steps.adagrad_factor, _rate_adagrad_linear, _rate_adagrad_factor,
    )  # fmt: skip


KERNELS = {
    ("sgd", "squared"): sgda_sgd_squared,
    ("sgd", "logistic"): sgda_sgd_logistic,
    ("adagrad", "squared"): sgda_adagrad_squared,
    ("adagrad", "logistic"): sgda_adagrad_logistic,
}


class SGDALearner(SGDLearner):
    """SGDA on a growing FM, one chunk at a time (the `Learner` protocol; see the module
    docstring). State beyond SGD's: the learnt λ per group (`reg_w`, `reg_v`), the window of
    held-out rows and the counters of held-out rows and λ steps."""

    methods = ("sgda",)

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        task: Task = "regression",
        group_regularization: dict[int, GroupRegularization] | None = None,
        params: FMParams | None = None,
    ) -> None:
        adagrad = learner.sgda.steps == "adagrad"
        params = params or FMParams(
            model.k,
            seed=model.seed,
            init_std=model.init_std,
            adagrad=adagrad,
            adagrad_init=learner.adagrad_init,
        )
        super().__init__(model, learner, task, group_regularization, params)
        # Each coordinate's last loss gradient (float32, grown with the parameters).
        self.grad_w = np.zeros(0, dtype=np.float32)
        self.grad_V = np.zeros((0, model.k), dtype=np.float32)
        self.reg_w = np.zeros(0, dtype=np.float64)
        self.reg_v = np.zeros((0, model.k), dtype=np.float64)
        self.n_held_out = 0
        self.reg_steps = 0
        self._new_window()

    def _new_window(self) -> None:
        self.window = CSRChunk(
            np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, np.float32)
        )
        self.window_y = np.zeros(0, dtype=np.float64)

    def _grow_regs(self) -> None:
        """λ arrays covering every group seen; new groups start at the spec's values."""
        p = self.params
        top = int(p.group[: p.n_features].max(initial=0))
        n_groups = max(top + 1, max([0, *self.group_regularization]) + 1)
        old = len(self.reg_w)
        if n_groups <= old:
            return
        reg_w = np.full(n_groups, self.config.reg_linear, dtype=np.float64)
        reg_v = np.full((n_groups, p.k), self.config.reg_factors, dtype=np.float64)
        for g, reg in self.group_regularization.items():
            if reg.linear is not None:
                reg_w[g] = reg.linear
            if reg.factors is not None:
                reg_v[g] = reg.factors
        reg_w[:old] = self.reg_w
        reg_v[:old] = self.reg_v
        self.reg_w, self.reg_v = reg_w, reg_v

    def _grow_grads(self) -> None:
        n, old = self.params.n_features, len(self.grad_w)
        if n > old:
            grad_w = np.zeros(max(n, 2 * old), dtype=np.float32)
            grad_V = np.zeros((len(grad_w), self.params.k), dtype=np.float32)
            grad_w[:old] = self.grad_w
            grad_V[:old] = self.grad_V
            self.grad_w, self.grad_V = grad_w, grad_V

    def learn(
        self,
        chunk: CSRChunk,
        y: np.ndarray,
        order: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """One pass over the chunk's rows (in `order`, default as given): parameter steps on
        training cases, λ steps on held-out rows; returns the predictions made before each
        case's update (held-out cases too). `weights`: None only (SGDA has no case weights)."""
        if weights is not None:
            raise SpecError(
                "method sgda does not weight cases (sample_weight): use sgd or adagrad for that"
            )
        n = chunk.n_rows
        y = np.ascontiguousarray(y, dtype=np.float64)
        if order is None:
            order = np.arange(n, dtype=np.int64)
        cfg, sg = self.config, self.config.sgda
        self._grow_regs()
        self._grow_grads()
        every = int(sg.validation_every)
        # This chunk's held-out rows, in case order, after the carried window.
        is_held = held_out_rows(
            chunk.indptr, chunk.indices, chunk.values, y, self.params.seed, every
        )
        held = order[is_held[order]]
        window = concat([self.window, take_rows(chunk, held)])
        window_y = np.concatenate([self.window_y, y[held]])
        base = self.n_held_out - self.window.n_rows
        p = self.params
        nf = p.n_features
        decay = float(cfg.decay) if cfg.schedule == "invscaling" else 0.0
        reg_lr = float(sg.reg_learning_rate or cfg.learning_rate)
        counters = np.array([self.n_held_out, self.reg_steps], dtype=np.int64)
        pred = np.empty(n, dtype=np.float64)
        try:
            bad = KERNELS[(sg.steps, LOSS_OF_TASK[self.task])](
                (chunk.indptr, chunk.indices, chunk.values),
                y,
                is_held,
                order,
                (p.w0, p.w[:nf], p.V[:nf]),
                (p.acc_w0, p.acc_w[:nf], p.acc_V[:nf]),
                (self.grad_w[:nf], self.grad_V[:nf]),
                (float(cfg.reg_bias), self.reg_w, self.reg_v, p.group),
                (
                    float(cfg.learning_rate),
                    decay,
                    float(cfg.power_t),
                    int(self.t),
                    reg_lr,
                    int(sg.validation_rows),
                ),  # fmt: skip
                self.target_range,
                bool(cfg.clip_predictions),
                pred,
                (window.indptr, window.indices, window.values, window_y, int(base)),
                counters,
            )
        except IndexError:
            raise unallocated_id_error(nf) from None
        if bad >= 0:
            self.t += int(bad)
            raise divergence_error(
                self.t + 1,
                int(order[bad]) + 1,
                "the prediction",
                f"Try a smaller learner.learning_rate (now {cfg.learning_rate:g}) or scaling large "
                "feature values.",
            )
        self.t += n
        self.n_held_out, self.reg_steps = int(counters[0]), int(counters[1])
        keep = min(window.n_rows, int(sg.validation_rows))
        tail = np.arange(window.n_rows - keep, window.n_rows, dtype=np.int64)
        self.window = take_rows(window, tail)
        self.window_y = window_y[tail]
        if not np.isfinite(p.w0[0]):
            raise DivergenceError(f"training diverged by case {self.t}: the bias became non-finite")
        return pred

    def state_dict(self) -> dict[str, Any]:
        """SGD's state, the learnt λ, the held-out window and its counters."""
        return {
            **super().state_dict(),
            "sgda": {
                "reg_w": self.reg_w,
                "reg_v": self.reg_v,
                "grad_w": self.grad_w[: self.params.n_features],
                "grad_V": self.grad_V[: self.params.n_features],
                "held_out": int(self.n_held_out),
                "reg_steps": int(self.reg_steps),
                "window": {
                    "indptr": self.window.indptr,
                    "indices": self.window.indices,
                    "values": self.window.values,
                    "y": self.window_y,
                },
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        s = state["sgda"]
        self.reg_w = np.array(s["reg_w"], dtype=np.float64)
        self.reg_v = np.array(s["reg_v"], dtype=np.float64).reshape(-1, self.params.k)
        self.n_held_out, self.reg_steps = int(s["held_out"]), int(s["reg_steps"])
        self.grad_w = np.array(s["grad_w"], dtype=np.float32)
        self.grad_V = np.array(s["grad_V"], dtype=np.float32).reshape(-1, self.params.k)
        win = s["window"]
        self.window = CSRChunk(
            np.array(win["indptr"], dtype=np.int64),
            np.array(win["indices"], dtype=np.int32),
            np.array(win["values"], dtype=np.float32),
        )
        self.window_y = np.array(win["y"], dtype=np.float64)
