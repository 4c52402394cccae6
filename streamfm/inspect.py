"""`streamfm inspect`: what a model file holds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from streamfm.store.models import load_model, read_model_file


def describe(
    path: str | Path, top: int = 10, *, trust_plugins: Iterable[str] = ()
) -> dict[str, Any]:
    """Sizes, groups, spec, metric history and the features with the largest |w| of a model file
    (`trust_plugins`: as for `load_model`)."""
    meta, _state = read_model_file(path)
    model = load_model(path, trust_plugins=trust_plugins)
    info: dict[str, Any] = {
        "path": str(path),
        "kind": meta["kind"],
        "format_version": meta["format_version"],
    }
    if meta["kind"] != "pipeline":
        p = model.learner_.params
        info.update(params=meta["params"], n_features=p.n_features, k=p.k)
        return info
    p = model.learner.params
    space = model.pipeline.space
    groups = []
    for g, name in enumerate(space.groups):
        base, size = space.reserved[g]
        groups.append(
            {
                "name": name,
                "type": model.pipeline.builders[g].kind,
                "features": size + space.vocabulary_size(g),
            }
        )
    order = np.argsort(-np.abs(p.w[: p.n_features]))[:top]
    info.update(
        task=model.task,
        k=p.k,
        n_features=p.n_features,
        cases_learnt=model.learner.t,
        groups=groups,
        summary=model.summary,
        history=model.history,
        spec=meta["spec"],
        top_features=[
            {
                "feature": model.pipeline.feature_name(int(i)),
                "w": float(p.w[i]),
                "v_norm": float(np.linalg.norm(p.V[i])),
            }
            for i in order
        ],
    )
    return info


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text of `describe`'s result."""
    lines = [f"{info['path']}: {info['kind']} model"]
    if info["kind"] != "pipeline":
        lines.append(f"  k={info['k']}  features={info['n_features']:,}  params={info['params']}")
        return "\n".join(lines)
    lines.append(
        f"  task {info['task']}  k={info['k']}  features {info['n_features']:,}  "
        f"cases learnt {info['cases_learnt']:,}"
    )
    lines.append("  feature groups:")
    lines += [f"    {g['name']:<20} {g['type']:<12} {g['features']:>10,}" for g in info["groups"]]
    s = info.get("summary") or {}
    if s:
        lines.append("  run: " + "  ".join(f"{k}={v}" for k, v in s.items()))
    if info["history"]:
        lines.append("  history:")
        for rec in info["history"]:
            vals = "  ".join(
                f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k != "seconds"
            )
            lines.append(
                f"    {rec['kind']:<7} epoch {rec['epoch']:>3}  rows {rec['rows']:>12,}  {vals}"
            )
    if info["top_features"]:
        lines.append("  largest linear weights:")
        lines += [
            f"    {f['feature']:<40} w={f['w']:+.4f}  |v|={f['v_norm']:.4f}"
            for f in info["top_features"]
        ]
    return "\n".join(lines)
