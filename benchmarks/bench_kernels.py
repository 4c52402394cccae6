"""Throughput of the numba kernels (per-case SGD, AdaGrad; prediction) on one core.

    python benchmarks/bench_kernels.py [--features 10000] [--seconds 0.5] [--repeats 3]
    python benchmarks/bench_kernels.py --baseline /path/to/older/checkout [--features 1000000]

The `+w` rows time the kernels with a weight per case (`WEIGHTED_KERNELS`, weights all 1.0);
the `fixed` rows the fixed-width kernels on the same rows (`FIXED_KERNELS`), and `bare fixed sgd`
a bare numba loop of the same SGD update over the (n, nnz) id matrix, the ceiling of that layout.
Hogwild threads (learner.threads) are measured by benchmarks/bench_hogwild.py (wall time).

Synthetic CSR data: each row has `nnz` non-zeros of value 1.0, one random id in each of `nnz`
equal slices of the feature space (one-hot fields, so no id repeats within a row); targets are
N(0, 1). Kernels are compiled before timing; each figure is the best of `--repeats` runs, a run
being as many passes over the data as fill about `--seconds` of CPU time. Times are CPU time of
the process (the kernels are single-threaded), so that other jobs on a shared machine taking
the core away do not count. "nnz·k/s" counts, per case, the nnz·k factor entries it touches
(read for the prediction and, when learning, written back).

With `--baseline DIR` (a checkout of another version, e.g. `git worktree add /tmp/old v0.1`),
every run is made in a child process, alternately with this checkout's kernels and with DIR's,
so that both are measured side by side in the same conditions; the table shows both and their
ratio. Writes the table to the "kernels" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _report import command_line, machine, write_section
from numba import njit

ROOT = Path(__file__).resolve().parent.parent

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


def in_order(n_rows: int) -> np.ndarray | None:
    """The `order` of a pass over every row in turn, as the training loop learns a chunk: None
    where the kernels take it (no order array read per case), else arange(n_rows)."""
    try:
        from streamfm.learners.sgd import case_row  # noqa: F401 - kernels that take None
    except ImportError:
        return np.arange(n_rows, dtype=np.int64)
    return None


@functools.cache
def shared_flag() -> tuple[bool, ...]:
    """The kernels' last argument `shared` (False: one thread), () for versions without it."""
    from streamfm.learners import sgd

    layout_pass = getattr(sgd, "_layout_pass", None)
    py_func = getattr(layout_pass, "py_func", None)
    takes = py_func is not None and "shared" in inspect.signature(py_func).parameters
    return (False,) if takes else ()


def weighted_kernel() -> Callable | None:
    """The sgd pass with a weight per case (all 1.0), or None for versions without weights."""
    try:
        from streamfm.learners.sgd import WEIGHTED_KERNELS
    except ImportError:
        return None

    def weighted_pass(data, order, p, lr, pred, target_range) -> int:
        indptr, indices, values, y = data
        kernel = WEIGHTED_KERNELS[("adagrad" if p.adagrad else "sgd", "squared")]
        return kernel(
            (indptr, indices, values), y, np.ones(len(y)), order, (p.w0, p.w, p.V),
            (p.acc_w0, p.acc_w, p.acc_V), (0.0, np.zeros(1), np.full(1, 0.01), p.group),
            (lr, 0.0, 0.5, 0), target_range, True, pred, *shared_flag(),
        )  # fmt: skip

    return weighted_pass


def fixed_kernel() -> Callable | None:
    """The sgd pass over the fixed-width layout (rows (n, nnz) int32, every x 1.0), or None for
    versions without it."""
    try:
        from streamfm.learners.sgd import FIXED_KERNELS
    except ImportError:
        return None

    def fixed_pass(data, order, p, lr, pred, target_range) -> int:
        indptr, indices, values, y = data
        kernel = FIXED_KERNELS[("adagrad" if p.adagrad else "sgd", "squared")]
        idx = indices.reshape(len(y), -1)
        return kernel(
            (idx,), y, order, (p.w0, p.w, p.V), (p.acc_w0, p.acc_w, p.acc_V),
            (0.0, np.zeros(1), np.full(1, 0.01), p.group), (lr, 0.0, 0.5, 0), target_range,
            True, pred, *shared_flag(),
        )  # fmt: skip

    return fixed_pass


