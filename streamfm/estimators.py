"""scikit-learn estimators: FMRegressor and FMClassifier.

X is one of

- an **array**: a numpy array or scipy.sparse matrix (CSR preferred) whose column j is feature id
  j. Dense arrays have fixed columns (fit sets `n_features_in_`, later calls must match); sparse
  matrices name feature ids, so new columns may appear in later `partial_fit` calls (the model
  grows), and at predict time ids never seen in training contribute nothing.
- a **table**: a pandas DataFrame, pyarrow Table or RecordBatch (anything with the Arrow stream
  interface). Its columns become features through the same builders as a spec's `features`
  (`features=[...]`, or one builder per column chosen by its type: text, categorical and boolean
  columns one-hot, numbers standardised, ...): a DataFrame is just another source. Values never
  seen in training contribute nothing at predict time. `feature_names_in_` holds the columns.

Hyper-parameters live in `__init__` (validated by the pydantic `EstimatorConfig` when fitting;
its defaults are the signature's); fitted state in attributes ending with `_`. With
scikit-learn installed (`pip install streamfm[sklearn]`) these are scikit-learn estimators
(BaseEstimator with RegressorMixin / ClassifierMixin: pipelines, grid search, cross-validation);
without it they keep their methods, `get_params` and `set_params`.

`method` picks the learner as a spec's learner.method does (sgd, adagrad, sgda, als, mcmc;
default: `optimizer`, its older name). ALS and MCMC learn from all rows at once (`fit` only, no
`partial_fit`, no sample weights): `n_iter` iterations (default `epochs`); MCMC averages its
predictions over `samples_kept` thinned samples after `burn_in` iterations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from streamfm.config import (
    EstimatorConfig,
    GroupRegularization,
    LearnerConfig,
    ModelConfig,
    format_validation_error,
)
from streamfm.csr import CSRChunk, concat, to_chunk
from streamfm.errors import DataError, SpecError
from streamfm.frames import batches, default_features, is_pandas, is_table, to_table
from streamfm.learners.base import Learner, make_learner
from streamfm.learners.sgd import sigmoid
from streamfm.rng import permutation
from streamfm.store.models import read_model_file, save_model_file

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import (
        check_array,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )

    HAVE_SKLEARN = True
except ImportError:  # the estimators work without scikit-learn, outside its tooling
    HAVE_SKLEARN = False
    from streamfm._sklearn_shim import (  # type: ignore[assignment]
        BaseEstimator,
        ClassifierMixin,
        NotFittedError,
        RegressorMixin,
        check_is_fitted,
    )

__all__ = ["FMClassifier", "FMRanker", "FMRegressor", "NotFittedError", "expected_failed_checks"]

_D = {name: f.default for name, f in EstimatorConfig.model_fields.items()}
_MODEL_KEYS = [k for k in ModelConfig.model_fields if k != "init_from"]
_LEARNER_KEYS = [
    k
    for k in LearnerConfig.model_fields
    if k not in ("shuffle_buffer", "method", "mcmc", "sgda", "threads")
]
_MCMC_KEYS = ("burn_in", "samples_kept")
# Parameters that estimator files written before they existed did without.
_LEGACY_PARAMS = {"standardize": False, "features": None, "n_jobs": None}


class _FMBase(BaseEstimator):
    _task = "regression"

    def __init__(
        self,
        k: int = _D["k"],
        *,
        optimizer: str = _D["optimizer"],
        method: str | None = None,
        n_iter: int | None = None,
        burn_in: int = 0,
        samples_kept: int = 20,
        learning_rate: float = _D["learning_rate"],
        schedule: str = _D["schedule"],
        decay: float = _D["decay"],
        power_t: float = _D["power_t"],
        reg_bias: float = _D["reg_bias"],
        reg_linear: float = _D["reg_linear"],
        reg_factors: float = _D["reg_factors"],
        init_std: float = _D["init_std"],
        adagrad_init: float = _D["adagrad_init"],
        epochs: int = _D["epochs"],
        shuffle: bool = _D["shuffle"],
        clip_predictions: bool = _D["clip_predictions"],
        standardize: bool = _D["standardize"],
        features: list[dict[str, Any]] | None = _D["features"],
        feature_groups: Sequence[int] | np.ndarray | None = None,
        group_regularization: Mapping[int | str, tuple[float | None, float | None]] | None = None,
        n_jobs: int | None = _D["n_jobs"],
        seed: int = _D["seed"],
    ) -> None:
        self.k = k
        self.optimizer = optimizer
        self.method = method
        self.n_iter = n_iter
        self.burn_in = burn_in
        self.samples_kept = samples_kept
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
        self.standardize = standardize
        self.features = features
        self.feature_groups = feature_groups
        self.group_regularization = group_regularization
        self.n_jobs = n_jobs
        self.seed = seed

    # --- scikit-learn conventions
    def set_params(self, **params: Any):
        """Set hyper-parameters; they take effect at the next `fit` (or new `partial_fit`)."""
        valid = self._get_param_names()
        for name in params:
            if name not in valid:
                raise SpecError(
                    f"{type(self).__name__}: unknown parameter {name!r}; valid: {valid}"
                )
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.categorical = True  # through DataFrames
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "learners_")

    # --- configuration
    def _config(self) -> EstimatorConfig:
        params = self.get_params()
        if self.method is not None:  # method names the learner; optimizer is its old name
            params["optimizer"] = None
        try:
            return EstimatorConfig(
                **{k: v for k, v in params.items() if k in EstimatorConfig.model_fields}
            )
        except ValidationError as exc:
            raise SpecError(f"{type(self).__name__}: {format_validation_error(exc)}") from None

    def _configs(self) -> tuple[ModelConfig, LearnerConfig, dict[int, GroupRegularization]]:
        cfg = self._config()
        model = ModelConfig(**{k: getattr(cfg, k) for k in _MODEL_KEYS})
        learner = {k: getattr(cfg, k) for k in _LEARNER_KEYS}
        learner.update(method=cfg.method, optimizer=None)
        if self.n_iter is not None:
            learner["epochs"] = self.n_iter
        try:
            learner = LearnerConfig(**learner, mcmc={k: getattr(self, k) for k in _MCMC_KEYS})
        except ValidationError as exc:
            raise SpecError(f"{type(self).__name__}: {format_validation_error(exc)}") from None
        names = [b.name for b in self.pipeline_.builders] if self._table else []
        groups: dict[int, GroupRegularization] = {}
        for g, value in (self.group_regularization or {}).items():
            if isinstance(g, str):
                if g not in names:
                    raise SpecError(
                        f"{type(self).__name__}: group_regularization names group {g!r}, which is "
                        f"no feature builder (builders: {names})"
                    )
                g = names.index(g)
            try:
                lin, fac = value
                groups[int(g)] = GroupRegularization(linear=lin, factors=fac)
            except ValidationError as exc:
                raise SpecError(
                    f"{type(self).__name__}: group_regularization[{g!r}]: "
                    f"{format_validation_error(exc)}"
                ) from None
            except (TypeError, ValueError) as exc:
                raise SpecError(
                    f"{type(self).__name__}: group_regularization must map group -> "
                    f"(linear, factors): {exc}"
                ) from None
        return model, learner, groups

    def _new_learners(self, n: int) -> list[Learner]:
        model, learner, groups = self._configs()
        if n == 1 and learner.method in ("sgd", "adagrad", "als", "mcmc"):
            # One model (regression, two classes): n_jobs threads learn it (sgd, adagrad:
            # Hogwild; als, mcmc: the sweeps' waves, the same model as one thread).
            learner = learner.model_copy(update={"threads": _model_threads(self.n_jobs)})
        return [make_learner(model, learner, self._task, groups) for _ in range(n)]

    def _groups_of(self, start: int, stop: int) -> np.ndarray:
        """Feature groups of ids [start, stop)."""
        if self.pipeline_ is not None:
            return self.pipeline_.space.id_group[start:stop]
        out = np.zeros(stop - start, dtype=np.int32)
        fg = self._feature_groups
        if fg is not None and start < len(fg):
            out[: min(stop, len(fg)) - start] = fg[start:stop]
        return out

    def _ids_used(self, chunk: CSRChunk) -> int:
        """Ids that need parameters: every id the table's feature space allocated, or the
        array's columns used."""
        return self.pipeline_.space.n_ids if self._table else chunk.max_id() + 1

    def _make_room(self, n_ids: int) -> None:
        """Give ids [0, n_ids) parameters in every learner (with their feature groups)."""
        for lrn in self.learners_:
            p = lrn.params
            seen = p.n_features
            if n_ids > seen:
                p.ensure_features(n_ids)
                p.group[seen:n_ids] = self._groups_of(seen, n_ids)

    # --- input
    def _check_feature_groups(self) -> np.ndarray | None:
        if self.feature_groups is None:
            return None
        fg = np.asarray(self.feature_groups)
        if fg.ndim != 1 or not np.issubdtype(fg.dtype, np.integer) or (fg < 0).any():
            raise SpecError(
                f"{type(self).__name__}: feature_groups must be a 1-D array of "
                "non-negative group numbers, one per column"
            )
        return fg.astype(np.int32)

    def _start(self, X) -> None:
        """Forget any previous fit; decide how X is read (an array or a table) from this X."""
        for name in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, name)
        self._config()  # hyper-parameters are checked before anything else
        self._feature_groups = self._check_feature_groups()
        self._table = is_table(X) and not _issparse(X) and not isinstance(X, Mapping)
        self.pipeline_ = None
        self.n_epochs_ = 0
        name = type(self).__name__
        if self._table and self.feature_groups is not None:
            raise SpecError(
                f"{name}: feature_groups numbers the columns of an array X; with a table every "
                "builder is a feature group (group_regularization takes builder names)"
            )
        if not self._table and self.features is not None:
            raise SpecError(
                f"{name}: features=[...] builds features from the named columns of a DataFrame "
                "or pyarrow Table; this X is an array (its column j is feature id j)"
            )

    def _rows(
        self, X, *, training: bool, reset: bool, grow: bool, sample_weight=None
    ) -> tuple[CSRChunk, int, np.ndarray | None]:
        """(CSRChunk of X checked and scaled as fitted, number of rows, the rows' weights)."""
        if self._table:
            return self._table_rows(X, training=training, reset=reset, sample_weight=sample_weight)
        return self._array_rows(X, reset=reset, grow=grow, sample_weight=sample_weight)

    def _table_rows(self, X, *, training: bool, reset: bool, sample_weight=None):
        name = type(self).__name__
        if not is_table(X) or _issparse(X):
            if _issparse(X):
                raise DataError(
                    f"this {name} was fitted on a table (columns {self._columns}): pass a "
                    "DataFrame or pyarrow Table, not a sparse matrix"
                )
            if HAVE_SKLEARN:  # warns: X has no feature names, but ... was fitted with them
                validate_data(self, X, skip_check_array=True, reset=False)
            X = np.asarray(X)
            if X.ndim != 2 or X.shape[1] != len(self._columns):
                raise DataError(
                    f"X has shape {X.shape}, but {name} was fitted on a table of "
                    f"{len(self._columns)} columns {self._columns}"
                )
            X = {c: X[:, i] for i, c in enumerate(self._columns)}
        elif HAVE_SKLEARN:  # feature_names_in_ and n_features_in_, checked as scikit-learn does
            validate_data(self, X, skip_check_array=True, reset=reset)
        table = to_table(X, "X")
        w = self._weights(sample_weight, table.num_rows)
        if reset:
            self._columns = list(table.column_names)
            if not HAVE_SKLEARN:
                self.n_features_in_ = len(self._columns)
                if all(isinstance(c, str) for c in _names(X)):
                    self.feature_names_in_ = np.asarray(self._columns, dtype=object)
            self._build_pipeline(table, w)
        missing = [c for c in self.pipeline_.columns() if c not in table.column_names]
        if missing:
            raise DataError(
                f"X lacks the column(s) {missing} that {name} was fitted with (columns: "
                f"{table.column_names})"
            )
        chunks = [self.pipeline_.transform(b, training=training) for b in batches(table)]
        return concat(chunks), table.num_rows, w

    def _build_pipeline(self, table, w: np.ndarray | None) -> None:
        """The table's builders: `features`, or one per column with, for numbers, the mean and
        std of this table (columns of 0 and 1 only are kept as they are)."""
        from streamfm.features.arrow import as_float
        from streamfm.features.pipeline import FeaturePipeline

        if self.features is not None:
            self.features_ = [dict(b) for b in self.features]
        else:
            self.features_ = default_features(table.schema, standardize=False)
            for b in self.features_:
                if b["type"] != "numeric" or not self.standardize:
                    continue
                column = table.column(b["columns"][0]).combine_chunks()
                if hasattr(column, "dictionary_decode"):
                    column = column.dictionary_decode()
                offset, scale = _column_scaling(as_float(column, b["name"], "X"), w)
                if (offset, scale) != (0.0, 1.0):
                    b.update(transform="standardize", mean=offset, std=scale)
        self.pipeline_ = FeaturePipeline.from_specs(self.features_)

    def _array_rows(self, X, *, reset: bool, grow: bool, sample_weight=None):
        name = type(self).__name__
        if isinstance(X, tuple):  # scipy's (data, (rows, cols)) or (data, indices, indptr)
            X = _csr_of_tuple(X)
        sparse = _issparse(X)
        if is_table(X) and not sparse:
            raise DataError(
                f"this {name} was fitted on an array (column j is feature id j), not on a table: "
                "fit it on the DataFrame to use its columns"
            )
        # Non-finite values are found below, naming their row and column.
        kw = {"dtype": (np.float64, np.float32), "ensure_all_finite": False}
        if HAVE_SKLEARN and not sparse:
            X = validate_data(self, X, reset=reset, **kw)
        elif HAVE_SKLEARN:
            X = check_array(X, accept_sparse="csr", estimator=self, **kw)
        else:
            X = _to_matrix(X)
        _check_finite(X)
        n_rows, n_cols = X.shape
        if reset:
            self.n_features_in_ = n_cols
        elif sparse and grow:
            self.n_features_in_ = max(self.n_features_in_, n_cols)
        elif not sparse and n_cols != self.n_features_in_:
            raise DataError(
                f"X has {n_cols} features, but {name} is expecting {self.n_features_in_} "
                "features as input."
            )
        w = self._weights(sample_weight, n_rows)
        if reset:
            self._learn_scaling(X, sparse, w)
        chunk, _ = to_chunk(self._scaled(X, sparse))
        return chunk, n_rows, w

    def _learn_scaling(self, X, sparse: bool, sample_weight) -> None:
        """Column offsets and scales from the first X (rows of weight 0 do not count)."""
        n_cols = X.shape[1]
        self.x_offset_ = np.zeros(n_cols)
        self.x_scale_ = np.ones(n_cols)
        if not self.standardize or X.shape[0] == 0:
            return
        w = sample_weight
        if sparse:
            w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
            rows = X[np.flatnonzero(w > 0)]
            top = np.asarray(abs(rows).max(axis=0).todense()).ravel()
            self.x_scale_ = np.where(top > 0, top, 1.0)
            return
        X = np.asarray(X, dtype=np.float64)
        for j in range(n_cols):
            self.x_offset_[j], self.x_scale_[j] = _column_scaling(X[:, j], w)

    def _scaled(self, X, sparse: bool):
        if not self.standardize:
            return X
        if sparse:
            scale = np.ones(X.shape[1])
            m = min(X.shape[1], len(self.x_scale_))
            scale[:m] = self.x_scale_[:m]
            X = X.astype(np.float64) @ _diag(1.0 / scale)
            return X
        return (np.asarray(X, dtype=np.float64) - self.x_offset_) / self.x_scale_

    def _targets(self, y, n_rows: int) -> np.ndarray:
        """y as a 1-D array of n_rows values (not yet encoded)."""
        name = type(self).__name__
        if y is None:
            raise DataError(f"{name} requires y to be passed, but the target y is None")
        if HAVE_SKLEARN:
            y = column_or_1d(y, warn=True)
        else:
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise DataError(f"y must be 1-D, got shape {y.shape}")
        if y.shape[0] != n_rows:
            raise DataError(f"X has {n_rows} rows but y has {y.shape[0]} values")
        return y

    def _weights(self, sample_weight, n_rows: int) -> np.ndarray | None:
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == 0:
            w = np.full(n_rows, float(w))
        if w.shape != (n_rows,):
            raise DataError(f"sample_weight must have {n_rows} values (one per row), got {w.shape}")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError("sample_weight must be finite and >= 0", row=row, value=float(w[row]))
        if n_rows and not (w > 0).any():
            raise DataError("sample_weight: all weights are zero; at least one must be > 0")
        return w

    # --- fitting
    def fit(self, X, y, sample_weight=None):
        """Learn from scratch: `epochs` passes over (X, y), reshuffled every pass with
        `shuffle=True`. sample_weight: one weight >= 0 per row, multiplying its gradient."""
        self._start(X)
        chunk, n_rows, w = self._rows(
            X, training=True, reset=True, grow=False, sample_weight=sample_weight
        )
        if n_rows == 0:
            raise DataError(f"{type(self).__name__}: X has no rows (0 samples); need at least 1")
        targets = self._encode(self._targets(y, n_rows), w, first=True)
        self.learners_ = self._new_learners(len(targets))
        self._make_room(self._ids_used(chunk))
        epochs = self.learners_[0].config.epochs
        if not self.learners_[0].replays_rows:  # ALS, MCMC: the rows once, then iterations
            if w is not None:
                raise SpecError(
                    f"{type(self).__name__}: method {self.method!r} takes no sample_weight"
                )
            for lrn, t in zip(self.learners_, targets, strict=True):
                lrn.learn(chunk, t)
                for _ in range(epochs):
                    lrn.end_pass()
        else:
            for epoch in range(epochs):
                self._pass(chunk, targets, w, epoch)
        self._finish(epochs)
        return self

    def partial_fit(self, X, y, sample_weight=None, **kwargs):
        """One pass over (X, y), continuing from the current state (or starting one)."""
        first = not hasattr(self, "learners_")
        if first:
            self._start(X)
        chunk, n_rows, w = self._rows(
            X, training=True, reset=first, grow=True, sample_weight=sample_weight
        )
        targets = self._encode(self._targets(y, n_rows), w, first=first, **kwargs)
        if first:
            learners = self._new_learners(len(targets))
            if not learners[0].replays_rows:
                raise SpecError(
                    f"{type(self).__name__}: method {self.method!r} learns from all rows at "
                    "once: use fit, or a streaming method (sgd, adagrad, sgda) for partial_fit"
                )
            self.learners_ = learners
        self._make_room(self._ids_used(chunk))
        self._pass(chunk, targets, w, self.n_epochs_)
        self._finish(1)
        return self

    def _pass(self, chunk: CSRChunk, targets: list[np.ndarray], w, epoch: int) -> None:
        cfg = self._config()
        order = permutation(cfg.seed, epoch, chunk.n_rows) if cfg.shuffle else None
        jobs = [(lrn, t) for lrn, t in zip(self.learners_, targets, strict=True)]
        threads = _threads(self.n_jobs, len(jobs))
        if threads == 1:
            for lrn, t in jobs:
                lrn.learn(chunk, t, order, w)
        else:  # the kernels release the GIL: one-vs-rest models learn side by side
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda job: job[0].learn(chunk, job[1], order, w), jobs))

    def _finish(self, passes: int) -> None:
        if self.pipeline_ is None:
            self._make_room(self.n_features_in_)  # every column of X counts as seen
        for lrn in self.learners_:
            lrn.check_finite()
        self.n_epochs_ += passes

    def _encode(self, y: np.ndarray, w, first: bool, **kwargs) -> list[np.ndarray]:
        raise NotImplementedError

    def _scores(self, X) -> np.ndarray:
        """Raw FM scores, (n_rows, n_learners)."""
        check_is_fitted(self)
        chunk, _, _ = self._rows(X, training=False, reset=False, grow=False)
        return np.column_stack([lrn.decision_function(chunk) for lrn in self.learners_])

    # --- fitted parameters
    @property
    def learner_(self) -> Learner:
        """The learner (for FMClassifier with 3+ classes: see `learners_`, one per class)."""
        check_is_fitted(self)
        if len(self.learners_) != 1:
            raise AttributeError(f"{len(self.learners_)} one-vs-rest learners: see learners_")
        return self.learners_[0]

    def _param(self, name: str) -> np.ndarray:
        check_is_fitted(self)
        arrays = []
        for lrn in self.learners_:
            p = lrn.params
            arrays.append(p.w0[0] if name == "w0" else getattr(p, name)[: p.n_features])
        return arrays[0] if len(arrays) == 1 else np.stack(arrays)

    @property
    def w0_(self):
        """Global bias (per class with 3+ classes), in the units the model learnt in."""
        value = self._param("w0")
        return float(value) if np.ndim(value) == 0 else value

    @property
    def w_(self) -> np.ndarray:
        """Linear weights per feature id ((n_classes, n) with 3+ classes)."""
        return self._param("w")

    @property
    def V_(self) -> np.ndarray:
        """Factors per feature id, (n, k) ((n_classes, n, k) with 3+ classes)."""
        return self._param("V")

    # --- persistence
    def save(self, path: str | Path) -> None:
        """Write the fitted model to one file (zip of .npy arrays and meta.json; no pickle)."""
        check_is_fitted(self)
        params = self.get_params()
        if params["feature_groups"] is not None:
            params["feature_groups"] = np.asarray(params["feature_groups"]).tolist()
        if params["group_regularization"] is not None:
            params["group_regularization"] = {
                str(g): list(v) for g, v in params["group_regularization"].items()
            }
        meta: dict[str, Any] = {
            "kind": type(self).__name__,
            "params": params,
            "n_features_in": int(self.n_features_in_),
            "n_epochs": int(self.n_epochs_),
            **self._extra_meta(),
        }
        state: dict[str, Any] = {"learner": self.learners_[0].state_dict()}
        if len(self.learners_) > 1:
            state["ovr"] = [lrn.state_dict() for lrn in self.learners_[1:]]
        if self._table:
            meta["builders"] = self.features_
            meta["columns"] = self._columns
            if hasattr(self, "feature_names_in_"):
                meta["feature_names_in"] = [str(c) for c in self.feature_names_in_]
            state["features"] = self.pipeline_.state_dict()
        else:
            state["scaling"] = {"x_offset": self.x_offset_, "x_scale": self.x_scale_}
        save_model_file(path, meta, state)

    def _extra_meta(self) -> dict:
        return {}

    @classmethod
    def _from_saved(cls, meta: dict, state: dict[str, Any]):
        params = {**_LEGACY_PARAMS, **meta["params"]}
        if params.get("group_regularization") is not None:
            params["group_regularization"] = {
                (int(g) if g.lstrip("-").isdigit() else g): tuple(v)
                for g, v in params["group_regularization"].items()
            }
        est = cls(**params)
        est._feature_groups = est._check_feature_groups()
        est.pipeline_ = None
        est._table = "builders" in meta
        if est._table:
            from streamfm.features.pipeline import FeaturePipeline

            est.features_ = meta["builders"]
            est._columns = list(meta["columns"])
            est.pipeline_ = FeaturePipeline.from_specs(est.features_)
            est.pipeline_.load_state_dict(state["features"])
            if "feature_names_in" in meta:
                est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        else:
            n = int(meta["n_features_in"])
            scaling = state.get("scaling") or {"x_offset": np.zeros(n), "x_scale": np.ones(n)}
            est.x_offset_ = np.asarray(scaling["x_offset"], dtype=np.float64)
            est.x_scale_ = np.asarray(scaling["x_scale"], dtype=np.float64)
        states = [state["learner"], *state.get("ovr", [])]
        learners = est._new_learners(len(states))
        for lrn, s in zip(learners, states, strict=True):
            lrn.load_state_dict(s)
        est.learners_ = learners
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


