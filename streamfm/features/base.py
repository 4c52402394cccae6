"""The feature-builder protocol, the Block it produces, and the builder registry.

A builder turns a pyarrow RecordBatch into a Block: for every row, some non-zeros, each named
either by a *key* (any int or string; the FeatureSpace maps keys to global ids, allocating new
ids on first sight) or by an *id* in a range the builder reserved up front (hashed features,
fixed numeric columns). Work is vectorised over the batch; no Python loop per row.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from streamfm.config import format_validation_error
from streamfm.errors import SpecError

ENTRY_POINT_GROUP = "streamfm.features"


@dataclass
class Block:
    """One builder's rows. indptr: int64 (n_rows+1); values: float32 (nnz).

    Exactly one of `keys` (one key per non-zero: a pyarrow Array or numpy array of ints/strings,
    no nulls) and `ids` (int64 offsets into the builder's reserved range, 0 <= id < reserved)
    is set.
    """

    indptr: np.ndarray
    values: np.ndarray
    keys: pa.Array | np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.keys is None) == (self.ids is None):
            raise ValueError("a Block has either keys or ids")
        self.indptr = np.asarray(self.indptr, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float32)
        nnz = len(self.keys) if self.keys is not None else len(self.ids)
        if nnz != len(self.values) or self.indptr[-1] != nnz:
            raise ValueError(
                f"Block: {nnz} keys/ids, {len(self.values)} values, indptr ends at {self.indptr[-1]}"
            )

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @classmethod
    def one_per_row(cls, present: np.ndarray, values: np.ndarray, *, keys=None, ids=None) -> Block:
        """At most one non-zero per row: rows where `present` is True get (key or id, value)."""
        present = np.asarray(present, dtype=bool)
        indptr = np.zeros(len(present) + 1, dtype=np.int64)
        np.cumsum(present, out=indptr[1:])
        return cls(indptr, np.asarray(values)[present], keys=keys, ids=ids)


class BuilderParams(BaseModel):
    """Base of every builder's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    reg_linear: float | None = None
    reg_factors: float | None = None


class FeatureBuilder:
    """Base class of feature builders. Subclasses set `Params` and implement `columns` and `build`.

    `name` is unique within a spec and names the builder's feature group (per-group
    regularisation, feature names). State that `build(training=True)` updates (running
    statistics, histories) must round-trip through `state_dict` / `load_state_dict`.
    """

    kind: ClassVar[str] = ""
    Params: ClassVar[type[BuilderParams]] = BuilderParams

    def __init__(self, name: str, params: BuilderParams) -> None:
        self.name = name
        self.params = params

    def columns(self) -> list[str]:
        """Input columns this builder reads."""
        raise NotImplementedError

    def reserved(self) -> int:
        """How many fixed ids this builder needs (0 when it only emits keys)."""
        return 0

    def build(self, batch: pa.RecordBatch, *, training: bool) -> Block:
        """Features of every row of `batch`. With training=False, state is frozen."""
        raise NotImplementedError

    def invalid_rows(self, batch: pa.RecordBatch) -> list[tuple[np.ndarray, str, str]]:
        """Rows this builder cannot use, as (bool mask, column, reason) triples; they are failed,
        skipped or quarantined by the source's `on_bad_rows` policy before `build` sees the batch.
        Default: none."""
        return []

    def reserved_name(self, offset: int) -> str:
        """Human-readable name of reserved id `offset` (for inspect and explanations)."""
        return f"{self.name}[{offset}]"

    def key_name(self, key: Any) -> str:
        """Human-readable name of a key this builder emitted (default: the key itself)."""
        return str(key)

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the state: JSON-able values and numpy arrays (copies, not views of
        live state). Empty for stateless builders."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


_BUILTINS: dict[str, str] = {
    "categorical": "streamfm.features.categorical:CategoricalBuilder",
    "numeric": "streamfm.features.numeric:NumericBuilder",
    "set": "streamfm.features.sets:SetBuilder",
    "implicit": "streamfm.features.implicit:ImplicitBuilder",
    "time": "streamfm.features.time:TimeBuilder",
    "join": "streamfm.features.join:JoinBuilder",
    "libfm": "streamfm.features.libfm:LibFMBuilder",
}


def _mf_preset(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """`mf`: biased matrix factorization = one-hot user + one-hot item (two feature groups)."""
    spec = dict(spec)
    user, item = spec.pop("user", "user"), spec.pop("item", "item")
    if spec:
        raise SpecError(f"feature preset 'mf': unknown keys {sorted(spec)}; it takes user and item")
    return [
        {"type": "categorical", "columns": [user], "name": user},
        {"type": "categorical", "columns": [item], "name": item},
    ]


PRESETS = {"mf": _mf_preset}


def expand_presets(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace preset entries (e.g. `{type: mf, user: u, item: i}`) by the builders they stand for."""
    out: list[dict[str, Any]] = []
    for spec in specs:
        preset = PRESETS.get(spec.get("type")) if isinstance(spec, dict) else None
        if preset is None:
            out.append(spec)
        else:
            out.extend(preset({k: v for k, v in spec.items() if k != "type"}))
    return out


def register_builtin(kind: str, target: str) -> None:
    """Register a built-in builder kind as 'module:Class' (used by the package's own modules)."""
    _BUILTINS[kind] = target


def available_builders() -> dict[str, str]:
    """Every builder kind known: built-ins, then entry points of group 'streamfm.features'."""
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def resolve_builder(kind: str) -> type[FeatureBuilder]:
    """The builder class for a spec's `type`: a built-in or entry-point name, or 'module:Class'."""
    target = available_builders().get(kind, kind if ":" in kind else None)
    if target is None:
        raise SpecError(
            f"unknown feature builder type {kind!r}; available: {sorted(available_builders())}, "
            "or 'module.path:ClassName'"
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"feature builder {kind!r}: cannot load {target!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, FeatureBuilder)):
        raise SpecError(f"feature builder {kind!r}: {target!r} is not a FeatureBuilder subclass")
    return cls


def make_builder(spec: dict[str, Any], index: int) -> FeatureBuilder:
    """Instantiate builder number `index` of the spec's `features` list from its mapping."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    where = f"features[{index}]"
    if not kind:
        raise SpecError(f"{where}: missing key 'type' (e.g. categorical, numeric, libfm)")
    cls = resolve_builder(str(kind))
    name = spec.pop("name", None) or _default_name(kind, spec)
    try:
        params = cls.Params(**spec)
    except ValidationError as exc:
        raise SpecError(
            f"{where} ({kind} '{name}'): {format_validation_error(exc, model=cls.Params)}"
        ) from None
    return cls(str(name), params)


def _default_name(kind: str, spec: dict[str, Any]) -> str:
    """A builder's group name when the spec gives none: its columns, or its kind and key."""
    short = kind.split(":")[-1]
    if spec.get("key"):
        return f"{short}_{spec['key']}"
    cols = spec.get("columns") or spec.get("column")
    if isinstance(cols, str):
        cols = [cols]
    if isinstance(cols, list) and cols:
        name = "_x_".join(map(str, cols))
        return f"time_{name}" if short == "time" else name
    return short
