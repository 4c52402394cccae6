"""The Learner protocol the training loop talks to, and the registry of learners by method.

A learner owns the FM parameters (`params`) and everything that decides its next update. The
loop makes room for new feature ids (`params.ensure_features`, with their groups in
`params.group`), then hands it built chunks; learners differ in how they learn, not in how they
are driven. Adding a learner: implement the protocol, register its class in `LEARNERS`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.learners.params import FMParams


class Learner(Protocol):
    """What the training loop, the saved model and the estimators use of a learner."""

    params: FMParams
    task: str

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
        """JSON-able values and numpy arrays (possibly views of live state)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...


def learner_class(method: str) -> type:
    """The learner class implementing `learner.optimizer` / method `method`."""
    from streamfm.learners.sgd import SGDLearner

    for cls in (SGDLearner,):
        if method in cls.methods:
            return cls
    raise ValueError(f"unknown learning method {method!r}")


def make_learner(
    model: ModelConfig,
    learner: LearnerConfig,
    task: str,
    group_regularization: dict[int, GroupRegularization] | None = None,
) -> Learner:
    """A new learner for the spec's model, learner and task sections."""
    cls = learner_class(learner.optimizer)
    return cls(model, learner, task=task, group_regularization=group_regularization)