class FMRegressor(RegressorMixin, _FMBase):
    """Factorization machine for regression (squared loss), trained by per-case AdaGrad or SGD
    (or SGDA, ALS, MCMC: `method`).

    With `standardize` (the default) the targets are learnt as (y - y_offset_) / y_scale_ and
    predictions mapped back. Predictions are clipped to the [min, max] of the training targets
    (as libFM does) unless `clip_predictions=False`.

    `n_jobs` > 1 (or -1: every core) learns with that many threads (`learner.threads`): with
    sgd / adagrad Hogwild, faster on several cores but then not bit for bit reproducible (None or
    1: exactly reproducible from `seed`); with als / mcmc the same fit as one thread.
    """

    _task = "regression"

    def _encode(self, y: np.ndarray, w, first: bool, **kwargs) -> list[np.ndarray]:
        if kwargs:
            raise TypeError(f"partial_fit() got unexpected arguments {sorted(kwargs)}")
        if HAVE_SKLEARN:
            y = check_array(
                y, ensure_2d=False, dtype=np.float64, input_name="y", ensure_all_finite=False
            )
        y = _finite_targets(y)
        if first:
            self.y_offset_, self.y_scale_ = 0.0, 1.0
            used = y if w is None else y[w > 0]
            if self.standardize and used.size:
                ww = None if w is None else w[w > 0]
                mean = float(np.average(used, weights=ww))
                std = float(np.sqrt(np.average((used - mean) ** 2, weights=ww)))
                self.y_offset_, self.y_scale_ = mean, (std if std > 0 else 1.0)
        return [(y - self.y_offset_) / self.y_scale_]

    def predict(self, X) -> np.ndarray:
        """Predicted targets (float64, n_rows)."""
        check_is_fitted(self)
        chunk, _, _ = self._rows(X, training=False, reset=False, grow=False)
        return self.learners_[0].predict(chunk) * self.y_scale_ + self.y_offset_

    def _extra_meta(self) -> dict:
        return {"y_offset": self.y_offset_, "y_scale": self.y_scale_}

    def _load_extra_meta(self, meta: dict) -> None:
        self.y_offset_ = float(meta.get("y_offset", 0.0))
        self.y_scale_ = float(meta.get("y_scale", 1.0))

    if not HAVE_SKLEARN:

        def score(self, X, y, sample_weight=None) -> float:
            """Coefficient of determination R² of the predictions (scikit-learn's convention)."""
            y = np.asarray(y, dtype=np.float64)
            w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
            pred = self.predict(X)
            ss_res = float(np.sum(w * (y - pred) ** 2))
            ss_tot = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
            return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


