"""scikit-learn-style estimators: FMRegressor and FMClassifier.

Hyper-parameters live in `__init__` (validated by the pydantic ModelConfig / LearnerConfig when
fitting); fitted state in attributes ending with `_`. X is a scipy.sparse matrix (CSR preferred)
or anything `scipy.sparse.csr_matrix` accepts; column j is feature id j. New columns may appear
in later `partial_fit` calls: the model grows. At predict time, columns never seen in training
contribute nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from streamfm.config import (
    GroupRegularization,
    LearnerConfig,
    ModelConfig,
    format_validation_error,
)
from streamfm.csr import CSRChunk, to_chunk
from streamfm.errors import DataError, SpecError
from streamfm.learners.base import Learner, make_learner
from streamfm.rng import permutation
from streamfm.store.models import read_model_file, save_model_file

_MODEL_KEYS = set(ModelConfig.model_fields)
_LEARNER_KEYS = set(LearnerConfig.model_fields) - {"shuffle_buffer"}


class _FMBase:
    _task = "regression"

    def __init__(
        self,
        k: int = 8,
        *,
        optimizer: str = "sgd",
        learning_rate: float = 0.01,
        schedule: str = "constant",
        decay: float = 1e-6,
        power_t: float = 0.5,
        reg_bias: float = 0.0,
        reg_linear: float = 0.0,
        reg_factors: float = 0.01,
        init_std: float = 0.1,
        adagrad_init: float = 1.0,
        epochs: int = 10,
        shuffle: bool = False,
        clip_predictions: bool = True,
        feature_groups: Sequence[int] | np.ndarray | None = None,
        group_regularization: Mapping[int, tuple[float | None, float | None]] | None = None,
        seed: int = 0,
    ) -> None:
        self.k = k
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.decay = decay
        self.power_t = power_t
        self.reg_bias = reg_bias
        self.reg_linear = reg_linear
        self.reg_factors = reg_factors
        self.init_std = init_std
        self.adagrad_init = adagrad_init
        self.epochs = epochs
        self.shuffle = shuffle
        self.clip_predictions = clip_predictions
        self.feature_groups = feature_groups
        self.group_regularization = group_regularization
        self.seed = seed

    # --- scikit-learn parameter protocol
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(_FMBase.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters as given to `__init__`."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any):
        """Set hyper-parameters; takes effect at the next `fit` (or new `partial_fit` sequence)."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise SpecError(
                    f"{type(self).__name__}: unknown parameter {name!r}; valid: {valid}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(_FMBase.__init__).parameters.values()
        }
        changed = [
            f"{k}={v!r}"
            for k, v in self.get_params().items()
            if not (isinstance(v, np.ndarray) or v is None and defaults[k] is None)
            and v != defaults[k]
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    # --- configuration
    def _configs(self) -> tuple[ModelConfig, LearnerConfig, dict[int, GroupRegularization]]:
        params = self.get_params()
        try:
            model = ModelConfig(**{k: params[k] for k in _MODEL_KEYS})
            learner = LearnerConfig(**{k: params[k] for k in _LEARNER_KEYS})
            groups = {
                int(g): GroupRegularization(linear=lin, factors=fac)
                for g, (lin, fac) in (self.group_regularization or {}).items()
            }
        except ValidationError as exc:
            raise SpecError(f"{type(self).__name__}: {format_validation_error(exc)}") from None
        except (TypeError, ValueError) as exc:
            raise SpecError(
                f"{type(self).__name__}: group_regularization must map group -> "
                f"(linear, factors): {exc}"
            ) from None
        return model, learner, groups

    def _new_learner(self) -> Learner:
        model, learner, groups = self._configs()
        lrn = make_learner(model, learner, self._task, groups)
        if self.feature_groups is not None:
            fg = np.asarray(self.feature_groups)
            if fg.ndim != 1 or not np.issubdtype(fg.dtype, np.integer) or (fg < 0).any():
                raise SpecError(
                    f"{type(self).__name__}: feature_groups must be a 1-D array of "
                    "non-negative group numbers, one per column"
                )
            lrn.params.ensure_features(len(fg))
            lrn.params.n_features = 0  # the columns are known, not yet seen
            lrn.params.group[: len(fg)] = fg
        return lrn

    # --- data checks
    def _check_X(self, X) -> tuple[CSRChunk, int]:
        return to_chunk(X)

    def _check_y(self, y, n_rows: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(f"y must be 1-D, got shape {y.shape}")
        if y.shape[0] != n_rows:
            raise DataError(f"X has {n_rows} rows but y has {y.shape[0]} values")
        try:
            yf = y.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"y must be numeric, got dtype {y.dtype}") from None
        if not np.isfinite(yf).all():
            bad = int(np.flatnonzero(~np.isfinite(yf))[0])
            raise DataError("y holds a non-finite target", row=bad, value=float(yf[bad]))
        return yf

    # --- fitting
    def fit(self, X, y):
        """Learn from scratch: `epochs` passes over (X, y) (rows in order, or reshuffled each
        pass with `shuffle=True`)."""
        chunk, n_cols = self._check_X(X)
        yy = self._encode_y(self._check_y(y, chunk.n_rows), reset=True)
        self.learner_ = self._new_learner()
        self.n_features_in_ = n_cols
        for epoch in range(self.epochs):
            self._pass(chunk, yy, epoch)
        self.learner_.params.ensure_features(n_cols)
        self.learner_.check_finite()
        self.n_epochs_ = self.epochs
        return self

    def partial_fit(self, X, y, **kwargs):
        """One pass over (X, y), continuing from the current state (or starting one)."""
        chunk, n_cols = self._check_X(X)
        first = not hasattr(self, "learner_")
        yy = self._encode_y(self._check_y(y, chunk.n_rows), reset=first, **kwargs)
        if first:
            self.learner_ = self._new_learner()
            self.n_features_in_ = 0
            self.n_epochs_ = 0
        self.n_features_in_ = max(self.n_features_in_, n_cols)
        self._pass(chunk, yy, self.n_epochs_)
        self.learner_.params.ensure_features(n_cols)
        self.learner_.check_finite()
        self.n_epochs_ += 1
        return self

    def _pass(self, chunk: CSRChunk, y: np.ndarray, epoch: int) -> None:
        # Columns are feature ids: a column seen for the first time gets its parameters now.
        self.learner_.params.ensure_features(chunk.max_id() + 1)
        order = permutation(self.seed, epoch, chunk.n_rows) if self.shuffle else None
        self.learner_.learn(chunk, y, order)

    def _encode_y(self, y: np.ndarray, reset: bool, **kwargs) -> np.ndarray:
        return y

    def _fitted(self) -> Learner:
        if not hasattr(self, "learner_"):
            raise SpecError(
                f"this {type(self).__name__} is not fitted yet: call fit or partial_fit"
            )
        return self.learner_

    def decision_function(self, X) -> np.ndarray:
        """Raw FM scores y(x) (float64, n_rows)."""
        chunk, _ = self._check_X(X)
        return self._fitted().decision_function(chunk)

    # --- fitted parameters
    @property
    def w0_(self) -> float:
        return float(self._fitted().params.w0[0])

    @property
    def w_(self) -> np.ndarray:
        p = self._fitted().params
        return p.w[: p.n_features]

    @property
    def V_(self) -> np.ndarray:
        p = self._fitted().params
        return p.V[: p.n_features]

    # --- persistence
    def save(self, path: str | Path) -> None:
        """Write the fitted model to one file (zip of .npy arrays and meta.json; no pickle)."""
        lrn = self._fitted()
        params = self.get_params()
        if params["feature_groups"] is not None:
            params["feature_groups"] = np.asarray(params["feature_groups"]).tolist()
        if params["group_regularization"] is not None:
            params["group_regularization"] = {
                str(g): list(v) for g, v in params["group_regularization"].items()
            }
        meta = {
            "kind": type(self).__name__,
            "params": params,
            "n_features_in": int(self.n_features_in_),
            "n_epochs": int(self.n_epochs_),
            **self._extra_meta(),
        }
        save_model_file(path, meta, {"learner": lrn.state_dict()})

    def _extra_meta(self) -> dict:
        return {}

    @classmethod
    def _from_saved(cls, meta: dict, state: dict[str, Any]):
        params = dict(meta["params"])
        if params.get("group_regularization") is not None:
            params["group_regularization"] = {
                int(g): tuple(v) for g, v in params["group_regularization"].items()
            }
        est = cls(**params)
        model, learner, groups = est._configs()
        est.learner_ = make_learner(model, learner, cls._task, groups)
        est.learner_.load_state_dict(state["learner"])
        est.n_features_in_ = int(meta["n_features_in"])
        est.n_epochs_ = int(meta["n_epochs"])
        est._load_extra_meta(meta)
        return est

    def _load_extra_meta(self, meta: dict) -> None:
        pass

    @classmethod
    def load(cls, path: str | Path):
        """Load a model written by `save`."""
        meta, state = read_model_file(path)
        if meta.get("kind") != cls.__name__:
            raise SpecError(f"{path} holds a {meta.get('kind')}, not a {cls.__name__}")
        return cls._from_saved(meta, state)


class FMRegressor(_FMBase):
    """Factorization machine for regression (squared loss), trained by per-case SGD or AdaGrad.

    Predictions are clipped to the [min, max] of the training targets (as libFM does) unless
    `clip_predictions=False`.
    """

    _task = "regression"

    def predict(self, X) -> np.ndarray:
        """Predicted targets (float64, n_rows)."""
        chunk, _ = self._check_X(X)
        return self._fitted().predict(chunk)

    def score(self, X, y) -> float:
        """Coefficient of determination R² of the predictions (scikit-learn's convention)."""
        y = np.asarray(y, dtype=np.float64)
        pred = self.predict(X)
        ss_res = float(np.sum((y - pred) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


class FMClassifier(_FMBase):
    """Factorization machine for binary classification (logistic loss).

    Labels are {0, 1} or {-1, +1} (booleans count as {0, 1}); `classes_` keeps the encoding seen,
    and `predict` answers in it.
    """

    _task = "classification"

    def _encode_y(self, y: np.ndarray, reset: bool, classes=None) -> np.ndarray:
        values = np.unique(y)
        if classes is not None:
            declared = np.unique(np.asarray(classes, dtype=np.float64))
            if reset and not _valid_classes(declared):
                raise DataError(f"classes must be [0, 1] or [-1, 1], got {list(classes)}")
            if not reset and not np.array_equal(declared, self.classes_):
                raise DataError(
                    f"classes {list(classes)} differ from the fitted {self.classes_.tolist()}"
                )
        else:
            declared = None
        if reset:
            if declared is not None:
                self.classes_ = declared
            elif (values == -1).any():
                self.classes_ = np.array([-1.0, 1.0])
            else:
                self.classes_ = np.array([0.0, 1.0])
        bad = ~np.isin(values, self.classes_)
        if bad.any():
            raise DataError(
                f"classification labels must be {{0, 1}} or {{-1, +1}}; with classes "
                f"{self.classes_.astype(int).tolist()} the label {values[bad][0]:g} is not allowed"
            )
        return (y == self.classes_[1]).astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_rows, 2): columns for classes_[0] and classes_[1]."""
        chunk, _ = self._check_X(X)
        p1 = self._fitted().predict(chunk)
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X) -> np.ndarray:
        """Predicted labels in the encoding of `classes_` (threshold 0.5)."""
        p1 = self.predict_proba(X)[:, 1]
        return np.where(p1 >= 0.5, self.classes_[1], self.classes_[0])

    def score(self, X, y) -> float:
        """Mean accuracy (scikit-learn's convention)."""
        return float(np.mean(self.predict(X) == np.asarray(y, dtype=np.float64)))

    def _extra_meta(self) -> dict:
        return {"classes": self.classes_.tolist()}

    def _load_extra_meta(self, meta: dict) -> None:
        self.classes_ = np.asarray(meta["classes"], dtype=np.float64)


def _valid_classes(classes: np.ndarray) -> bool:
    return classes.tolist() in ([0.0, 1.0], [-1.0, 1.0])