@njit(cache=True, nogil=True, error_model="numpy")
def bare_fixed_sgd(idx, y, w0, w, V, lr, reg_v, out):
    """The ceiling of the fixed-width layout: the same SGD update of the squared loss (float32
    parameters, float64 sums, L2 on V) written as one bare loop over an (n, fields) id matrix,
    rows in order, with nothing else (no clipping, no per-group L2, no id or finiteness checks,
    no schedule)."""
    n, fields = idx.shape
    k = V.shape[1]
    sums = np.zeros(k, dtype=np.float64)
    sqs = np.zeros(k, dtype=np.float64)
    for r in range(n):
        p = float(w0[0])
        for f in range(k):
            sums[f] = 0.0
            sqs[f] = 0.0
        for c in range(fields):
            j = np.uint32(idx[r, c])
            p += w[j]
            for f in range(k):
                d = V[j, f]
                sums[f] += d
                sqs[f] += d * d
        inter = 0.0
        sq = 0.0
        for f in range(k):
            inter += sums[f] * sums[f]
            sq += sqs[f]
        score = p + 0.5 * (inter - sq)
        out[r] = score
        g = score - y[r]
        w0[0] = w0[0] - lr * g
        for c in range(fields):
            j = np.uint32(idx[r, c])
            w[j] = w[j] - lr * g
            for f in range(k):
                v = V[j, f]
                V[j, f] = v - lr * (g * sums[f] - g * v + reg_v * v)


def kernels() -> tuple[Callable, Callable]:
    """(sgd pass, predict) of the streamfm that is importable: today's kernels or 0.1's."""
    try:
        from streamfm.learners.scoring import predict_csr
        from streamfm.learners.sgd import KERNELS
    except ImportError:  # streamfm 0.1: one kernel with flags
        from streamfm.learners import kernels as old

        def old_pass(data, order, p, lr, pred, target_range) -> int:
            indptr, indices, values, y = data
            return old.sgd_csr(
                indptr, indices, values, y, order, p.w0, p.w, p.V, p.group, np.zeros(1),
                np.full(1, 0.01), 0.0, p.adagrad, p.acc_w0, p.acc_w, p.acc_V, lr,
                old.SCHEDULE_CONSTANT, 0.0, 0.5, 0, old.TASK_REGRESSION, True, target_range, pred,
            )  # fmt: skip

        return old_pass, old.predict_csr

    def new_pass(data, order, p, lr, pred, target_range) -> int:
        indptr, indices, values, y = data
        kernel = KERNELS[("adagrad" if p.adagrad else "sgd", "squared")]
        return kernel(
            (indptr, indices, values), y, order, (p.w0, p.w, p.V), (p.acc_w0, p.acc_w, p.acc_V),
            (0.0, np.zeros(1), np.full(1, 0.01), p.group), (lr, 0.0, 0.5, 0), target_range,
            True, pred, *shared_flag(),
        )  # fmt: skip

    return new_pass, predict_csr


