"""CoordinateLearner: ALS and MCMC (`learner.method: als | mcmc`) behind the Learner protocol,
out of core.

The kernels are `learners.coordinate` (read its docstring); this module drives them from the
training loop through the protocol's capability hooks (`learners.base`):

- ``replays_rows = False``: `learn` takes each training row once, in the first epoch, into a
  `ColumnStore` (CSR files in the run's cache folder, `set_storage`); the loop reads no rows in
  later epochs.
- `end_pass` (every epoch end): the first one builds the transposed copy (CSC); each runs one
  iteration (`coordinate_iteration`) over memory-mapped rows, columns and per-row scratch, and
  returns the epoch record's extra fields: ``iteration``, ``seconds_iteration``, the training
  metric of the current parameters (``train_rmse`` / ``train_mae``, or ``train_logloss`` /
  ``train_accuracy``) and, MCMC regression, the noise precision ``alpha``.
- `predict_holdout`: MCMC adds every sample after ``burn_in`` to per-holdout-row sums
  (`HoldoutSums`, memory-mapped) and reports their average, as libFM does; ALS predicts with
  the current parameters.
- `training_parts`: the store and the holdout sums are checkpointed with the run (sizes and
  sha256 of the files; the sums themselves), not written into the model file.

Parameters are float64 (`FMParams(dtype=float64, random_w=True)`), starting as libFM does for
ALS and MCMC: w0 = 0, w and V ~ N(0, init_std²) by (seed, feature id), as
`coordinate.initial_state`. One iteration = one epoch; every draw is keyed by
(seed, iteration, ...), so a run resumed at an iteration boundary is bit-identical.

MCMC model files hold up to ``mcmc.samples_kept`` thinned samples (float32, with their groups'
prior means); `predict` and `decision_function` average over them (myFM does this), the
current parameters until the first is kept. Keys never seen in training (`UNSEEN_ID - group`)
get their group's prior mean μ in each sample: libFM draws such features from the prior, whose
average over samples is that mean. ALS has prior mean 0: they contribute nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numba import njit

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.errors import DivergenceError
from streamfm.features.space import MAX_GROUPS, UNSEEN_ID
from streamfm.learners.base import LearnerHooks
from streamfm.learners.columns import ColumnStore, HoldoutSums
from streamfm.learners.coordinate import (
    METHOD_ALS,
    METHOD_MCMC,
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
    coordinate_iteration,
    numba_threads,
    threaded_schedule,
)
from streamfm.learners.params import FMParams
from streamfm.learners.sampling import normal_cdf

Task = Literal["regression", "classification"]
TASKS = {"regression": TASK_REGRESSION, "classification": TASK_CLASSIFICATION}
METHODS = {"als": METHOD_ALS, "mcmc": METHOD_MCMC}
_LOG_EPS = 1e-15


# --- prediction kernels --------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _score(start, stop, indices, values, w0, w, V, mu_w, mu_v, prior_group, n_features, sums, sqs):
    """ŷ of one CSR row; an id >= n_features is the unseen key of group UNSEEN_ID - id and takes
    its prior mean (mu_w[pg], mu_v[pg] with pg = prior_group[group]; pg < 0: contributes 0)."""
    k = V.shape[1]
    p = float(w0[0])
    for f in range(k):
        sums[f] = 0.0
        sqs[f] = 0.0
    limit = np.uint32(n_features)
    for nz in range(start, stop):
        j = np.uint32(indices[nz])
        x = np.float64(values[nz])
        if j < limit:
            p += w[j] * x
            for f in range(k):
                d = V[j, f] * x
                sums[f] += d
                sqs[f] += d * d
            continue
        g = np.int64(UNSEEN_ID) - np.int64(j)
        if g < 0 or g >= prior_group.shape[0]:
            continue
        pg = prior_group[g]
        if pg < 0:
            continue
        p += mu_w[pg] * x
        for f in range(k):
            d = mu_v[pg, f] * x
            sums[f] += d
            sqs[f] += d * d
    inter = 0.0
    for f in range(k):
        inter += sums[f] * sums[f] - sqs[f]
    return p + 0.5 * inter


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _output(score, task, lo, hi, raw):
    if raw:
        return score
    if task == TASK_CLASSIFICATION:
        return normal_cdf(score)
    if lo <= hi:
        return min(max(score, lo), hi)
    return score


@njit(cache=True, nogil=True, error_model="numpy")
def sample_predictions(
    indptr, indices, values, w0, w, V, mu_w, mu_v, prior_group, n_features, task, lo, hi, raw,
    accumulate, out,
):  # fmt: skip
    """Predictions of one sample for CSR rows into out (added when accumulate): Φ(ŷ)
    (classification), ŷ clipped to [lo, hi] when lo <= hi (regression), or ŷ (raw)."""
    k = V.shape[1]
    sums = np.empty(k, dtype=np.float64)
    sqs = np.empty(k, dtype=np.float64)
    for r in range(indptr.shape[0] - 1):
        s = _score(
            np.uint64(indptr[r]), np.uint64(indptr[r + 1]), indices, values, w0, w, V,
            mu_w, mu_v, prior_group, n_features, sums, sqs,
        )  # fmt: skip
        p = _output(s, task, lo, hi, raw)
        if accumulate:
            out[r] += p
        else:
            out[r] = p


@njit(cache=True, nogil=True, error_model="numpy")
def holdout_average(
    indptr, indices, values, w0, w, V, mu_w, mu_v, prior_group, n_features, task, lo, hi,
    sums, count, last, start, sample, out,
):  # fmt: skip
    """For holdout rows start + r: add this sample's prediction to sums unless it was added
    already (last == sample), then out[r] = sums / count: libFM's running average."""
    k = V.shape[1]
    buf_s = np.empty(k, dtype=np.float64)
    buf_q = np.empty(k, dtype=np.float64)
    for r in range(indptr.shape[0] - 1):
        i = start + r
        if last[i] != sample:
            s = _score(
                np.uint64(indptr[r]), np.uint64(indptr[r + 1]), indices, values, w0, w, V,
                mu_w, mu_v, prior_group, n_features, buf_s, buf_q,
            )  # fmt: skip
            sums[i] += _output(s, task, lo, hi, False)
            count[i] += 1
            last[i] = sample
        out[r] = sums[i] / count[i]


