"""BPR training throughput next to the regression kernel's, per negative, on the same rows.

    python benchmarks/bench_bpr.py [--rows 1000000] [--users 50000] [--items 20000] [--k 8 32]
                                   [--negatives 1 4] [--repeats 5]

Synthetic events (user and item one-hot, power-law popularity), built once into a CSR chunk by
the spec's builders (`categorical` user, `categorical` item). Timed: `learner.learn(chunk, y)`
of a learner made from the spec: regression, BPR and BPR through the CSR kernel in turns, the
best of `--repeats` such rounds after a first pass, as CPU time of this process
(single-threaded kernels). Regression: SGD on a random rating, one case per
row. Ranking: `task: ranking`, `loss: bpr`, uniform negatives, `per_positive` n; a row is n
(positive, negative) pairs, so its cases per second per negative is rows/s x n. Target of issue 10:
BPR cases/s per negative >= 50% of the regression kernel's cases/s. Writes the `bpr-throughput`
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
from _report import command_line, machine, write_section

import streamfm.learners.ranking as ranking
from streamfm.spec import parse_spec
from streamfm.store.trained import TrainedModel


def events(n: int, users: int, items: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    pu = (np.arange(users) + 10.0) ** -0.7
    pi = (np.arange(items) + 20.0) ** -0.9
    u = rng.choice(users, n, p=pu / pu.sum())
    i = rng.choice(items, n, p=pi / pi.sum())
    return pa.table(
        {
            "user": pa.array(u.astype(np.int64)),
            "item": pa.array(i.astype(np.int64)),
            "rating": pa.array(rng.integers(1, 6, n).astype(np.float32)),
        }
    )


def model_of(task: str, k: int, negatives: int) -> TrainedModel:
    spec = {
        "source": {"path": "unused.parquet"},
        "task": task,
        "features": [
            {"type": "categorical", "name": "user", "columns": ["user"]},
            {"type": "categorical", "name": "item", "columns": ["item"]},
        ],
        "model": {"k": k, "init_std": 0.1, "seed": 0},
        "learner": {"method": "sgd", "learning_rate": 0.01},
        "output": {"dir": "unused"},
    }
    if task == "regression":
        spec["target"] = "rating"
    else:
        spec["ranking"] = {
            "item": "item",
            "loss": "bpr",
            "negatives": {"sampler": "uniform", "per_positive": negatives, "exclude_seen": False},
        }
    return TrainedModel.from_spec(parse_spec(spec))


def best_cpu_seconds(passes: dict, repeats: int) -> dict[str, float]:
    """Best CPU time of each named pass (a callable learning its chunk once more, as in a later
    epoch: the catalogue and parameters already hold every item and feature), the passes run in
    turns `repeats` times so that a busy moment of the machine slows them all alike."""
    for run in passes.values():
        run()  # compiles; the catalogue takes every item
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(repeats):
        for name, run in passes.items():
            t0 = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - t0)
    return best


def learning_pass(model: TrainedModel, chunk, y, csr: bool = False):
    """A callable that learns `chunk` once; `csr` forces the general CSR ranking kernel."""
    model.sync_features()

    def run() -> None:
        if not csr:
            model.learner.learn(chunk, y)
            return
        mf_layout, ranking.mf_layout = ranking.mf_layout, lambda *a: False
        try:
            model.learner.learn(chunk, y)
        finally:
            ranking.mf_layout = mf_layout

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--k", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--negatives", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    table = events(args.rows, args.users, args.items)
    rows = []
    for k in args.k:
        reg = model_of("regression", k, 1)
        chunk = reg.pipeline.transform(table, training=True)
        y = table.column("rating").to_numpy().astype(np.float64)
        for n in args.negatives:
            rank = model_of("ranking", k, n)
            rchunk = rank.pipeline.transform(table, training=True)
            ones = np.ones(args.rows)
            csr = model_of("ranking", k, n)  # the same events through the CSR kernel
            cchunk = csr.pipeline.transform(table, training=True)
            best = best_cpu_seconds(
                {
                    "regression": learning_pass(reg, chunk, y),
                    "bpr": learning_pass(rank, rchunk, ones),
                    "csr": learning_pass(csr, cchunk, ones, csr=True),
                },
                args.repeats,
            )
            layout = rank.learner.last_layout
            reg_rate = args.rows / best["regression"]
            per_negative = args.rows * n / best["bpr"]
            csr_rate = args.rows * n / best["csr"]
            ratio = per_negative / reg_rate
            print(
                f"k {k}, {n} negatives: regression {reg_rate / 1e6:.2f} M cases/s, "
                f"BPR ({layout} kernel) {per_negative / 1e6:.2f} M cases/s per negative, "
                f"ratio {ratio:.2f}; CSR kernel {csr_rate / 1e6:.2f} M"
            )
            rows.append(
                f"| {k} | {n} | {reg_rate / 1e6:.2f} | {per_negative / n / 1e6:.2f} | "
                f"{per_negative / 1e6:.2f} | {ratio:.2f} | {'yes' if ratio >= 0.5 else 'NO'} | "
                f"{layout} | {csr_rate / 1e6:.2f} | {per_negative / csr_rate:.2f} |"
            )
    body = "\n".join(
        [
            "## BPR training throughput next to the regression kernel",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            f"{args.rows:,} synthetic events ({args.users:,} users, {args.items:,} items, one-hot "
            "each), built once by the spec's builders; `learner.learn` on the whole chunk again "
            "(a later epoch), CPU time; the three passes of a row (regression, BPR, BPR through "
            f"the CSR kernel) run in turns, {args.repeats} times after a first pass, best of "
            "each. SGD, constant rate. BPR: uniform negatives (the sampler's time included), one pair per negative. The learner "
            "takes the MF-layout kernel for these rows (one context and one item entry of value "
            "1); the last columns run the same events through the general CSR kernel.",
            "",
            "| k | negatives per positive | regression M cases/s | BPR M events/s | "
            "BPR M pairs/s (per negative) | ratio | >= 0.5 | kernel | CSR kernel M pairs/s | "
            "kernel / CSR |",
            "|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
            *rows,
        ]
    )
    write_section("bpr-throughput", body)
    print(body)


if __name__ == "__main__":
    main()
