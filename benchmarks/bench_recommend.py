"""Contexts per second of `streamfm.recommend.top_k` over a large catalogue.

    python benchmarks/bench_recommend.py [--items 100000] [--factors 64] [--top 20 64]
                                         [--contexts 2000] [--threads 1] [--repeats 3]

Synthetic float64 vectors (N(0, 1/sqrt(factors))): per context a bias and `factors` values, per
item a bias and `factors` values; each context excludes 50 random items. Each figure is the best
of `--repeats` runs over `--contexts` contexts (after a compiling run). The numpy row is the
obvious alternative for comparison: scores of a block of contexts against all items at once
(`C @ Q.T`, an (n_ctx_block, n_items) matrix), exclusions set to -inf, `argpartition` + sort.
BLAS threads are set by `--threads` (OPENBLAS/MKL/OMP_NUM_THREADS, before numpy is imported).
Writes the table to the "recommend" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--top", type=int, nargs="+", default=[20, 64])
    ap.add_argument("--contexts", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only")
    return ap.parse_args()


def main() -> None:
    args = parse()
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _report import command_line, machine, peak_rss_mb, write_section

    from streamfm.recommend import CONTEXT_BLOCK, ITEM_BLOCK, top_k

    rng = np.random.default_rng(args.seed)
    n, m, f = args.contexts, args.items, args.factors
    scale = 1.0 / np.sqrt(f)
    cb, ib = rng.normal(0, 0.1, n), rng.normal(0, 0.1, m)
    C, Q = rng.normal(0, scale, (n, f)), rng.normal(0, scale, (m, f))
    ex = rng.integers(0, m, (n, 50)).astype(np.int64).ravel()
    ptr = np.arange(n + 1, dtype=np.int64) * 50

    def numpy_top_k(k: int, block: int = 256):
        out_i = np.empty((n, k), dtype=np.int64)
        for c0 in range(0, n, block):
            c1 = min(c0 + block, n)
            S = cb[c0:c1, None] + ib[None, :] + C[c0:c1] @ Q.T
            rows = np.repeat(np.arange(c1 - c0), 50)
            S[rows, ex[ptr[c0] : ptr[c1]]] = -np.inf
            part = np.argpartition(-S, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(S, part, 1), axis=1, kind="stable")
            out_i[c0:c1] = np.take_along_axis(part, order, 1)
        return out_i

    def best(fn) -> tuple[float, float]:
        fn()  # compile / warm up
        wall, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return min(wall), min(cpu)

    rows = []
    for k in args.top:
        for name, fn in (
            ("streamfm top_k (blocked, numba + BLAS)", lambda k=k: top_k(cb, C, ib, Q, k, ptr, ex)),
            ("numpy: C @ Q.T per 256 contexts + argpartition", lambda k=k: numpy_top_k(k)),
        ):
            wall, cpu = best(fn)
            rows.append((name, k, n / wall, n / cpu))
            print(f"{name:50s} top {k:3d}: {n / wall:10,.0f} contexts/s (wall), "
                  f"{n / cpu:10,.0f} /s CPU")  # fmt: skip
    # the two agree (same items, up to ties that float rounding may order differently)
    a = top_k(cb, C, ib, Q, args.top[0], ptr, ex)[0]
    b = numpy_top_k(args.top[0])
    agree = float((a == b).mean())
    print(f"agreement with the numpy ranking: {agree:.4f}; peak RSS {peak_rss_mb():.0f} MB")

    lines = [
        "## Top-k recommendation (`streamfm.recommend.top_k`)",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}; BLAS threads: {args.threads}.",
        "",
        f"{m:,} items, {f} factors, {n:,} contexts (each excluding 50 items), float64; "
        f"blocks of {CONTEXT_BLOCK} contexts × {ITEM_BLOCK} items; best of {args.repeats}. "
        f"Same top-{args.top[0]} lists as numpy for {agree:.2%} of the positions; "
        f"peak RSS {peak_rss_mb():.0f} MB.",
        "",
        "| method | top k | contexts/s (wall) | contexts/s (CPU time) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {k} | {w:,.0f} | {c:,.0f} |" for name, k, w, c in rows]
    if not args.no_write:
        write_section("recommend", "\n".join(lines))


if __name__ == "__main__":
    main()