@njit(cache=True, nogil=True, error_model="numpy")
def regression_errors(y, e, lo, hi):
    """(Σ err², Σ |err|) of the training predictions ŷ = y - e, clipped to [lo, hi] if lo <= hi."""
    sse = 0.0
    sae = 0.0
    for r in range(y.shape[0]):
        p = y[r] - e[r]
        if lo <= hi:
            p = min(max(p, lo), hi)
        d = p - y[r]
        sse += d * d
        sae += abs(d)
    return sse, sae


@njit(cache=True, nogil=True, error_model="numpy")
def classification_errors(indptr, indices, values, y, w0, w, V, n_features):
    """(Σ logloss, number correct) of Φ(ŷ) on the training rows (labels y > 0 positive)."""
    k = V.shape[1]
    sums = np.empty(k, dtype=np.float64)
    sqs = np.empty(k, dtype=np.float64)
    empty_w = np.zeros(0, dtype=np.float64)
    empty_v = np.zeros((0, k), dtype=np.float64)
    no_groups = np.zeros(0, dtype=np.int64)
    loss = 0.0
    correct = 0
    for r in range(indptr.shape[0] - 1):
        s = _score(
            np.uint64(indptr[r]), np.uint64(indptr[r + 1]), indices, values, w0, w, V,
            empty_w, empty_v, no_groups, n_features, sums, sqs,
        )  # fmt: skip
        p = min(max(normal_cdf(s), _LOG_EPS), 1.0 - _LOG_EPS)
        if y[r] > 0.0:
            loss -= math.log(p)
            correct += p >= 0.5
        else:
            loss -= math.log(1.0 - p)
            correct += p < 0.5
    return loss, correct


