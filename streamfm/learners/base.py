"""The Learner protocol the training loop talks to, and the registry of learners by method.

A learner owns the FM parameters (`params`) and everything that decides its next update. The
loop makes room for new feature ids (`params.ensure_features`, with their groups in
`params.group`), then hands it built chunks; learners differ in how they learn, not in how they
are driven. Adding a learner: implement the protocol, register its class in `learner_class`.

Learners that do not learn case by case (ALS, MCMC: they sweep over all training rows at once)
tell the loop so through the capability hooks below; `LearnerHooks` gives every hook the
behaviour of a case-by-case learner, so SGD needs none of them and the loop holds no code for
any one method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.learners.params import FMParams


class Learner(Protocol):
    """What the training loop, the saved model and the estimators use of a learner."""

    params: FMParams
    task: str
    #: False: the learner takes every training row once (`learn` in the first epoch) and learns
    #: at the end of each epoch (`end_pass`); the loop then reads no rows in later epochs (no
    #: chunk cache, no rebuild) and records no progressive metrics for it.
    replays_rows: bool

    def learn(self, chunk: CSRChunk, y: np.ndarray) -> np.ndarray:
        """Learn from the chunk's rows (y: float64 targets, 0/1 for classification); returns the
        predictions made before each row's update (float64, n_rows)."""
        ...

    def predict(self, chunk: CSRChunk) -> np.ndarray:
        """Predictions (regression values or P(y=1)), float64 (n_rows,)."""
        ...

    def decision_function(self, chunk: CSRChunk) -> np.ndarray:
        """Raw FM scores, float64 (n_rows,)."""
        ...

    def check_finite(self) -> None:
        """Raise DivergenceError if a parameter is non-finite."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-able values and numpy arrays (possibly views of live state): the model, as a
        model file holds it, and what decides the next update."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...

    # --- capability hooks (defaults in LearnerHooks)
    def set_storage(self, folder: Path | None) -> None:
        """Where the learner may keep on-disk data of a training run (the run's cache folder;
        None: in memory). Called by the loop before the first chunk and before a resume."""
        ...

    def end_pass(self) -> dict[str, Any]:
        """Called by the loop after the last chunk of every epoch, before the epoch's record.
        Returns extra fields for that record (e.g. ``iteration``, ``train_rmse``)."""
        ...

    def predict_holdout(self, chunk: CSRChunk, start: int) -> np.ndarray:
        """Predictions for rows start .. start + n_rows - 1 of the holdout, during training (the
        holdout is always visited in the same order, from row 0). A sample-averaging learner adds
        its current sample to per-row sums (once per sample) and returns the running averages,
        as libFM does; others return `predict(chunk)`."""
        ...

    def training_parts(self) -> dict[str, Any]:
        """Stateful parts of a training run that belong to the learner but not to its model file
        (on-disk training rows, holdout sums): name -> object with state_dict/load_state_dict.
        The loop checkpoints them as ``learner_<name>``."""
        ...

    def end_training(self) -> None:
        """The run is complete (its final checkpoint written): release on-disk data."""
        ...


class LearnerHooks:
    """Defaults of the capability hooks: those of a case-by-case learner (SGD)."""

    replays_rows: ClassVar[bool] = True

    def set_storage(self, folder: Path | None) -> None:
        pass

    def end_pass(self) -> dict[str, Any]:
        return {}

    def predict_holdout(self, chunk: CSRChunk, start: int) -> np.ndarray:
        return self.predict(chunk)  # type: ignore[attr-defined]

    def training_parts(self) -> dict[str, Any]:
        return {}

    def end_training(self) -> None:
        pass


def learner_class(method: str, task: str = "regression") -> type:
    """The learner class implementing `learner.method` `method` for `task` (only its module is
    imported). Task ranking: `learners.ranking.RankingLearner`, with sgd or adagrad as the step
    rule."""
    if task == "ranking":
        if method not in ("sgd", "adagrad"):
            raise ValueError(f"task ranking learns with sgd or adagrad, not {method!r}")
        from streamfm.learners.ranking import RankingLearner as cls
    elif method in ("sgd", "adagrad"):
        from streamfm.learners.sgd import SGDLearner as cls
    elif method == "sgda":
        from streamfm.learners.sgda import SGDALearner as cls
    elif method in ("als", "mcmc"):
        from streamfm.learners.coordinate_learner import CoordinateLearner as cls
    else:
        raise ValueError(f"unknown learning method {method!r}")
    return cls


def make_learner(
    model: ModelConfig,
    learner: LearnerConfig,
    task: str,
    group_regularization: dict[int, GroupRegularization] | None = None,
    ranking: dict[str, Any] | None = None,
) -> Learner:
    """A new learner for the spec's model, learner and task sections (task ranking: `ranking`
    is the set-up `RankingLearner` takes)."""
    cls = learner_class(learner.method, task)
    if task == "ranking":
        return cls(model, learner, task=task, group_regularization=group_regularization,
                   ranking=ranking)  # fmt: skip
    return cls(model, learner, task=task, group_regularization=group_regularization)


def warm_start(learner: Learner, saved: dict[str, Any]) -> None:
    """Start `learner` from the parameters of a saved learner state (any method): w0, w, V and
    the feature groups, and the range of targets seen (clipping). The step rule's state
    (AdaGrad's sums), counters and samples start afresh. ValueError if k differs."""
    learner.params.load_values(saved["params"])
    lo_hi = saved.get("target_range")
    target_range = getattr(learner, "target_range", None)
    if lo_hi is not None and target_range is not None:
        lo, hi = lo_hi
        target_range[:] = [np.inf if lo is None else lo, -np.inf if hi is None else hi]