def sgd_pass(
    data, order, p: Params, lr: float, pred, target_range, weighted=False, fixed=False
) -> None:
    """One learning pass (regression, constant rate, clipping on); raises if it diverged."""
    run = fixed_kernel() if fixed else weighted_kernel() if weighted else kernels()[0]
    bad = run(data, order, p, lr, pred, target_range)
    if bad >= 0:
        raise RuntimeError(
            f"the kernel diverged at case {bad}: lower the benchmark's learning rate"
        )


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
    order = in_order(n_rows)
    pred = np.empty(n_rows, dtype=np.float64)
    out: list[tuple[str, float]] = []
    runs = [("sgd", False, 0.001, False, False), ("adagrad", True, 0.01, False, False)]
    if weighted_kernel() is not None:  # sample weights (all 1.0): "sgd+w", "adagrad+w"
        runs += [("sgd+w", False, 0.001, True, False), ("adagrad+w", True, 0.01, True, False)]
    if fixed_kernel() is not None:  # the same rows in the fixed-width layout
        runs += [("sgd fixed", False, 0.001, False, True)]
        runs += [("adagrad fixed", True, 0.01, False, True)]
    for name, adagrad, lr, weighted, fixed in runs:
        p = Params(n_features, k, adagrad)
        target_range = np.array([np.inf, -np.inf])

        def run(p=p, lr=lr, tr=target_range, weighted=weighted, fixed=fixed) -> None:
            sgd_pass(data, order, p, lr, pred, tr, weighted, fixed)

        out.append((name, best_seconds_per_pass(run, seconds, repeats)))
    p = Params(n_features, k, False)
    idx = data[1].reshape(n_rows, nnz)

    def run_bare(p=p) -> None:
        bare_fixed_sgd(idx, data[3], p.w0, p.w, p.V, 0.001, 0.01, pred)

    out.append(("bare fixed sgd", best_seconds_per_pass(run_bare, seconds, repeats)))
    p = Params(n_features, k, False)
    indptr, indices, values, _ = data

    predict = kernels()[1]

    def run_predict() -> None:
        predict(indptr, indices, values, p.w0, p.w, p.V, n_features, pred)

    out.append(("predict", best_seconds_per_pass(run_predict, seconds, repeats)))
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel specialisation timed below."""
    data = make_data(8, 2, 16)
    order = in_order(8)
    pred = np.empty(8)
    for adagrad in (False, True):
        for weighted in (False, True) if weighted_kernel() is not None else (False,):
            p = Params(16, 4, adagrad)
            sgd_pass(data, order, p, 0.01, pred, np.array([np.inf, -np.inf]), weighted)
        if fixed_kernel() is not None:
            sgd_pass(data, order, p, 0.01, pred, np.array([np.inf, -np.inf]), fixed=True)
    p = Params(16, 4, False)
    kernels()[1](data[0], data[1], data[2], p.w0, p.w, p.V, 16, pred)
    bare_fixed_sgd(data[1].reshape(8, 2), data[3], p.w0, p.w, p.V, 0.01, 0.01, pred)


def measure(features: int, seconds: float, repeats: int) -> dict[str, float]:
    """Best seconds per pass of every (nnz, k, kernel), keyed "nnz/k/kernel"."""
    warm_up()
    out = {}
    for nnz, k in CASES:
        for name, sec in bench_case(nnz, k, features, seconds, repeats):
            out[f"{nnz}/{k}/{name}"] = sec
    return out


def measure_in_child(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """`measure` (one repeat) in a new process importing streamfm from `root`."""
    cmd = [sys.executable, __file__, "--child", "--features", str(args.features)]
    cmd += ["--seconds", str(args.seconds)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_by_side(args: argparse.Namespace) -> list[str]:
    """Rows of the table comparing this checkout with --baseline, runs alternating."""
    best: dict[str, dict[str, float]] = {"now": {}, "baseline": {}}
    for _ in range(args.repeats):
        for who, root in (("now", ROOT), ("baseline", args.baseline)):
            for key, sec in measure_in_child(root, args).items():
                best[who][key] = min(sec, best[who].get(key, math.inf))
    rows = [
        "| nnz/row | k | kernel | rows | baseline M cases/s | now M cases/s | now / baseline |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for key, now in best["now"].items():
        nnz, k, name = key.split("/")
        n_rows = NNZ_PER_CHUNK // int(nnz)
        # A kernel the baseline lacks (weighted) is compared with the baseline's unweighted one.
        old = best["baseline"].get(key, best["baseline"].get(key.removesuffix("+w")))
        if old is None:  # a kernel the baseline has no counterpart of (fixed-width rows)
            continue
        line = (
            f"| {nnz} | {k} | {name} | {n_rows:,} | {n_rows / old / 1e6:.1f} | "
            f"{n_rows / now / 1e6:.1f} | {old / now:.3f} |"
        )
        rows.append(line)
        print(line, flush=True)
    return rows


def layout_runs(nnz: int, k: int, features: int) -> dict[str, Callable[[], None]]:
    """One pass of sgd / adagrad through the CSR and fixed-width kernels, and of the bare loop."""
    n_rows = NNZ_PER_CHUNK // nnz
    data = make_data(n_rows, nnz, features)
    order = in_order(n_rows)
    pred = np.empty(n_rows, dtype=np.float64)
    idx = data[1].reshape(n_rows, nnz)
    runs: dict[str, Callable[[], None]] = {}
    for name, adagrad, lr, fixed in (
        ("sgd", False, 0.001, False), ("sgd fixed", False, 0.001, True),
        ("adagrad", True, 0.01, False), ("adagrad fixed", True, 0.01, True),
    ):  # fmt: skip
        p, tr = Params(features, k, adagrad), np.array([np.inf, -np.inf])
        runs[name] = lambda p=p, lr=lr, tr=tr, fixed=fixed: sgd_pass(
            data, order, p, lr, pred, tr, fixed=fixed
        )
    bare = Params(features, k, False)
    runs["bare"] = lambda p=bare: bare_fixed_sgd(idx, data[3], p.w0, p.w, p.V, 0.001, 0.01, pred)
    return runs


def fixed_width_ratios(features: int, rounds: int) -> list[str]:
    """Table of throughput ratios per (nnz, k): the fixed-width kernels against the CSR ones and
    against the bare fixed-width loop, from `rounds` interleaved rounds (one pass of each kernel
    per round, in turn; the best CPU time of each kept), so that the three are measured in the
    same conditions."""
    out = [
        "| nnz/row | k | sgd fixed / sgd CSR | adagrad fixed / adagrad CSR | "
        "sgd fixed / bare fixed loop |",
        "|---:|---:|---:|---:|---:|",
    ]
    for nnz, k in CASES:
        runs = layout_runs(nnz, k, features)
        best = dict.fromkeys(runs, math.inf)
        for _ in range(rounds):
            for name, run in runs.items():
                t = time.process_time()
                run()
                best[name] = min(best[name], time.process_time() - t)
        out.append(
            f"| {nnz} | {k} | {best['sgd'] / best['sgd fixed']:.2f} | "
            f"{best['adagrad'] / best['adagrad fixed']:.2f} | "
            f"{best['bare'] / best['sgd fixed']:.2f} |"
        )
        print(out[-1], flush=True)
    return out


def main() -> None:
    """Run every case, print the table and write the "kernels" section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=10_000, help="feature ids (default 10000)")
    ap.add_argument("--seconds", type=float, default=0.5, help="target length of one run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is kept")
    ap.add_argument(
        "--rounds", type=int, default=15, help="interleaved rounds of the fixed-width ratios"
    )
    ap.add_argument(
        "--baseline", type=Path, help="another checkout to measure side by side with this one"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.features, args.seconds, 1)))
        return
    if args.baseline is not None:
        rows = side_by_side(args)
        section, title = "kernels-baseline", "Kernels: this version next to a baseline"
        if args.features != 10_000:  # a model of another size: a section of its own
            section += f"-{args.features}"
            title += f" ({args.features:,} features)"
        how = (
            f"Each of the {args.repeats} rounds measures this checkout and the baseline "
            "(`--baseline`) in turn, each in a fresh process; the best of the rounds is kept. "
        )
    else:
        rows = [
            "| nnz/row | k | kernel | rows | s/pass | M cases/s | M nnz·k/s |",
            "|---:|---:|---|---:|---:|---:|---:|",
        ]
        measured = measure(args.features, args.seconds, args.repeats)
        for key, sec in measured.items():
            nnz, k, name = key.split("/")
            n_rows = NNZ_PER_CHUNK // int(nnz)
            line = (
                f"| {nnz} | {k} | {name} | {n_rows:,} | {sec:.4f} | {n_rows / sec / 1e6:.1f} | "
                f"{n_rows * int(nnz) * int(k) / sec / 1e6:.0f} |"
            )
            rows.append(line)
            print(line, flush=True)
        if fixed_kernel() is not None:
            rows += ["", *fixed_width_ratios(args.features, args.rounds)]
        section = "kernels"
        title = "Kernels: per-case SGD / AdaGrad and prediction throughput (one core)"
        how = f"Best of {args.repeats} runs of ~{args.seconds:g} s each, compiled beforehand; "
    body = "\n".join(
        [
            f"## {title}",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            f"Synthetic CSR rows, values 1.0, ids one-hot in `nnz` fields over {args.features:,} "
            f"features; {NNZ_PER_CHUNK:,} non-zeros per chunk. `+w`: the kernel with a weight per "
            "case (all 1.0; next to a baseline without weights, compared with its unweighted "
            "kernel). Regression with clipping, constant "
            "rate, every row in turn (`order=None`, as the training loop learns a chunk; "
            "`order = arange(n)` for versions whose kernels need an order). "
            f"{how}CPU time of the process (single-threaded kernels), so time taken by "
            "other jobs on the shared machine does not count. nnz·k/s counts the factor entries "
            "each case touches (read to predict and, when learning, updated). SGD lr 0.001, "
            "AdaGrad lr 0.01, targets N(0, 1). `fixed`: the same rows through the fixed-width "
            "kernels (`FIXED_KERNELS`: an (n, nnz) id matrix, x = 1.0 folded away; bit-identical "
            "to the CSR kernels); `bare fixed sgd`: the ceiling of that layout, the same SGD "
            "update as one bare loop with nothing else (no clipping, per-group L2, checks or "
            "schedule; `bare_fixed_sgd`). The second table gives their throughput ratios "
            f"from {args.rounds} interleaved rounds (one pass of each kernel in turn, the best "
            "CPU time of each), which are steadier than ratios of the first table's rows.",
            "",
            *rows,
        ]
    )
    write_section(section, body)


if __name__ == "__main__":
    main()
