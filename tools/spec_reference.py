"""Render docs/spec.md from the pydantic models, so the reference cannot drift from the code.

python tools/spec_reference.py            # rewrite docs/spec.md
python tools/spec_reference.py --check    # exit 1 if docs/spec.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from streamfm.features.registry import available_builders, resolve_builder
from streamfm.spec import Spec

DOC = Path(__file__).resolve().parent.parent / "docs" / "spec.md"

INTRO = """# spec.yaml reference

Generated from the pydantic models by `python tools/spec_reference.py`; do not edit by hand.
Unknown keys are errors. Any key can be overridden with `--set section.key=value`
(values are read as YAML: `--set learner.epochs=5`, `--set features.0.columns=[user,day]`).
"""


def _type(field) -> str:
    ann = field.annotation
    text = getattr(ann, "__name__", None) if isinstance(ann, type) else None
    return text or str(ann).replace("typing.", "").replace("streamfm.config.", "").replace(
        "streamfm.spec.", ""
    )


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        return "" if isinstance(field.default, BaseModel) else repr(field.default)
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else repr(value)
    return "required"


def _table(
    model: type[BaseModel], prefix: str, nested: list[tuple[str, type[BaseModel]]]
) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name == "name" and model is Spec:
            continue
        ann = field.annotation
        sub = _model_in(ann)
        if sub is not None:
            nested.append((f"{prefix}{name}", sub))
        desc = (
            field.description or (sub.__doc__ or "").strip().splitlines()[0]
            if sub
            else field.description or ""
        )
        cells = [f"`{prefix}{name}`", _type(field), _default(field), desc]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows


def _model_in(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def render() -> str:
    out = [INTRO, "## Sections", ""]
    nested: list[tuple[str, type[BaseModel]]] = []
    out += _table(Spec, "", nested)
    seen = set()
    while nested:
        prefix, model = nested.pop(0)
        if (prefix, model) in seen:
            continue
        seen.add((prefix, model))
        out += ["", f"## `{prefix}`", "", (model.__doc__ or "").strip(), ""]
        out += _table(model, prefix + ".", nested)
    out += ["", "## Feature builders (`features: [{type: ..., ...}]`)", ""]
    out.append(
        "Every builder also takes `name` (its feature group; default from its columns) and "
        "`reg_linear` / `reg_factors` (L2 overrides for its group)."
    )
    for kind in sorted(available_builders()):
        cls = resolve_builder(kind)
        out += [
            "",
            f"### `{kind}`",
            "",
            (cls.__module__ and (sys.modules[cls.__module__].__doc__ or "")).strip(),
            "",
        ]
        out += _table(cls.Params, "", [])
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if DOC.exists() and DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC}")
