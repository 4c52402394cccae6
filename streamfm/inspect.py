"""`streamfm inspect`: what a model file holds, grouped by feature builder, in readable text (or
JSON with --json)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.errors import SpecError
from streamfm.numpy_arrow import to_numpy
from streamfm.store.models import load_model, read_model_file

NAME_WIDTH = 48


def short(name: str, width: int = NAME_WIDTH) -> str:
    """`name` cut in the middle to at most `width` characters (long crosses stay readable)."""
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2 :]


def describe(
    path: str | Path,
    top: int = 10,
    groups: list[str] | None = None,
    *,
    trust_plugins: Iterable[str] = (),
) -> dict[str, Any]:
    """Sizes, spec, metric history and, per feature group (builder), its features and the
    strongest ones (largest |w| and largest |v|) of a model file. `groups`: only these;
    `trust_plugins`: as for `load_model`."""
    meta, _state = read_model_file(path)
    model = load_model(path, trust_plugins=trust_plugins)
    info: dict[str, Any] = {
        "path": str(path),
        "kind": meta["kind"],
        "format_version": meta["format_version"],
    }
    if meta["kind"] != "pipeline":
        return {**info, **_describe_estimator(model, meta, top, groups)}
    p = model.learner.params
    info.update(
        task=model.task,
        k=p.k,
        n_features=p.n_features,
        cases_learnt=model.learner.t,
        w0=float(p.w0[0]),
        summary=model.summary,
        history=model.history,
        spec=meta["spec"],
        groups=_groups(model.pipeline, p, top, groups),
    )
    return info


def _describe_estimator(model, meta: dict, top: int, groups: list[str] | None) -> dict[str, Any]:
    params = meta["params"]
    learners = model.learners_
    out: dict[str, Any] = {
        "task": model._task,
        "k": learners[0].params.k,
        "n_features": learners[0].params.n_features,
        "n_features_in": int(meta["n_features_in"]),
        "epochs": int(meta["n_epochs"]),
        "params": params,
    }
    if hasattr(model, "classes_"):
        out["classes"] = model.classes_.tolist()
    pipeline = model.pipeline_ if model._table else None
    out["groups"] = _groups(pipeline, learners[0].params, top, groups)
    if len(learners) > 1:
        out["groups_by_class"] = {
            str(c): _groups(pipeline, lrn.params, top, groups)
            for c, lrn in zip(model.classes_.tolist(), learners, strict=True)
        }
    return out


def _groups(pipeline, p, top: int, wanted: list[str] | None) -> list[dict[str, Any]]:
    """Per feature group: builder type and columns, sizes, mean |w| and |v|, strongest features."""
    from streamfm.export import group_tables

    tables = group_tables(pipeline, p)
    names = [name for name, _ in tables]
    unknown = sorted(set(wanted or []) - set(names))
    if unknown:
        raise SpecError(f"--group {', '.join(unknown)}: no such feature group (groups: {names})")
    out = []
    for g, (name, table) in enumerate(tables):
        if wanted and name not in wanted:
            continue
        ids = to_numpy(table.column("id"))
        w = p.w[ids].astype(np.float64)
        v = np.linalg.norm(p.V[ids].astype(np.float64), axis=1) if len(ids) else np.zeros(0)
        feature_names = table.column("name").to_pylist()
        entry: dict[str, Any] = {"name": name, "features": len(ids)}
        if pipeline is not None:
            b = pipeline.builders[g]
            entry.update(type=b.kind, columns=b.columns())
        entry.update(
            mean_abs_w=float(np.abs(w).mean()) if len(w) else 0.0,
            mean_norm_v=float(v.mean()) if len(v) else 0.0,
            top_w=[
                {"feature": feature_names[i], "w": float(w[i]), "norm_v": float(v[i])}
                for i in np.argsort(-np.abs(w), kind="stable")[:top]
            ],
            top_v=[
                {"feature": feature_names[i], "w": float(w[i]), "norm_v": float(v[i])}
                for i in np.argsort(-v, kind="stable")[:top]
            ],
        )
        out.append(entry)
    return out


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text of `describe`'s result."""
    lines = [f"{info['path']}: {_kind(info)}"]
    if info["kind"] != "pipeline":
        lines.append(
            f"  task {info['task']}  k={info['k']}  features {info['n_features']:,} "
            f"(columns in: {info['n_features_in']:,})  epochs {info['epochs']}"
        )
        if "classes" in info:
            lines.append("  classes: " + ", ".join(map(str, info["classes"])))
        lines.append("  hyper-parameters:")
        lines += [f"    {k:<22} {_value(v)}" for k, v in sorted(info["params"].items())]
    else:
        lines.append(
            f"  task {info['task']}  k={info['k']}  features {info['n_features']:,}  "
            f"cases learnt {info['cases_learnt']:,}  w0 {info['w0']:+.4f}"
        )
    lines += _format_groups(info["groups"])
    if info["kind"] != "pipeline":
        return "\n".join(lines)
    s = info.get("summary") or {}
    if s:
        lines.append("  last run:")
        for key, value in s.items():
            if key == "model_record" or value in (None, [], {}):
                continue
            lines.append(f"    {key.replace('_', ' '):<22} {_value(value)}")
    if info["history"]:
        lines.append("  history:")
        for rec in info["history"]:
            vals = "  ".join(
                f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k != "seconds"
            )
            lines.append(
                f"    {rec['kind']:<8} epoch {rec['epoch']:>3}  rows {rec['rows']:>12,}  {vals}"
            )
    return "\n".join(lines)


def _format_groups(groups: list[dict[str, Any]]) -> list[str]:
    lines = ["  feature groups:"]
    head = (
        f"    {'group':<20} {'type':<12} {'features':>10} {'mean |w|':>9} {'mean |v|':>9}  columns"
    )
    lines.append(head)
    for g in groups:
        cols = ", ".join(g.get("columns", [])) or "-"
        lines.append(
            f"    {short(g['name'], 20):<20} {g.get('type', 'array'):<12} {g['features']:>10,} "
            f"{g['mean_abs_w']:>9.4f} {g['mean_norm_v']:>9.4f}  {short(cols, 40)}"
        )
    for g in groups:
        if not g["top_w"]:
            continue
        lines.append(f"  {g['name']}: largest |w|" + " " * 28 + "largest |v|")
        for a, b in zip(g["top_w"], g["top_v"], strict=True):
            lines.append(
                f"    {short(a['feature'], 30):<30} {a['w']:+8.4f}   "
                f"{short(b['feature'], 30):<30} {b['norm_v']:8.4f}"
            )
    return lines


def _kind(info: dict[str, Any]) -> str:
    if info["kind"] == "pipeline":
        return "model trained by `streamfm train` (spec, feature pipeline, FM)"
    return f"{info['kind']} saved by the Python API"


def _value(v: Any) -> str:
    """A value as text: numbers compact, lists and mappings without brackets and quotes."""
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v) or "-"
    return short(str(v), 80)
