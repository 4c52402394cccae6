"""`streamfm export`: a model's vocabulary and parameters as Parquet files, one per feature group,
for use outside streamfm (nearest-neighbour search on item embeddings, analysis, serving).

Each `<group>.parquet` has one row per feature of the group seen in training:

    id       int64     the global feature id (the row of w and V)
    key      string    the key the builder emitted (a category, "3" for an id), or for fixed ids
                       the builder's name of it (a numeric column, a hash bucket)
    name     string    the readable name (`inspect`, `explain`): "user=3", "age", "x#hash17"
    w        float32   the linear weight
    V        fixed_size_list<float32>[k]   the factor vector

and `model.json` lists the groups and their files, with w0, k, the task and the model file.
Estimators fitted on arrays have one group, `features`, whose ids are the columns; with 3+
classes (one-vs-rest) every class gets a folder `class=<label>/` of its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamfm.errors import SpecError
from streamfm.store.archive import write_atomic
from streamfm.store.models import load_model


def export_model(model_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the Parquet files and model.json of the model file `model_path` into `out_dir`
    (created if needed; files of the same names are replaced). Returns what model.json says."""
    model = load_model(model_path)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"-o {out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "pipeline") and hasattr(model, "learner"):  # a TrainedModel
        info = {"kind": "pipeline", "task": model.task}
        info.update(_write(out_dir, model.pipeline, model.learner.params))
    else:
        info = {"kind": type(model).__name__, "task": model._task}
        pipeline = model.pipeline_ if model._table else None
        if len(model.learners_) == 1:
            info.update(_write(out_dir, pipeline, model.learners_[0].params))
        else:
            info["classes"] = []
            for label, lrn in zip(model.classes_.tolist(), model.learners_, strict=True):
                folder = f"class={_safe(str(label))}"
                (out_dir / folder).mkdir(exist_ok=True)
                part = _write(out_dir / folder, pipeline, lrn.params)
                info["classes"].append({"label": label, "folder": folder, **part})
    info["model_file"] = str(model_path)
    text = json.dumps(info, indent=1, default=_plain)
    write_atomic(out_dir / "model.json", lambda f: f.write(text.encode()))
    return info


def group_tables(pipeline, params) -> list[tuple[str, pa.Table]]:
    """(group name, table) of every feature group, rows in id order (see the module docstring)."""
    n = params.n_features
    k = params.k
    if pipeline is None:
        ids = np.arange(n, dtype=np.int64)
        keys = [str(i) for i in ids]
        return [("features", _table(ids, keys, keys, params, k))]
    space = pipeline.space
    out = []
    for g, (name, builder) in enumerate(zip(space.groups, pipeline.builders, strict=True)):
        base, size = space.reserved[g]
        fixed = np.arange(base, base + size, dtype=np.int64)
        fixed = fixed[fixed < n]
        keyed, raw_keys = space.vocabulary(g)
        raw = raw_keys.to_pylist()
        keep = keyed < n
        ids = np.concatenate([fixed, keyed[keep]])
        keys = [builder.reserved_name(int(i - base)) for i in fixed]
        keys += [str(key) for key, kept in zip(raw, keep.tolist(), strict=True) if kept]
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        keys = [keys[i] for i in order]
        names = [pipeline.feature_name(int(i)) for i in ids]
        out.append((name, _table(ids, keys, names, params, k)))
    return out


def _write(out_dir: Path, pipeline, params) -> dict[str, Any]:
    groups = []
    used: set[str] = set()
    for name, table in group_tables(pipeline, params):
        file = _safe(name) + ".parquet"
        while file in used:  # two names that differ only in unsafe characters
            file = "_" + file
        used.add(file)
        write_atomic(out_dir / file, lambda f, t=table: pq.write_table(t, f))
        groups.append({"name": name, "file": file, "rows": table.num_rows})
    return {"w0": float(params.w0[0]), "k": int(params.k), "groups": groups}


def _table(ids: np.ndarray, keys: list[str], names: list[str], params, k: int) -> pa.Table:
    V = np.ascontiguousarray(params.V[ids], dtype=np.float32)
    factors = pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), k)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "key": pa.array(keys, pa.string()),
            "name": pa.array(names, pa.string()),
            "w": pa.array(params.w[ids], pa.float32()),
            "V": factors,
        }
    )


def _safe(name: str) -> str:
    """A file name for a group name: characters other than letters, digits, . _ - become _."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)
