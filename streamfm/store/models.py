"""Model files: an archive (`store.archive`) of meta.json — format, kind, spec or hyper-parameters,
history — and the model's state (`state_dict()` of its parts, arrays named by their path).

`load_model` reads any model file: one written by `streamfm train` (a `TrainedModel`) or by an
estimator's `save` (`FMRegressor`, `FMClassifier`). Files of streamfm 0.1 (format version 1)
and of 0.2 before vocabularies were stored as arrays (version 2) are read too.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.errors import CheckpointError
from streamfm.store.archive import read_archive, write_archive, write_atomic
from streamfm.store.state import join_arrays, split_arrays

FORMAT = "streamfm-model"
# 3: vocabularies as arrays (UTF-8 bytes + offsets), histories as items per key.
FORMAT_VERSION = 3


def save_model_file(path: str | os.PathLike, meta: dict[str, Any], state: dict[str, Any]) -> None:
    """Write a model file atomically: `meta` (JSON-able, with its "kind") and `state` (a tree of
    JSON values and arrays, with the learner's under "learner").

    The FM parameters are the members `w0.npy`, `w.npy`, `V.npy`, `group.npy` (and an
    optimiser's `acc_*.npy`) at the top of the archive; every other array is named by its path
    in the state ("features/space/id_group.npy").
    """
    arrays: dict[str, np.ndarray] = {}
    learner = dict(state["learner"])
    params = learner.pop("params")
    tree = split_arrays({**state, "learner": learner}, arrays)
    tree["learner"]["params"] = split_arrays(params, arrays)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "state": tree}
    try:
        write_atomic(path, lambda f: write_archive(f, meta, arrays))
    except OSError as exc:
        raise CheckpointError(f"cannot write model file {path}: {exc.strerror or exc}") from exc


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, state) of a model file; CheckpointError naming the file if it is not one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        meta, arrays = read_archive(path)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a readable streamfm model ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a streamfm model (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer streamfm (format version {version}); upgrade"
        )
    try:
        if version == 1:
            return meta, _state_of_version_1(meta, arrays)
        return meta, join_arrays(meta.pop("state"), arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a complete streamfm model ({exc})") from exc


def _state_of_version_1(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The state of a streamfm 0.1 model file, in today's layout."""
    learner = dict(meta["learner_state"])
    learner.setdefault("group_regularization", {})
    n = int(arrays["V"].shape[0])
    learner["params"] = {
        "n_features": n,
        **{
            k: arrays[k]
            for k in ("w0", "w", "V", "group", "acc_w0", "acc_w", "acc_V")
            if k in arrays
        },
    }
    state: dict[str, Any] = {"learner": learner}
    if meta.get("pipeline") is not None:
        state["features"] = _features_of_version_1(meta["pipeline"], arrays)
    return state


def _features_of_version_1(pipeline: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict:
    """A 0.1 FeaturePipeline state (space meta + arrays "space/..."; builders' arrays by
    reference; a join's nested pipeline under "nested" / "nested_arrays") in today's layout."""
    groups = pipeline["groups"]
    builders = join_arrays(pipeline["builders"], arrays)
    for b in builders:
        if isinstance(b, dict) and "nested_arrays" in b:
            nested = {k.replace(":", "/"): v for k, v in b.pop("nested_arrays").items()}
            b["nested"] = _features_of_version_1(b["nested"], nested)
    return {
        "space": {
            "n_ids": pipeline["n_ids"],
            "groups": groups,
            "reserved": pipeline["reserved"],
            "key_types": pipeline["key_types"],
            "id_group": arrays["space/id_group"],
            "ids": [arrays[f"space/ids_{g}"] for g in range(len(groups))],
            "keys": [arrays[f"space/keys_{g}"] for g in range(len(groups))],
        },
        "builders": builders,
    }


def load_model(path: str | os.PathLike, *, trust_plugins: Iterable[str] = ()):
    """Load a model saved by an estimator's `save` (FMRegressor / FMClassifier) or by `streamfm train`.

    Loading never runs code from the file: a feature builder its spec names as
    "module:Class" (a plugin that is neither built in nor an installed entry point) is imported
    only if `trust_plugins` names it (or its module).
    """
    meta, state = read_model_file(path)
    kind = meta.get("kind")
    if kind in ("FMRegressor", "FMClassifier"):
        from streamfm import estimators

        try:
            return getattr(estimators, kind)._from_saved(meta, state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"{path} is damaged: {exc}") from None
    if kind == "pipeline":
        from streamfm.store.trained import TrainedModel

        return TrainedModel._from_saved(meta, state, path, trust_plugins=trust_plugins)
    raise CheckpointError(f"{path}: unknown model kind {kind!r}")
