"""Hogwild (`learner.threads`): kernel cases/s at 1 vs N threads, and accuracy after 10 passes.

    python benchmarks/bench_hogwild.py [--threads 2] [--rounds 5] [--seconds 1] [--shared ../shared]

Throughput: SGDLearner.learn on chunks of bench_kernels.py's one-hot rows (fixed-width layout,
2,000,000 non-zeros a chunk, 10,000 or 1,000,000 features), 1 and N threads measured in alternating rounds in
one process, the best round of each kept. Threads need wall-clock time (CPU time adds the
threads' times up); the CPU / wall column shows how many cores the run actually got — on a
shared machine less than N means other jobs took the cores and the ratio understates Hogwild.
Cases per CPU second (N threads / 1) shows what the threads lose to each other (shared cache
lines), whatever the load.

Accuracy: the planted yardstick of ../shared/bench (900,000 training rows, 100,000 test; one-hot
user and item), 10 passes in chunks of 20,000 rows, test RMSE at 1 and N threads, SGD (libFM's
settings) and AdaGrad (bench_planted.py's). Writes the "hogwild" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _planted import ensure_planted, planted_arguments
from _report import command_line, machine, write_section
from bench_kernels import NNZ_PER_CHUNK, make_data

from streamfm.config import LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk, slice_rows
from streamfm.learners.sgd import SGDLearner


def learner(optimizer: str, threads: int, k: int, n_features: int, lr: float) -> SGDLearner:
    lrn = SGDLearner(
        ModelConfig(k=k, seed=1, init_std=0.1),
        LearnerConfig(optimizer=optimizer, learning_rate=lr, reg_factors=0.001, threads=threads),
    )
    lrn.params.ensure_features(n_features)
    return lrn


def throughput(
    nnz: int, k: int, optimizer: str, threads: int, rounds: int, seconds: float, features: int
):
    """{config: (best cases/s of wall time, CPU seconds / wall seconds of that round, best
    cases per CPU second)} for 1 thread, `threads` Hogwild threads and "private": `threads`
    one-thread learners, each on its own parameters in its own thread at the same time (nothing
    shared: what the cores give when no cache line moves between them)."""
    n_rows = NNZ_PER_CHUNK // nnz
    indptr, indices, values, y = make_data(n_rows, nnz, features)
    chunk = CSRChunk(indptr, indices, values)
    lr = 0.001 if optimizer == "sgd" else 0.01
    lrns = {t: [learner(optimizer, t, k, features, lr)] for t in (1, threads)}
    lrns["private"] = [learner(optimizer, 1, k, features, lr) for _ in range(threads)]
    for group in lrns.values():
        for lrn in group:
            lrn.learn(chunk, y)  # compile / load, start the pool
    pool = ThreadPoolExecutor(threads)

    def learn_all(group: list) -> None:
        if len(group) == 1:
            group[0].learn(chunk, y)
        else:
            list(pool.map(lambda lrn: lrn.learn(chunk, y), group))

    best: dict = {t: (0.0, 0.0, 0.0) for t in lrns}
    for _ in range(rounds):
        for t, group in lrns.items():
            passes = 0
            wall, cpu = time.perf_counter(), time.process_time()
            while True:
                learn_all(group)
                passes += len(group)
                spent = time.perf_counter() - wall
                if spent >= seconds:
                    break
            rate = passes * n_rows / spent
            cpu = time.process_time() - cpu
            per_cpu = max(best[t][2], passes * n_rows / cpu)
            if rate > best[t][0]:
                best[t] = (rate, cpu / spent, per_cpu)
            else:
                best[t] = (*best[t][:2], per_cpu)
    pool.shutdown()
    return best


def accuracy(optimizer: str, threads: int, folder) -> dict[int, float]:
    """Test RMSE after 10 passes at 1 and `threads` threads on the planted yardstick (libFM's SGD
    settings, or bench_planted.py's AdaGrad ones), chunks of 20,000 rows in file order."""
    from bench_planted import ADAGRAD_CHOSEN, LIBFM_SGD, N_FEATURES, load

    X, y = load(folder / "train.parquet")
    Xt, yt = load(folder / "test.parquet")
    train = CSRChunk(X.indptr.astype(np.int64), X.indices.astype(np.int32), X.data)
    test = CSRChunk(Xt.indptr.astype(np.int64), Xt.indices.astype(np.int32), Xt.data)
    lr = LIBFM_SGD["learning_rate"] if optimizer == "sgd" else ADAGRAD_CHOSEN["learning_rate"]
    out = {}
    for t in (1, threads):
        lrn = SGDLearner(
            ModelConfig(k=8, seed=0, init_std=0.1),
            LearnerConfig(optimizer=optimizer, learning_rate=lr, reg_factors=0.01, threads=t),
        )
        lrn.params.ensure_features(N_FEATURES)
        for _ in range(10):
            for start in range(0, train.n_rows, 20_000):
                stop = min(start + 20_000, train.n_rows)
                lrn.learn(slice_rows(train, start, stop), y[start:stop])
        out[t] = math.sqrt(float(np.mean((lrn.predict(test) - yt) ** 2)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best is kept")
    ap.add_argument("--seconds", type=float, default=1.0, help="wall time of one round")
    planted_arguments(ap)
    args = ap.parse_args()
    folder = ensure_planted(args.shared, args.work)
    n = args.threads
    rows = [
        f"| features | nnz/row | k | method | M cases/s, 1 thread | M cases/s, {n} threads | ratio | "
        f"CPU / wall, 1 | CPU / wall, {n} | cases per CPU s, {n} / 1 | {n} private copies / 1 |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cores_got, per_cpu = [], []
    cases = [(f, nnz, k) for f in (10_000, 1_000_000) for nnz, k in [(2, 8), (10, 8), (2, 32)]]
    for features, nnz, k in cases:
        for optimizer in ("sgd", "adagrad"):
            b = throughput(nnz, k, optimizer, n, args.rounds, args.seconds, features)
            cores_got.append(b[n][1])
            per_cpu.append(b[n][2] / b[1][2])
            line = (
                f"| {features:,} | {nnz} | {k} | {optimizer} | {b[1][0] / 1e6:.2f} | {b[n][0] / 1e6:.2f} | "
                f"{b[n][0] / b[1][0]:.2f} | {b[1][1]:.2f} | {b[n][1]:.2f} | "
                f"{b[n][2] / b[1][2]:.2f} | {b['private'][0] / b[1][0]:.2f} |"
            )
            rows.append(line)
            print(line, flush=True)
    rows += ["", f"| method | test RMSE, 1 thread | test RMSE, {n} threads | difference |"]
    rows += ["|---|---:|---:|---:|"]
    for optimizer in ("sgd", "adagrad"):
        r = accuracy(optimizer, n, folder)
        line = f"| {optimizer} | {r[1]:.4f} | {r[n]:.4f} | {r[n] - r[1]:+.4f} |"
        rows.append(line)
        print(line, flush=True)
    load = os.getloadavg()[0]
    if max(cores_got) < 0.8 * n:
        verdict = (
            f"**This run could not measure the speedup of {n} threads:** the machine was busy "
            f"(other jobs), and the {n}-thread rounds got at most {max(cores_got):.2f} cores "
            "(CPU / wall), so both configurations were limited by the cores they were given and "
            f"the wall ratio says nothing about Hogwild. What it does show: per CPU second, {n} "
            f"threads get {min(per_cpu):.2f}–{max(per_cpu):.2f} of one thread's work done, so "
            f"with {n} idle cores the speedup would be about {n * min(per_cpu):.1f}–"
            f"{n * max(per_cpu):.1f}× (an estimate, not a measurement: threads that do not run "
            "at the same moment do not contend for cache lines either)."
        )
    else:
        verdict = (
            f"The {n}-thread rounds got up to {max(cores_got):.2f} cores (CPU / wall); rows whose "
            f"{n}-thread CPU / wall is well below {n} were limited by other jobs on the machine, "
            "not by Hogwild, and their ratio says nothing about it."
        )
    body = "\n".join(
        [
            f"## Hogwild: 1 vs {n} threads (learner.threads)",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}; load average at the end {load:.1f}",
            "",
            "SGDLearner.learn on one-hot chunks (2,000,000 non-zeros over 10,000 or 1,000,000 "
            f"features, the fixed-width kernels), 1 and {n} threads in {args.rounds} alternating rounds of "
            f"~{args.seconds:g} s wall time in one process, the best round of each; ratio = "
            f"{n} threads / 1 thread from the same run. CPU / wall: cores the round actually got "
            "(other jobs share this machine; the wall ratio only measures Hogwild when CPU / "
            f"wall is near 1 and near {n}). Cases per CPU s, {n} / 1: the work each thread gets "
            "done per CPU second it runs, relative to one thread (1.0: no loss to the threads' "
            "contention on shared parameters; the speedup with idle cores is at most "
            f"{n} times it). {n} private copies / 1: {n} one-thread learners on their own "
            "parameters, in their own threads at the same time, against one (nothing shared: "
            "what the cores give when no cache line moves between them; Hogwild's ratio below "
            "it is what the threads lose to sharing w and V). Then test RMSE after 10 passes on the planted "
            "yardstick (../shared/bench/planted.py: 900,000 training rows, 100,000 test; user + "
            "item one-hot, so the fixed-width kernels), chunks of 20,000 rows in file order, k 8, "
            "init_std 0.1, reg_factors 0.01: SGD lr 0.01 (libFM's settings), AdaGrad lr 0.15 "
            "(bench_planted.py).",
            "",
            verdict,
            "",
            *rows,
        ]
    )
    write_section("hogwild", body)


if __name__ == "__main__":
    main()