class FMClassifier(ClassifierMixin, _FMBase):
    """Factorization machine for classification (logistic loss; ALS and MCMC: probit): any two labels (numbers,
    strings, booleans; `classes_` sorted, the second is the positive class), or 3+ classes by
    one-vs-rest (one FM per class, trained side by side with `n_jobs` threads; probabilities
    normalised to sum to 1, as scikit-learn's OneVsRestClassifier does). With two classes,
    `n_jobs` > 1 learns the one FM with that many threads (`learner.threads`), as FMRegressor:
    sgd / adagrad Hogwild, not bit for bit reproducible; als / mcmc the same fit."""

    _task = "classification"

    def _encode(self, y: np.ndarray, w, first: bool, classes=None) -> list[np.ndarray]:
        if HAVE_SKLEARN:
            check_classification_targets(y)
        seen = _unique(y if w is None else y[w > 0]) if len(y) else _unique(y)
        if classes is not None:
            declared = _unique(np.asarray(classes))
            if not first and not _same(declared, self.classes_):
                raise DataError(
                    f"classes {declared.tolist()} differ from the fitted {self.classes_.tolist()}"
                )
        else:
            declared = None
        if first:
            if declared is not None:
                classes_ = declared
            elif len(seen) >= 2:
                classes_ = seen
            elif len(seen) == 1 and seen[0] in (0, 1, -1) and not isinstance(seen[0], str):
                # one label of a 0/1 or -1/+1 problem in the first batch of a stream
                classes_ = np.array([-1, 1] if seen[0] == -1 else [0, 1], dtype=seen.dtype)
            else:
                raise DataError(
                    f"{type(self).__name__} needs at least two classes in y, got only "
                    f"{seen.tolist()}; with partial_fit, pass classes=[...] on the first call"
                )
            if len(classes_) < 2:
                raise DataError(f"classes must name at least two classes, got {classes_.tolist()}")
            self.classes_ = classes_
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"the label {_plain(y[row])!r} is not one of the classes {self.classes_.tolist()}",
                row=row,
            )
        if len(self.classes_) == 2:
            return [(y == self.classes_[1]).astype(np.float64)]
        return [(y == c).astype(np.float64) for c in self.classes_]

    def decision_function(self, X) -> np.ndarray:
        """Raw FM scores (logits): (n_rows,) for two classes, (n_rows, n_classes) for more."""
        s = self._scores(X)
        return s[:, 0] if s.shape[1] == 1 else s

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, (n_rows, n_classes), columns in the order of `classes_`."""
        s = self._scores(X)
        if s.shape[1] == 1:
            p1 = sigmoid(s[:, 0])
            return np.column_stack([1.0 - p1, p1])
        p = sigmoid(s)
        total = p.sum(axis=1, keepdims=True)
        return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of `predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """Predicted labels, from `classes_` (the most probable; two classes: threshold 0.5)."""
        p = self.predict_proba(X)
        if p.shape[1] == 2:
            return self.classes_[(p[:, 1] >= 0.5).astype(int)]
        return self.classes_[np.argmax(p, axis=1)]

    def _extra_meta(self) -> dict:
        return {"classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str}

    def _load_extra_meta(self, meta: dict) -> None:
        dtype = meta.get("classes_dtype", "<f8")
        self.classes_ = np.asarray(meta["classes"], dtype=np.dtype(dtype))

    if not HAVE_SKLEARN:

        def score(self, X, y, sample_weight=None) -> float:
            """Mean accuracy (scikit-learn's convention)."""
            hit = self.predict(X) == np.asarray(y)
            return float(np.average(hit, weights=sample_weight))


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    """scikit-learn checks (`parametrize_with_checks`, `check_estimator`) these estimators fail
    on purpose, with the reason: pass as `expected_failed_checks=`."""
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "per-case SGD: a case of weight 2 takes one step of twice the gradient, not two "
            "steps, so weights are not repetitions (as for scikit-learn's SGD estimators)"
        ),
        "check_sample_weight_equivalence_on_sparse_data": (
            "per-case SGD: a case of weight 2 takes one step of twice the gradient, not two "
            "steps, so weights are not repetitions (as for scikit-learn's SGD estimators)"
        ),
    }


