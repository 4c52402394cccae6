"""Child process of bench_ranking.py: train one streamfm `task: ranking` spec, write all-items
scores.

    python benchmarks/_streamfm_ranking.py JOB.json

JOB.json: {"work": dir, "train": parquet of (user, item, timestamp) in time order, "items":
parquet of (item, genres) or null, "users": [raw user ids], "catalogue": [raw item ids],
"seed": int, "params": {...}, "genres": bool, "sequence_type": builder type of the sequence
builder}. Writes work/scores.npy: (len(users), len(catalogue)) float64, -inf for items the model
never saw. Run with the streamfm checkout that has `task: ranking` first on PYTHONPATH.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    work = Path(job["work"])
    p = job["params"]
    features: list[dict] = [{"type": "mf"}]
    item_features: list[str] = []
    if job["genres"]:
        features.append(
            {
                "type": "join",
                "name": "movie",
                "key": "item",
                "table": {"path": job["items"]},
                "features": [{"type": "set", "column": "genres", "name": "genre"}],
            }
        )
        item_features = ["movie"]
        features.append(
            {
                "type": job["sequence_type"],
                "name": "prev",
                "key": "user",
                "items": "item",
                "length": p.get("length", 5),
                "normalize": "mean",
            }
        )
    spec = {
        "source": {"path": job["train"]},
        "task": "ranking",
        "features": features,
        "ranking": {
            "item": "item",
            "item_features": item_features,
            "user": "user",
            "loss": "bpr",
            "negatives": {
                "sampler": "uniform",
                "per_positive": p.get("negatives", 1),
                "exclude_seen": True,
                # only when set: checkouts before negatives.candidates refuse the key
                **({"candidates": p["candidates"]} if "candidates" in p else {}),
            },
        },
        "model": {"k": p["k"], "seed": job["seed"], "init_std": 0.05},
        "learner": {
            "method": "adagrad",
            "learning_rate": p["lr"],
            "epochs": p["epochs"],
            "reg_linear": p.get("reg", 0.0),
            "reg_factors": p.get("reg", 0.0),
        },
        "output": {"dir": str(work / "run")},
        "checkpoint": {"enabled": False},
    }
    (work / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    import streamfm
    from streamfm.learners.item_scores import context_vectors, item_vectors

    model = streamfm.train(work / "spec.yaml").model
    names = [b.name for b in model.pipeline.builders]
    item_group = names.index("item")
    skip = [names.index(n) for n in ["item", *item_features]]
    learner = model.learner
    cat = learner.catalogue
    users = job["users"]
    batch = pa.record_batch({"user": users, "item": [job["catalogue"][0]] * len(users)})
    chunk = model.transform(batch)
    cb, cq = context_vectors(learner.params, chunk.indptr, chunk.indices, chunk.values, skip)
    ib, IQ = item_vectors(learner.params, cat)
    model_items = cat.item_keys(model.pipeline, item_group).to_pylist()
    where = {str(k): j for j, k in enumerate(model_items)}
    cols = np.array([where.get(str(i), -1) for i in job["catalogue"]])
    scores = np.full((len(users), len(cols)), -np.inf)
    ok = cols >= 0
    scores[:, ok] = cb[:, None] + ib[None, cols[ok]] + cq @ IQ[cols[ok]].T
    np.save(work / "scores.npy", scores)


if __name__ == "__main__":
    main()
