"""Per-prediction contributions of a trained model (`streamfm explain`, `TrainedModel.explain`).

The score of a row is exactly a sum of terms, which this module lists:

    score = w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j

one `bias` term, one `linear` term per non-zero, one `pair` term per pair of non-zeros, each
computed with the kernel's own float32 products (w_i·x_i, v_if·x_i) summed in float64, and one
`rounding` term (about 1e-7: the scorer adds w0 + Σ w_i x_i up in float32 and squares v_if·x_i
in float32 for Rendle's identity), so that the terms add up to the model's score to float64
rounding (about 1e-15 of their size).
Regression: a `clip` term brings the score to the clipped prediction (0 when not clipped).
Classification: the terms add up to the logit; the prediction is sigmoid(score). Features never
seen in training are listed with contribution 0 (their keys are named all the same).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from streamfm.frames import batches

# The columns of an explanation, one row per term.
SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64()),
        pa.field("kind", pa.string()),  # bias, linear, pair, rounding, clip
        pa.field("group", pa.string()),
        pa.field("feature", pa.string()),
        pa.field("x", pa.float64()),
        pa.field("other_group", pa.string()),
        pa.field("other_feature", pa.string()),
        pa.field("other_x", pa.float64()),
        pa.field("seen", pa.bool_()),
        pa.field("contribution", pa.float64()),
        pa.field("score", pa.float64()),
        pa.field("prediction", pa.float64()),
    ]
)


def explain_table(model, table: pa.Table, *, first_row: int = 0) -> pa.Table:
    """The terms of every row of `table` (columns of SCHEMA); `row` counts from `first_row`."""
    out: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    p = model.learner.params
    params = (float(p.w0[0]), p.w, p.V)
    row = first_row
    for batch in batches(table):
        for entries, score, prediction in _rows(model, batch):
            _emit(out, row, entries, score, prediction, model.task, params)
            row += 1
    return pa.table(out, schema=SCHEMA)


def _rows(model, batch: pa.RecordBatch):
    """Per row of the batch: ([(group, name, id, x, seen)] in the kernel's order, score,
    prediction)."""
    pipeline, learner = model.pipeline, model.learner
    space = pipeline.space
    n_seen = learner.params.n_features
    per_group = []
    for g, builder in enumerate(pipeline.builders):
        block = builder.build(batch, training=False)
        chunk = space.to_chunk([block], [g], training=False)
        keys = None if block.keys is None else _as_list(block.keys)
        per_group.append((builder, chunk, keys))
    full = pipeline.transform(batch, training=False)
    scores = learner.decision_function(full)
    predictions = learner.predict(full)
    for r in range(batch.num_rows):
        entries = []
        for g, (builder, chunk, keys) in enumerate(per_group):
            for nz in range(int(chunk.indptr[r]), int(chunk.indptr[r + 1])):
                fid = int(chunk.indices[nz])
                seen = 0 <= fid < n_seen
                if seen:
                    name = pipeline.feature_name(fid)
                elif keys is not None:  # a key never seen in training: named from the block
                    name = f"{builder.name}={builder.key_name(keys[nz])}"
                else:
                    name = pipeline.feature_name(fid)
                entries.append((space.groups[g], name, fid, float(chunk.values[nz]), seen))
        yield entries, float(scores[r]), float(predictions[r])


def _emit(out, row: int, entries, score: float, prediction: float, task: str, params) -> None:
    w0, w, V = params
    terms: list[tuple] = [("bias", None, None, None, None, None, None, True, w0)]
    ids = np.array([e[2] for e in entries], dtype=np.int64)
    seen = np.array([e[4] for e in entries], dtype=bool)
    x32 = np.array([e[3] for e in entries], dtype=np.float32)
    safe = np.where(seen, ids, 0)
    # w_i·x_i and v_if·x_i are float32 products, as the kernel scores them; sums in float64.
    lin = np.where(seen, (w[safe] * x32).astype(np.float64), 0.0)
    for (group, name, _fid, x, s), c in zip(entries, lin, strict=True):
        terms.append(("linear", group, name, x, None, None, None, s, float(c)))
    D = np.where(seen[:, None], (V[safe] * x32[:, None]).astype(np.float64), 0.0)
    gram = D @ D.T
    for a in range(len(entries)):
        ga, na, _, xa, sa = entries[a]
        for b in range(a + 1, len(entries)):
            gb, nb, _, xb, sb = entries[b]
            terms.append(("pair", ga, na, xa, gb, nb, xb, sa and sb, float(gram[a, b])))
    # The kernel adds w0 and the products w_i·x_i up in float32, and squares v_if·x_i in float32
    # (Rendle's identity): its score differs from the exact sum of the terms by these roundings.
    linear32 = np.float32(w0)
    for c in (w[safe] * x32)[seen]:
        linear32 = np.float32(linear32 + c)
    d32 = np.where(seen[:, None], V[safe] * x32[:, None], np.float32(0))
    residual = (float(linear32) - (w0 + math.fsum(lin))) + 0.5 * float(
        np.sum(D * D - (d32 * d32).astype(np.float64))
    )
    terms.append(("rounding", None, None, None, None, None, None, True, residual))
    if task == "regression":
        terms.append(("clip", None, None, None, None, None, None, True, prediction - score))
    for t in terms:
        for key, value in zip(SCHEMA.names[1:10], t, strict=True):
            out[key].append(value)
        out["row"].append(row)
        out["score"].append(score)
        out["prediction"].append(prediction)


def explain(model, data: Any, *, first_row: int = 0):
    """The terms of every row of `data` (a DataFrame, pyarrow Table, mapping of columns): a
    pyarrow Table (a pandas DataFrame when `data` is one) of SCHEMA's columns."""
    from streamfm.frames import is_pandas, to_table

    result = explain_table(model, model._with_columns(to_table(data)), first_row=first_row)
    return result.to_pandas() if is_pandas(data) else result