# --- helpers


def _issparse(X) -> bool:
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _column_scaling(x: np.ndarray, w: np.ndarray | None) -> tuple[float, float]:
    """(offset, scale) standardising column x (float64, NaN = missing) over the rows of weight
    > 0: its mean and std; (0, 1) for a column of 0 and 1 only (an indicator is kept as it is);
    scale 1 for a constant column."""
    used = np.isfinite(x) if w is None else np.isfinite(x) & (w > 0)
    xu = x[used]
    if xu.size == 0 or np.all((xu == 0) | (xu == 1)):
        return 0.0, 1.0
    wu = None if w is None else w[used]
    mean = float(np.average(xu, weights=wu))
    std = float(np.sqrt(np.average((xu - mean) ** 2, weights=wu)))
    return mean, (std if std > 0 else 1.0)


def _names(X) -> list:
    """Column names of a table as given (pandas keeps non-string names)."""
    if isinstance(X, Mapping):
        return list(X)
    names = getattr(X, "columns", None) if is_pandas(X) else getattr(X, "column_names", None)
    return list(names) if names is not None else []


def _diag(values: np.ndarray):
    import scipy.sparse as sp

    return sp.diags(values, format="csr")


def _to_matrix(X):
    """X as a float64 ndarray or CSR matrix (without scikit-learn)."""
    if _issparse(X):
        return X.tocsr().astype(np.float64)
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X must be a 2-D numeric array or a scipy.sparse matrix: {exc}") from None
    if X.ndim != 2:
        raise DataError(f"X must be 2-D, got shape {X.shape}")
    return X


