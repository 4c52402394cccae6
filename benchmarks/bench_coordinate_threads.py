"""ALS and MCMC sweeps on 1 and 2 threads (learner.threads), side by side on the planted data.

    python benchmarks/bench_coordinate_threads.py [--shared ../shared] [--work .bench-data]
                                                  [--repeats 3]

The planted yardstick's 900k training ratings (user and item one-hot, k 8), in memory as CSR +
CSC, `fit_coordinate` (the kernel the ALS / MCMC learner runs) with threads 1 and 2 in turns:
ALS 10 iterations (reg 0, 0, 0.01), MCMC 20 iterations. Two id layouts: libFM's (users, then
items: the sweep's waves are 2) and the first-appearance order a spec run allocates (users and
items interleaved: more, smaller waves). s/iter: the median `coordinate_iteration` call (no
metrics, no test rows). "same model": w0, w, V and the hyper-parameters of both thread counts
are equal bit for bit. Writes the `coordinate-threads` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from _planted import ensure_planted, planted_arguments
from _report import command_line, machine, write_section

from streamfm.learners.coordinate import design_arrays, fit_coordinate, sweep_schedule

K = 8
N_USERS = 6000


def design(path, layout: str) -> tuple[sp.csr_matrix, np.ndarray]:
    t = pq.read_table(path, columns=["user", "item", "rating"])
    u = np.asarray(t["user"]).astype(np.int64)
    i = np.asarray(t["item"]).astype(np.int64) + N_USERS
    ids = np.stack([u, i], axis=1).ravel()
    if layout == "stream":  # ids in order of first appearance, as a spec's builders give them
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        ids = rank[inverse]
    n = len(u)
    X = sp.csr_matrix(
        (np.ones(2 * n, dtype=np.float32), ids, np.arange(0, 2 * n + 1, 2, dtype=np.int64)),
        shape=(n, int(ids.max()) + 1),
    )
    return X, np.asarray(t["rating"]).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    planted_arguments(ap)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    folder = ensure_planted(args.shared, args.work.resolve())
    rows = [
        "| ids | method | waves | 1 thread s/iter | 2 threads s/iter | speed-up | same model |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for layout in ("libFM", "stream"):
        X, y = design(folder / "train.parquet", layout)
        arrays = design_arrays(X)
        waves = len(sweep_schedule(arrays[3], arrays[4], X.shape[0], X.shape[1])[0]) - 1
        for method, kw in (
            ("als", dict(n_iter=10, reg=(0.0, 0.0, 0.01))),
            ("mcmc", dict(n_iter=20)),
        ):
            fit_coordinate(X[:2000], y[:2000], method=method, k=K, n_iter=2, threads=2)  # compile
            per: dict[int, list[float]] = {1: [], 2: []}
            states = {}
            for _ in range(args.repeats):
                for threads in (1, 2):
                    r = fit_coordinate(
                        X, y, method=method, k=K, seed=1, metrics=False, threads=threads, **kw
                    )
                    per[threads] += [h["seconds"] for h in r.history]
                    states[threads] = r.state
            same = all(
                np.array_equal(getattr(states[1], a), getattr(states[2], a))
                for a in ("w0", "w", "V", "alpha", "w_mu", "w_lambda", "v_mu", "v_lambda")
            )
            one, two = statistics.median(per[1]), statistics.median(per[2])
            line = (
                f"| {layout} | {method} | {waves} | {one:.3f} | {two:.3f} | {one / two:.2f} | "
                f"{'yes' if same else 'NO'} |"
            )
            rows.append(line)
            print(line, flush=True)
    body = "\n".join(
        [
            "## ALS and MCMC sweeps on 1 and 2 threads",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            "The planted yardstick's 900,000 training ratings in memory (CSR + CSC), k 8; "
            "`fit_coordinate` with threads 1 and 2 in turns, "
            f"{args.repeats} repeats; ALS 10 iterations, MCMC 20; s/iter: median of the "
            "`coordinate_iteration` calls. Ids: libFM's layout (users then items) or the order "
            "of first appearance a spec run allocates. Each sweep runs its features in waves "
            "that share no row (`sweep_schedule`), so the model is the one-thread model bit for "
            "bit (last column). The machine has 2 cores and is shared.",
            "",
            *rows,
        ]
    )
    write_section("coordinate-threads", body)


if __name__ == "__main__":
    main()
