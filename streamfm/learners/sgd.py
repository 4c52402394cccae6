"""SGDLearner: owns FMParams and the learner's counters, and feeds CSR chunks to the kernels."""

from __future__ import annotations

from typing import Literal

import numpy as np

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.errors import DivergenceError
from streamfm.learners import kernels
from streamfm.model import FMParams

Task = Literal["regression", "classification"]


class SGDLearner:
    """Per-case SGD (or AdaGrad) on a growing FM, one chunk at a time.

    State that decides the next update, and so is saved with the model: the parameters, the
    number of cases learnt (`t`, drives the learning-rate schedule) and the range of targets
    seen (`target_range`, for clipping regression predictions).
    """

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        task: Task = "regression",
        group_regularization: dict[int, GroupRegularization] | None = None,
        params: FMParams | None = None,
    ) -> None:
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        self.model_config = model
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

    # --- regularisation by group
    def _group_regs(self) -> tuple[np.ndarray, np.ndarray]:
        n_groups = max([0, *self.group_regularization]) + 1
        n_groups = max(n_groups, int(self.params.group.max(initial=0)) + 1)
        reg_w = np.full(n_groups, self.config.reg_linear, dtype=np.float64)
        reg_v = np.full(n_groups, self.config.reg_factors, dtype=np.float64)
        for g, reg in self.group_regularization.items():
            if reg.linear is not None:
                reg_w[g] = reg.linear
            if reg.factors is not None:
                reg_v[g] = reg.factors
        return reg_w, reg_v

    # --- learning
    def learn(self, chunk: CSRChunk, y: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        """One SGD pass over the chunk's rows (in `order`, default as given).

        y: float64 targets (classification: 0/1). Returns the predictions made before each case's
        update (float64, n_rows; regression values or P(y=1)), for progressive validation.
        """
        n = chunk.n_rows
        y = np.ascontiguousarray(y, dtype=np.float64)
        if order is None:
            order = np.arange(n, dtype=np.int64)
        self.params.ensure_features(chunk.max_id() + 1)
        reg_w, reg_v = self._group_regs()
        p = self.params
        cfg = self.config
        pred = np.empty(n, dtype=np.float64)
        bad = kernels.sgd_csr(
            chunk.indptr,
            chunk.indices,
            chunk.values,
            y,
            order,
            p.w0,
            p.w,
            p.V,
            p.group,
            reg_w,
            reg_v,
            float(cfg.reg_bias),
            p.adagrad,
            p.acc_w0,
            p.acc_w,
            p.acc_V,
            float(cfg.learning_rate),
            kernels.SCHEDULE_INVSCALING
            if cfg.schedule == "invscaling"
            else kernels.SCHEDULE_CONSTANT,
            float(cfg.decay),
            float(cfg.power_t),
            self.t,
            kernels.TASK_CLASSIFICATION
            if self.task == "classification"
            else kernels.TASK_REGRESSION,
            bool(cfg.clip_predictions),
            self.target_range,
            pred,
        )
        if bad >= 0:
            self.t += int(bad)
            raise DivergenceError(
                f"training diverged at case {self.t + 1} (row {int(order[bad]) + 1} of the current "
                f"chunk): the prediction became non-finite. The learning rate is too large for this "
                f"data: try a smaller learner.learning_rate (now {cfg.learning_rate:g}), AdaGrad, or "
                f"scaling large feature values."
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
        kernels.predict_csr(
            chunk.indptr, chunk.indices, chunk.values, p.w0, p.w, p.V, p.n_features, out
        )
        return out

    def predict(self, chunk: CSRChunk) -> np.ndarray:
        """Regression: scores clipped to the training targets' range (if configured).
        Classification: P(y=1)."""
        s = self.decision_function(chunk)
        if self.task == "classification":
            return _sigmoid(s)
        lo, hi = self.target_range
        if self.config.clip_predictions and lo <= hi:
            np.clip(s, lo, hi, out=s)
        return s

    # --- state
    def state(self) -> dict:
        """JSON-able counters (the arrays live in `params.arrays()`)."""
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
        }

    def load_state(self, state: dict) -> None:
        """Restore counters written by `state()`."""
        self.task = state["task"]
        self.t = int(state["t"])
        lo, hi = state["target_range"]
        self.target_range[:] = [np.inf if lo is None else lo, -np.inf if hi is None else hi]
        self.group_regularization = {
            int(g): GroupRegularization(**r)
            for g, r in state.get("group_regularization", {}).items()
        }


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out