def _csr_of_tuple(X: tuple):
    import scipy.sparse as sp

    try:
        csr = sp.csr_matrix(X)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X: not a sparse matrix in scipy's tuple form: {exc}") from None
    if csr.nnz and int(csr.indices.min()) < 0:
        bad = int(np.argmin(csr.indices))
        row = int(np.searchsorted(csr.indptr, bad, side="right") - 1)
        raise DataError("X has a negative column index", row=row, value=int(csr.indices[bad]))
    return csr


def _check_finite(X) -> None:
    """DataError naming the row and column of the first non-finite value of X."""
    if _issparse(X):
        bad = np.flatnonzero(~np.isfinite(X.data))
        if bad.size:
            i = int(bad[0])
            row = int(np.searchsorted(X.indptr, i, side="right") - 1)
            col, value = int(X.indices[i]), float(X.data[i])
            raise DataError(
                "X holds a non-finite value (NaN or inf)", row=row, column=str(col), value=value
            )
        return
    if not np.isfinite(X).all():
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise DataError(
            "X holds a non-finite value (NaN or inf)",
            row=int(row),
            column=str(col),
            value=float(X[row, col]),
        )


def _finite_targets(y: np.ndarray) -> np.ndarray:
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"y must be numeric, got dtype {y.dtype}") from None
    if not np.isfinite(yf).all():
        bad = int(np.flatnonzero(~np.isfinite(yf))[0])
        raise DataError("y holds a non-finite target", row=bad, value=float(yf[bad]))
    return yf