def summarize(terms: pa.Table, top: int = 10) -> list[dict[str, Any]]:
    """Per row: score, prediction, the bias, the sums by group (linear terms by their group,
    pair terms by their pair of groups) and the `top` largest terms by |contribution|."""
    rows: list[dict[str, Any]] = []
    data = terms.to_pylist()
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j]["row"] == data[i]["row"]:
            j += 1
        part = data[i:j]
        by_group: dict[str, float] = {}
        for t in part:
            if t["kind"] == "linear":
                key = t["group"]
            elif t["kind"] == "pair":  # the two groups in builder order
                key = f"{t['group']} x {t['other_group']}"
            else:
                continue
            by_group[key] = by_group.get(key, 0.0) + t["contribution"]
        largest = sorted(
            (t for t in part if t["kind"] in ("linear", "pair")),
            key=lambda t: -abs(t["contribution"]),
        )[:top]
        first = part[0]
        rows.append(
            {
                "row": first["row"],
                "score": first["score"],
                "prediction": first["prediction"],
                "bias": next(t["contribution"] for t in part if t["kind"] == "bias"),
                "clip": next((t["contribution"] for t in part if t["kind"] == "clip"), 0.0),
                "rounding": next(t["contribution"] for t in part if t["kind"] == "rounding"),
                "sum": math.fsum(t["contribution"] for t in part),
                "groups": by_group,
                "largest": [
                    {
                        "kind": t["kind"],
                        "feature": t["feature"]
                        + (f" x {t['other_feature']}" if t["kind"] == "pair" else ""),
                        "seen": t["seen"],
                        "contribution": t["contribution"],
                    }
                    for t in largest
                ],
                "unseen": sorted(
                    {t["feature"] for t in part if t["kind"] == "linear" and not t["seen"]}
                ),
            }
        )
        i = j
    return rows


def _as_list(keys) -> list:
    if isinstance(keys, pa.Array | pa.ChunkedArray):
        return keys.to_pylist()
    return np.asarray(keys).tolist()