# --- the learner ---------------------------------------------------------------------------------


class CoordinateLearner(LearnerHooks):
    """ALS or MCMC over all training rows, one iteration per epoch (see the module docstring).

    State deciding the next iteration: the parameters, the hyper-parameters (MCMC draws them;
    ALS keeps the regularisation there), the iteration number, the range of targets (clipping)
    and, with the run, the training rows (`training_parts`). MCMC also keeps the thinned
    samples (model file) and the holdout sums (checkpoint).
    """

    methods = ("als", "mcmc")
    replays_rows = False

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        task: Task = "regression",
        group_regularization: dict[int, GroupRegularization] | None = None,
        params: FMParams | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        if learner.method not in METHODS:
            raise ValueError(f"CoordinateLearner does als or mcmc, not {learner.method!r}")
        self.config = learner
        self.method = learner.method
        self.task: Task = task
        self.seed = int(model.seed)
        self.params = params or FMParams(
            model.k, seed=model.seed, init_std=model.init_std, dtype=np.float64, random_w=True
        )
        self.group_regularization: dict[int, GroupRegularization] = dict(group_regularization or {})
        self.t = 0  # training rows taken
        self.iteration = 0  # iterations done
        self.n_averaged = 0  # MCMC: samples after burn_in (each added to the holdout sums)
        self.target_range = np.array([np.inf, -np.inf], dtype=np.float64)
        self.hyper: dict[str, np.ndarray] | None = None
        self.samples: dict[str, Any] | None = None
        self.store = ColumnStore(None)
        self.holdout = HoldoutSums(None)
        self._schedule: tuple[np.ndarray, np.ndarray] | None = None  # of the finalized columns

    @property
    def sampling(self) -> bool:
        return self.method == "mcmc"

    # --- hooks
    def set_storage(self, folder: Path | None) -> None:
        """Keep the training rows and holdout sums as files in `folder` (None: in memory)."""
        if self.store.n_rows:
            raise RuntimeError("set_storage must come before the first training rows")
        self.store = ColumnStore(folder)
        self.holdout = HoldoutSums(folder)

    def training_parts(self) -> dict[str, Any]:
        return {"columns": self.store, "holdout": self.holdout}

    def end_training(self) -> None:
        self.store.remove()
        self.holdout.remove()

    # --- the first pass
    def learn(self, chunk: CSRChunk, y: np.ndarray) -> np.ndarray:
        """Take the chunk's rows into the training set (they are learnt at the end of the epoch);
        returns the current model's predictions."""
        if self.store.finalized:
            raise RuntimeError(
                f"{self.method} learns from a fixed set of training rows, taken in the first "
                "epoch: to learn from new rows, start a new run (model.init_from warm-starts it)"
            )
        n = self.params.n_features
        if chunk.nnz and (int(chunk.indices.min()) < 0 or int(chunk.indices.max()) >= n):
            raise IndexError(
                f"a feature id of the chunk is negative or not allocated (the parameters hold "
                f"{n} features): the chunk is corrupt or was built for another model"
            )
        y = np.ascontiguousarray(y, dtype=np.float64)
        if self.task == "regression" and y.size:
            self.target_range[0] = min(self.target_range[0], float(y.min()))
            self.target_range[1] = max(self.target_range[1], float(y.max()))
        pred = self._predict_params(chunk, raw=False)
        self.store.append(chunk, y)
        self.t += chunk.n_rows
        return pred

    # --- one iteration per epoch
    def _groups(self) -> tuple[np.ndarray, int]:
        """Group of every feature for the priors / regularisation, and the number of groups."""
        n = self.params.n_features
        if self.sampling and not self.config.mcmc.group_priors:
            return np.zeros(n, dtype=np.int32), 1
        group = np.ascontiguousarray(self.params.group[:n], dtype=np.int32)
        top = int(group.max(initial=0))
        if not self.sampling:
            top = max([top, *self.group_regularization])
        return group, top + 1

    def _new_hyper(self, n_groups: int) -> dict[str, np.ndarray]:
        """α = 1, μ = 0 and λ = the spec's regularisation (by group): ALS's fixed values, MCMC's
        start (λ is drawn before it is first used)."""
        k = self.params.k
        reg_w = np.full(n_groups, self.config.reg_linear, dtype=np.float64)
        reg_v = np.full(n_groups, self.config.reg_factors, dtype=np.float64)
        if not (self.sampling and not self.config.mcmc.group_priors):
            for g, reg in self.group_regularization.items():
                if g < n_groups and reg.linear is not None:
                    reg_w[g] = reg.linear
                if g < n_groups and reg.factors is not None:
                    reg_v[g] = reg.factors
        return {
            "alpha": np.ones(1),
            "w_mu": np.zeros(n_groups),
            "w_lambda": reg_w,
            "v_mu": np.zeros((n_groups, k)),
            "v_lambda": np.ascontiguousarray(np.repeat(reg_v[:, None], k, axis=1)),
        }

    def _hyper_prior(self) -> np.ndarray:
        m = self.config.mcmc
        return np.array([m.alpha_0, m.gamma_0, m.beta_0, m.mu_0], dtype=np.float64)

    def _clip(self) -> tuple[float, float]:
        lo, hi = self.target_range
        if self.task == "regression" and self.config.clip_predictions and lo <= hi:
            return float(lo), float(hi)
        return 1.0, 0.0

    def end_pass(self) -> dict[str, Any]:
        """One ALS / MCMC iteration over all training rows (the first builds the columns)."""
        p = self.params
        n = p.n_features
        if not self.store.finalized:
            self.store.finalize(n)
        group, n_groups = self._groups()
        if self.hyper is None:
            self.hyper = self._new_hyper(n_groups)
        h = self.hyper
        a = self.store.arrays()
        it = self.iteration
        threads = self.config.threads
        if self._schedule is None or len(self._schedule[1]) not in (0, n):
            self._schedule = threaded_schedule(
                a["col_ptr"], a["row_index"], len(a["y"]), n, threads
            )
        t0 = time.perf_counter()
        with numba_threads(threads):
            rejected = coordinate_iteration(
                a["indptr"], a["indices"], a["values"], a["col_ptr"], a["row_index"],
                a["col_values"], a["y"], p.w0, p.w[:n], p.V[:n], group, h["alpha"], h["w_mu"],
                h["w_lambda"], h["v_mu"], h["v_lambda"], float(self.config.reg_bias),
                self._hyper_prior(), METHODS[self.method], TASKS[self.task], self.seed, it,
                a["e"], a["q"], *self._schedule,
            )  # fmt: skip
        seconds = time.perf_counter() - t0
        self.iteration = it + 1
        if self.sampling and it >= self.config.mcmc.burn_in:
            self.n_averaged += 1
            if self._keeps(it):
                self._keep_sample(it)
        self.check_finite()
        record: dict[str, Any] = {"iteration": self.iteration, "seconds_iteration": seconds}
        record.update(self._train_metrics(a))
        if self.sampling and self.task == "regression":
            record["alpha"] = float(h["alpha"][0])
        if rejected:
            record["rejected_draws"] = int(rejected)
        return record

    def _train_metrics(self, a: dict[str, np.ndarray]) -> dict[str, float]:
        n_rows = self.store.n_rows
        if not n_rows:
            return {}
        if self.task == "regression":
            sse, sae = regression_errors(a["y"], a["e"], *self._clip())
            return {"train_rmse": math.sqrt(sse / n_rows), "train_mae": sae / n_rows}
        p = self.params
        loss, correct = classification_errors(
            a["indptr"], a["indices"], a["values"], a["y"], p.w0, p.w, p.V, p.n_features
        )
        return {"train_logloss": loss / n_rows, "train_accuracy": correct / n_rows}

    # --- samples (MCMC)
    def thinning(self) -> int:
        """Keep every n-th sample after burn-in: mcmc.thinning, or samples_kept spread evenly."""
        m = self.config.mcmc
        if m.thinning is not None:
            return int(m.thinning)
        after = max(self.config.epochs - m.burn_in, 1)
        return max(1, math.ceil(after / m.samples_kept))

    def _keeps(self, it: int) -> bool:
        return (it - self.config.mcmc.burn_in + 1) % self.thinning() == 0

    def _keep_sample(self, it: int) -> None:
        """Store the current parameters (float32) and prior means as a sample; beyond
        samples_kept the oldest is replaced."""
        p, h = self.params, self.hyper
        n, k = p.n_features, p.k
        size = self.config.mcmc.samples_kept
        s = self.samples
        if s is None or s["w"].shape[1] != n:
            s = self.samples = {
                "iterations": [],
                "w0": np.zeros(size),
                "w": np.zeros((size, n), dtype=np.float32),
                "V": np.zeros((size, n, k), dtype=np.float32),
                "w_mu": np.zeros((size, len(h["w_mu"]))),
                "v_mu": np.zeros((size, len(h["w_mu"]), k)),
            }
        its = s["iterations"]
        if len(its) < size:
            slot = len(its)
            its.append(it)
        else:  # full: replace the oldest
            slot = int(np.argmin(its))
            its[slot] = it
        s["w0"][slot] = p.w0[0]
        s["w"][slot] = p.w[:n]
        s["V"][slot] = p.V[:n]
        s["w_mu"][slot] = h["w_mu"]
        s["v_mu"][slot] = h["v_mu"]

    def _prior_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu_w, mu_v, prior group of each feature group) of the current parameters: MCMC's
        prior means for unseen keys; empty for ALS (prior mean 0)."""
        k = self.params.k
        if not self.sampling or self.hyper is None:
            return np.zeros(0), np.zeros((0, k)), np.zeros(0, dtype=np.int64)
        return self.hyper["w_mu"], self.hyper["v_mu"], self._prior_map(len(self.hyper["w_mu"]))

    def _prior_map(self, n_prior: int) -> np.ndarray:
        """Prior group of each feature group (identity, or all 0 without group priors)."""
        if not self.config.mcmc.group_priors:
            return np.zeros(MAX_GROUPS, dtype=np.int64)
        return np.arange(n_prior, dtype=np.int64)

    # --- prediction
    def _predict_params(self, chunk: CSRChunk, raw: bool) -> np.ndarray:
        p = self.params
        mu_w, mu_v, pg = self._prior_groups()
        out = np.empty(chunk.n_rows)
        sample_predictions(
            chunk.indptr, chunk.indices, chunk.values, p.w0, p.w, p.V, mu_w, mu_v, pg,
            p.n_features, TASKS[self.task], *self._clip(), raw, False, out,
        )  # fmt: skip
        return out

    def _predict_samples(self, chunk: CSRChunk, raw: bool) -> np.ndarray:
        s = self.samples
        count = len(s["iterations"])
        out = np.zeros(chunk.n_rows)
        pg = self._prior_map(s["w_mu"].shape[1])
        lo, hi = self._clip()
        for i in range(count):
            sample_predictions(
                chunk.indptr, chunk.indices, chunk.values, s["w0"][i : i + 1], s["w"][i],
                s["V"][i], s["w_mu"][i], s["v_mu"][i], pg, s["w"].shape[1],
                TASKS[self.task], lo, hi, raw, True, out,
            )  # fmt: skip
        return out / count

    def _averaging(self) -> bool:
        return self.samples is not None and len(self.samples["iterations"]) > 0

    def predict(self, chunk: CSRChunk) -> np.ndarray:
        """Regression values (clipped to the training targets' range if configured) or P(y=1)
        = Φ(ŷ). MCMC: the average over the kept samples (the current parameters before any)."""
        if self._averaging():
            return self._predict_samples(chunk, raw=False)
        return self._predict_params(chunk, raw=False)

    def decision_function(self, chunk: CSRChunk) -> np.ndarray:
        """Raw FM scores ŷ (MCMC: averaged over the kept samples)."""
        if self._averaging():
            return self._predict_samples(chunk, raw=True)
        return self._predict_params(chunk, raw=True)

    def predict_holdout(self, chunk: CSRChunk, start: int) -> np.ndarray:
        """MCMC after burn-in: the running average of every sample's predictions of these holdout
        rows (libFM's); otherwise the current parameters' predictions."""
        if not (self.sampling and self.n_averaged):
            return self._predict_params(chunk, raw=False)
        hs = self.holdout
        hs.ensure(start + chunk.n_rows)
        p = self.params
        mu_w, mu_v, pg = self._prior_groups()
        out = np.empty(chunk.n_rows)
        holdout_average(
            chunk.indptr, chunk.indices, chunk.values, p.w0, p.w, p.V, mu_w, mu_v, pg,
            p.n_features, TASKS[self.task], *self._clip(), hs.arrays["sum"],
            hs.arrays["count"], hs.arrays["last"], int(start), self.iteration - 1, out,
        )  # fmt: skip
        return out

    def check_finite(self) -> None:
        if not self.params.all_finite():
            raise DivergenceError(
                f"{self.method} diverged: parameters became non-finite at iteration "
                f"{self.iteration}; scale large feature values"
            )

    # --- state
    def state_dict(self) -> dict[str, Any]:
        """The model (parameters, hyper-parameters, MCMC samples) and the counters."""
        lo, hi = self.target_range
        samples = None
        if self.samples is not None:
            m = len(self.samples["iterations"])
            samples = {
                "iterations": list(self.samples["iterations"]),
                **{k: v[:m] for k, v in self.samples.items() if k != "iterations"},
            }
        return {
            "task": self.task,
            "method": self.method,
            "t": int(self.t),
            "iteration": int(self.iteration),
            "n_averaged": int(self.n_averaged),
            "target_range": [
                float(lo) if np.isfinite(lo) else None,
                float(hi) if np.isfinite(hi) else None,
            ],
            "group_regularization": {
                str(g): r.model_dump() for g, r in self.group_regularization.items()
            },
            "hyper": self.hyper,
            "samples": samples,
            "params": self.params.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method", self.method) != self.method:
            raise ValueError(f"the saved learner used method {state['method']!r}")
        self.task = state["task"]
        self.t = int(state["t"])
        self.iteration = int(state["iteration"])
        self.n_averaged = int(state["n_averaged"])
        lo, hi = state["target_range"]
        self.target_range[:] = [np.inf if lo is None else lo, -np.inf if hi is None else hi]
        self.group_regularization = {
            int(g): GroupRegularization(**r) for g, r in state["group_regularization"].items()
        }
        hyper = state["hyper"]
        self.hyper = None if hyper is None else {k: np.array(v) for k, v in hyper.items()}
        self.samples = None
        saved = state["samples"]
        if saved is not None:
            size = self.config.mcmc.samples_kept
            m = len(saved["iterations"])
            if m > size:
                raise ValueError(f"{m} samples saved, but mcmc.samples_kept is {size}")
            self.samples = {"iterations": [int(i) for i in saved["iterations"]]}
            for key in ("w0", "w", "V", "w_mu", "v_mu"):
                a = np.asarray(saved[key])
                full = np.zeros((size, *a.shape[1:]), dtype=a.dtype)
                full[:m] = a
                self.samples[key] = full
        self.params.load_state_dict(state["params"])