def _unique(y: np.ndarray) -> np.ndarray:
    try:
        return np.unique(y)
    except TypeError:  # mixed types (object arrays): as text
        raise DataError(
            "y mixes labels of different types (e.g. numbers and strings): use one type"
        ) from None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and bool(np.all(a == b))


def _model_threads(n_jobs: int | None) -> int:
    """learner.threads of a single model for `n_jobs` (None: 1; -1: every core)."""
    if n_jobs in (None, 1):
        return 1
    return max(1, min(256, (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)))


def _threads(n_jobs: int | None, n_tasks: int) -> int:
    if n_tasks <= 1 or n_jobs in (None, 1):
        return 1
    cores = os.cpu_count() or 1
    return max(1, min(n_tasks, cores if n_jobs == -1 else int(n_jobs)))


# --- ranking


class FMRanker(BaseEstimator):
    """Ranking from implicit feedback (task ranking, docs/ranking.md), scikit-learn style.

    `fit(X_context, items)`: row r of X_context (a DataFrame, pyarrow Table, mapping of columns,
    or a 2-D array: columns x0, x1, ...) chose item `items[r]` (a positive event). Its columns
    become context features through the builders of `features` (default: one per column by its
    type, as FMRegressor). `item_features`: a table with an `item` column and one row per item
    whose other columns describe the item (item-side builders, looked up per event). Training is
    the spec path: the estimator writes the events to a temporary Parquet file and trains the
    spec `spec_` (the same RankingLearner, sampler and step rules as `streamfm train`); the
    model is `model_` (a TrainedModel). Events are learnt in the order given.

    `predict(X_context, items)`: the FM score of each (context, item) pair; `recommend(X_context,
    k)`: the k best catalogue items per context (items (n, k) object array, None beyond the
    candidates; with return_scores=True also the scores, -inf there); `score(X_context, items)`:
    holdout `metric` at `top_k` (ndcg, recall, precision, mrr or auc), each pair's item ranked
    among all catalogue items. Hyper-parameters are the spec's keys (`model.k`, `ranking.loss`,
    `ranking.negatives.*`, `learner.*`, `ranking.user`, `ranking.k` as `top_k`), with the spec's
    defaults except k, learning_rate, epochs and init_std.
    """

    def __init__(
        self,
        k: int = 8,
        *,
        loss: str = "bpr",
        method: str = "adagrad",
        learning_rate: float = 0.05,
        epochs: int = 5,
        reg_linear: float = LearnerConfig.model_fields["reg_linear"].default,
        reg_factors: float = LearnerConfig.model_fields["reg_factors"].default,
        init_std: float = 0.1,
        sampler: str = "uniform",
        per_positive: int = 1,
        exclude_seen: bool = False,
        recent: int = 50,
        user: str | None = None,
        features: list[dict[str, Any]] | None = None,
        top_k: int = 10,
        metric: str = "ndcg",
        batch_size: int = 65_536,
        seed: int = 0,
    ) -> None:
        self.k = k
        self.loss = loss
        self.method = method
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.reg_linear = reg_linear
        self.reg_factors = reg_factors
        self.init_std = init_std
        self.sampler = sampler
        self.per_positive = per_positive
        self.exclude_seen = exclude_seen
        self.recent = recent
        self.user = user
        self.features = features
        self.top_k = top_k
        self.metric = metric
        self.batch_size = batch_size
        self.seed = seed

    ITEM = "item"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _context_table(self, X, reset: bool):
        if not is_table(X) or _issparse(X):
            X = np.asarray(X)
            if X.ndim != 2:
                raise DataError(f"X_context must be a table or a 2-D array, got shape {X.shape}")
            cols = [f"x{j}" for j in range(X.shape[1])]
            if not reset and cols != self.context_columns_:
                raise DataError(
                    f"X_context has {X.shape[1]} columns, FMRanker was fitted on "
                    f"{len(self.context_columns_)}: {self.context_columns_}"
                )
            X = {c: X[:, j] for j, c in enumerate(cols)}
        table = to_table(X, "X_context")
        if self.ITEM in table.column_names:
            raise DataError(f"X_context holds a column '{self.ITEM}': pass the items apart")
        if reset:
            self.context_columns_ = list(table.column_names)
        missing = [c for c in self.context_columns_ if c not in table.column_names]
        if missing:
            raise DataError(f"X_context lacks the column(s) {missing} FMRanker was fitted with")
        return table.select(self.context_columns_)

    def _with_items(self, table, items):
        import pyarrow as pa

        items = np.asarray(items)
        if items.ndim != 1 or len(items) != table.num_rows:
            raise DataError(
                f"items: expected {table.num_rows} item ids (one per context row), got shape "
                f"{items.shape}"
            )
        table = table.append_column(self.ITEM, pa.array(items.tolist()).cast(pa.string()))
        if getattr(self, "item_table_", None) is not None:
            joined = table.append_column("__order__", pa.array(np.arange(table.num_rows))).join(
                self.item_table_, self.ITEM, join_type="left outer"
            )
            table = joined.sort_by("__order__").drop_columns(["__order__"])
        return table

    def fit(self, X_context, items, item_features=None):
        """Learn from the positive events (X_context[r] chose items[r])."""
        import tempfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        from streamfm.spec import parse_spec
        from streamfm.training.loop import train

        context = self._context_table(X_context, reset=True)
        item_cols: list[str] = []
        self.item_table_ = None
        if item_features is not None:
            it = to_table(item_features, "item_features")
            if self.ITEM not in it.column_names:
                raise DataError(f"item_features needs an '{self.ITEM}' column")
            it = it.set_column(
                it.column_names.index(self.ITEM), self.ITEM, it.column(self.ITEM).cast(pa.string())
            )
            item_cols = [c for c in it.column_names if c != self.ITEM]
            clash = sorted(set(item_cols) & set(context.column_names))
            if clash:
                raise DataError(f"item_features and X_context share the column(s) {clash}")
            self.item_table_ = it
        events = self._with_items(context, items)
        if self.features is not None:
            ctx_features = [dict(b) for b in self.features]
        else:
            ctx_features = default_features(context.schema, standardize=False)
        item_features_b = (
            default_features(self.item_table_.select(item_cols).schema, standardize=False)
            if item_cols
            else []
        )
        features = [
            *ctx_features,
            {"type": "categorical", "name": self.ITEM, "columns": [self.ITEM]},
            *item_features_b,
        ]
        with tempfile.TemporaryDirectory(prefix="streamfm-ranker-") as tmp:
            path = Path(tmp) / "events.parquet"
            pq.write_table(events, path)
            spec = {
                "source": {"path": str(path), "batch_size": self.batch_size},
                "task": "ranking",
                "features": features,
                "ranking": {
                    "item": self.ITEM,
                    "item_features": [b["name"] for b in item_features_b],
                    "user": self.user,
                    "loss": self.loss,
                    "negatives": {
                        "sampler": self.sampler,
                        "per_positive": self.per_positive,
                        "exclude_seen": self.exclude_seen,
                        "recent": self.recent,
                    },
                    "k": self.top_k,
                },
                "model": {"k": self.k, "seed": self.seed, "init_std": self.init_std},
                "learner": {
                    "method": self.method,
                    "learning_rate": self.learning_rate,
                    "epochs": self.epochs,
                    "reg_linear": self.reg_linear,
                    "reg_factors": self.reg_factors,
                },
                "output": {"dir": str(Path(tmp) / "out")},
                "checkpoint": {"enabled": False},
            }
            if self.user is None:
                del spec["ranking"]["user"]
            parsed = parse_spec(spec, name="FMRanker")
            result = train(parsed)
        self.spec_ = parsed.model_dump(mode="json")
        self.model_ = result.model
        self.history_ = result.history
        # the catalogue's items, as the values given (the catalogue keys them as text)
        given = list(dict.fromkeys(np.asarray(items).tolist()))
        original = dict(zip(pa.array(given).cast(pa.string()).to_pylist(), given, strict=True))
        keys = self.model_.learner.catalogue.item_keys(
            self.model_.pipeline, self.model_.learner.item_group
        ).to_pylist()
        self.items_ = np.array([original.get(k, k) for k in keys] + [None], dtype=object)[:-1]
        return self

    def predict(self, X_context, items) -> np.ndarray:
        """FM scores of the (context row, item) pairs (higher: preferred)."""
        check_is_fitted(self)
        table = self._with_items(self._context_table(X_context, reset=False), items)
        return self.model_.predict(table)

    def recommend(self, X_context, k: int = 10, return_scores: bool = False, exclude=None):
        """The k best catalogue items of each context row: an (n, k) object array of item
        ids (None where fewer than k items are candidates), and the (n, k) scores with
        return_scores. `exclude`: (user, item) pairs never recommended to that user (a
        table with the ranking.user column and an `item` column)."""
        from streamfm.recommendations import Recommender, _history_batches

        check_is_fitted(self)
        table = self._context_table(X_context, reset=False)
        rec = Recommender(self.model_)
        if exclude is not None:
            rec.set_history(_history_batches(exclude, self.model_))
        idx, scores = [], []
        for b in batches(table):
            i, s = rec.top(b, int(k))
            idx.append(i)
            scores.append(s)
        idx = np.concatenate(idx) if idx else np.zeros((0, int(k)), np.int64)
        scores = np.concatenate(scores) if scores else np.zeros((0, int(k)))
        keys = np.append(self.items_, None)
        out = keys[np.where(idx >= 0, idx, len(self.items_))]
        return (out, scores) if return_scores else out

    def score(self, X_context, items) -> float:
        """Holdout `metric` @ `top_k` of the pairs: each item ranked among all catalogue items
        for its context (the user's recent training positives other than it left out)."""
        check_is_fitted(self)
        table = self._with_items(self._context_table(X_context, reset=False), items)
        return float(self.model_.evaluate(table)[self.metric])

    def save(self, path: str | Path) -> None:
        """The trained model as a model file (`streamfm recommend` / `load_model` read it)."""
        check_is_fitted(self)
        self.model_.save(path)
