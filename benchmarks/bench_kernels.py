"""Throughput of the numba kernels `sgd_csr` (plain SGD, AdaGrad) and `predict_csr` on one core.

    python benchmarks/bench_kernels.py [--features 10000] [--seconds 0.5] [--repeats 3]

Synthetic CSR data: each row has `nnz` non-zeros of value 1.0, one random id in each of `nnz`
equal slices of the feature space (one-hot fields, so no id repeats within a row); targets are
N(0, 1). Kernels are compiled before timing; each figure is the best of `--repeats` runs, a run
being as many passes over the data as fill about `--seconds` of CPU time. Times are CPU time of
this process (the kernels are single-threaded), so that other jobs on a shared machine taking
the core away do not count. "nnz·k/s" counts, per case, the nnz·k factor entries it touches
(read for the prediction and, when learning, written back).
Writes the table to the "kernels" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from _report import command_line, machine, write_section

from streamfm.learners import kernels

CASES: list[tuple[int, int]] = [(2, 8), (2, 32), (10, 8), (100, 8)]
NNZ_PER_CHUNK = 2_000_000


def make_data(
    n_rows: int, nnz: int, n_features: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (indptr int64, indices int32, values float32 all 1.0) and targets y (float64)."""
    rng = np.random.default_rng(seed)
    width = n_features // nnz
    offsets = np.arange(nnz, dtype=np.int64) * width
    ids = rng.integers(0, width, size=(n_rows, nnz)) + offsets
    indptr = np.arange(n_rows + 1, dtype=np.int64) * nnz
    indices = ids.astype(np.int32).ravel()
    values = np.ones(n_rows * nnz, dtype=np.float32)
    y = rng.standard_normal(n_rows)
    return indptr, indices, values, y


class Params:
    """FM parameters and AdaGrad accumulators laid out as `FMParams` holds them."""

    def __init__(self, n_features: int, k: int, adagrad: bool, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.w0 = np.zeros(1, dtype=np.float32)
        self.w = np.zeros(n_features, dtype=np.float32)
        self.V = (0.1 * rng.standard_normal((n_features, k))).astype(np.float32)
        self.group = np.zeros(n_features, dtype=np.int32)
        n_acc = n_features if adagrad else 0
        self.acc_w0 = np.full(1, 1.0 if adagrad else 0.0, dtype=np.float32)
        self.acc_w = np.ones(n_acc, dtype=np.float32)
        self.acc_V = np.ones((n_acc, k), dtype=np.float32)
        self.adagrad = adagrad


def sgd_pass(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    order: np.ndarray,
    p: Params,
    lr: float,
    pred: np.ndarray,
    target_range: np.ndarray,
) -> None:
    """One `sgd_csr` pass (regression, constant rate, clipping on); raises if it diverged."""
    indptr, indices, values, y = data
    bad = kernels.sgd_csr(
        indptr,
        indices,
        values,
        y,
        order,
        p.w0,
        p.w,
        p.V,
        p.group,
        np.zeros(1),
        np.full(1, 0.01),
        0.0,
        p.adagrad,
        p.acc_w0,
        p.acc_w,
        p.acc_V,
        lr,
        kernels.SCHEDULE_CONSTANT,
        0.0,
        0.5,
        0,
        kernels.TASK_REGRESSION,
        True,
        target_range,
        pred,
    )
    if bad >= 0:
        raise RuntimeError(f"sgd_csr diverged at case {bad}: lower the benchmark's learning rate")


def best_seconds_per_pass(run_pass: Callable[[], None], seconds: float, repeats: int) -> float:
    """Best over `repeats` runs of (CPU time / passes), passes chosen to fill about `seconds`."""
    t = time.process_time()
    run_pass()
    one = time.process_time() - t
    passes = max(1, math.ceil(seconds / max(one, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(passes):
            run_pass()
        best = min(best, (time.process_time() - t) / passes)
    return best


def bench_case(
    nnz: int, k: int, n_features: int, seconds: float, repeats: int
) -> list[tuple[str, float]]:
    """(kernel name, best seconds per pass) for sgd, adagrad and predict on one (nnz, k) case."""
    n_rows = NNZ_PER_CHUNK // nnz
    data = make_data(n_rows, nnz, n_features)
    order = np.arange(n_rows, dtype=np.int64)
    pred = np.empty(n_rows, dtype=np.float64)
    out: list[tuple[str, float]] = []
    for name, adagrad, lr in (("sgd", False, 0.001), ("adagrad", True, 0.01)):
        p = Params(n_features, k, adagrad)
        target_range = np.array([np.inf, -np.inf])

        def run(p: Params = p, lr: float = lr, tr: np.ndarray = target_range) -> None:
            sgd_pass(data, order, p, lr, pred, tr)

        out.append((name, best_seconds_per_pass(run, seconds, repeats)))
    p = Params(n_features, k, False)
    indptr, indices, values, _ = data

    def run_predict() -> None:
        kernels.predict_csr(indptr, indices, values, p.w0, p.w, p.V, n_features, pred)

    out.append(("predict", best_seconds_per_pass(run_predict, seconds, repeats)))
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel specialisation timed below."""
    data = make_data(8, 2, 16)
    order = np.arange(8, dtype=np.int64)
    pred = np.empty(8)
    for adagrad in (False, True):
        sgd_pass(data, order, Params(16, 4, adagrad), 0.01, pred, np.array([np.inf, -np.inf]))
    p = Params(16, 4, False)
    kernels.predict_csr(data[0], data[1], data[2], p.w0, p.w, p.V, 16, pred)


def main() -> None:
    """Run every case, print the table and write the "kernels" section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=10_000, help="feature ids (default 10000)")
    ap.add_argument("--seconds", type=float, default=0.5, help="target length of one run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is kept")
    args = ap.parse_args()
    warm_up()
    rows = [
        "| nnz/row | k | kernel | rows | s/pass | M cases/s | M nnz·k/s |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for nnz, k in CASES:
        n_rows = NNZ_PER_CHUNK // nnz
        for name, sec in bench_case(nnz, k, args.features, args.seconds, args.repeats):
            line = (
                f"| {nnz} | {k} | {name} | {n_rows:,} | {sec:.4f} | {n_rows / sec / 1e6:.1f} | "
                f"{n_rows * nnz * k / sec / 1e6:.0f} |"
            )
            rows.append(line)
            print(line, flush=True)
    body = "\n".join(
        [
            "## Kernels: per-case SGD / AdaGrad and prediction throughput (one core)",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            f"Synthetic CSR rows, values 1.0, ids one-hot in `nnz` fields over {args.features:,} "
            f"features; {NNZ_PER_CHUNK:,} non-zeros per chunk. Regression with clipping, constant "
            "rate. Best of "
            f"{args.repeats} runs of ~{args.seconds:g} s each, compiled beforehand; CPU time of "
            "the process (single-threaded kernels), so time taken by other jobs on the shared "
            "machine does not count. nnz·k/s counts the factor entries each case touches (read "
            "to predict and, when learning, updated). SGD lr 0.001, AdaGrad lr 0.01, targets "
            "N(0, 1).",
            "",
            *rows,
        ]
    )
    write_section("kernels", body)


if __name__ == "__main__":
    main()
