"""Which builder a spec's `type` names, and the spec's `features` list validated once.

A type is a built-in name, the name of an installed entry point of group "streamfm.features", a
preset (`mf`, which stands for several builders), or "module.path:ClassName".

"module.path:ClassName" imports that module, which runs its code. A spec the user wrote may do
so; a spec stored in a model file must not (a crafted model file would run any module):
while a model is loaded (`trusted_plugins`), only built-in and entry-point builders are
imported, and a "module:Class" type only when its loader named it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from streamfm.config import format_validation_error
from streamfm.errors import SpecError
from streamfm.features.base import BuilderParams, FeatureBuilder

ENTRY_POINT_GROUP = "streamfm.features"

_BUILTINS: dict[str, str] = {
    "categorical": "streamfm.features.categorical:CategoricalBuilder",
    "numeric": "streamfm.features.numeric:NumericBuilder",
    "set": "streamfm.features.sets:SetBuilder",
    "implicit": "streamfm.features.implicit:ImplicitBuilder",
    "sequence": "streamfm.features.sequence:SequenceBuilder",
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


def available_builders() -> dict[str, str]:
    """Every builder kind known: built-ins, then entry points of group 'streamfm.features'."""
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


# None: any "module:Class" may be imported (a spec file); else the ones named (a model file).
_TRUSTED_PLUGINS: ContextVar[frozenset[str] | None] = ContextVar("trusted_plugins", default=None)


@contextmanager
def trusted_plugins(names: Iterable[str]) -> Iterator[None]:
    """Within the block, a "module:Class" builder type is imported only if `names` holds it
    or its module: how model files are loaded (built-in and entry-point builders always load)."""
    token = _TRUSTED_PLUGINS.set(frozenset(str(n) for n in names))
    try:
        yield
    finally:
        _TRUSTED_PLUGINS.reset(token)


def resolve_builder(kind: str) -> type[FeatureBuilder]:
    """The builder class for a spec's `type`: a built-in or entry-point name, or 'module:Class'
    (refused inside `trusted_plugins` unless named there)."""
    target = available_builders().get(kind)
    if target is None and ":" in kind:
        trusted = _TRUSTED_PLUGINS.get()
        if trusted is not None and kind not in trusted and kind.partition(":")[0] not in trusted:
            raise SpecError(
                f"feature builder type {kind!r} is not a registered builder: loading it would "
                f"import the module {kind.partition(':')[0]!r} and run its code. If you trust "
                f"it, allow it: --allow-plugin {kind} (Python: trust_plugins=[{kind!r}])"
            )
        target = kind
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


@dataclass(frozen=True)
class ParsedBuilder:
    """One entry of a spec's `features`, validated: the class, the group name, the parameters."""

    cls: type[FeatureBuilder]
    name: str
    params: BuilderParams

    def make(self) -> FeatureBuilder:
        """A new builder (fresh state)."""
        return self.cls(self.name, self.params)


def parse_builder(spec: dict[str, Any], index: int) -> ParsedBuilder:
    """Validate entry number `index` of the spec's `features` list (presets already expanded)."""
    if not isinstance(spec, dict):
        raise SpecError(f"features[{index}]: a builder is a mapping with a 'type', got {spec!r}")
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
    return ParsedBuilder(cls, str(name), params)


def parse_builders(specs: list[dict[str, Any]]) -> list[ParsedBuilder]:
    """Validate a whole `features` list: presets expanded, every entry parsed, names unique."""
    parsed = [parse_builder(s, i) for i, s in enumerate(expand_presets(specs))]
    if not parsed:
        raise SpecError("features: at least one feature builder is needed")
    names = [p.name for p in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"features: builder names must be unique; repeated: {dupes} (set 'name')")
    return parsed


def make_builder(spec: dict[str, Any], index: int) -> FeatureBuilder:
    """Builder number `index` of the spec's `features` list, from its mapping."""
    return parse_builder(spec, index).make()


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
