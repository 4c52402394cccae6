"""ALS and MCMC kernels (streamfm.learners.coordinate) side by side with libFM on the planted data.

    python benchmarks/bench_coordinate.py --data-dir .bench-data/planted \
        [--libfm /work/libfm-build/bin/libFM] [--repeats 3]

The data: ``python ../shared/bench/planted.py .bench-data/planted`` (900k / 100k ratings, user
and item one-hot: the ids of the libFM files, user -> feature `user`, item -> 6000 + `item`).
libFM: built from its source outside this repository (``make`` in its root), run on
train/test.libfm with PEERS.md's settings (k 8, init_stdev 0.1; ALS: -regular '0,0,0.01', 10
iterations; MCMC: 50 iterations, no -regular) and ``-seed r`` in repeat r = 1, 2, ...

Each repeat runs, in turn: libFM ALS, ours ALS, libFM MCMC, ours MCMC (seed r each), so both
tools see the same machine load. Reported (medians over repeats; RMSE range over repeats):

- libFM "wall s": the whole process (reading the text files, training, predicting);
  "s/iter": the median of libFM's own per-iteration time (``time_learn`` of -rlog: the sweep,
  re-predicting train and test, evaluating).
- ours "wall s": the iterations only (data already in memory as CSR + CSC; numba compiled
  beforehand); "s/iter": the median of one ``coordinate_iteration`` call (residuals from
  scratch, hyper-parameters, all sweeps) plus scoring the test rows.
- test RMSE: ALS of the final parameters (libFM: rlog's rmse_mcmc_this, the -out file; its
  printed "Test=" is an average over iterations); MCMC of the average of the (clipped)
  predictions of all samples, as libFM (burn-in 0). Predictions clipped to [1, 5] (training range).
  Extra rows: MCMC averaging the samples of iterations >= 5 (libFM: rlog's rmse_mcmc_all_but5
  of the same runs; ours: one more run per repeat).
- libFM's -seed goes to srand() (glibc: seeds 0 and 1 are the same sequence), hence r >= 1.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from streamfm.learners.coordinate import design_arrays, fit_coordinate

ROOT = Path(__file__).resolve().parent.parent
N_USERS, N_FEATURES = 6000, 10_000
K, INIT_STD = 8, 0.1
ALS_ITER, MCMC_ITER = 10, 50
ALS_REG = (0.0, 0.0, 0.01)
FLOOR = 0.6264  # planted model's own test RMSE (PEERS.md)


def load(path: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    t = pq.read_table(path)
    u = t["user"].to_numpy().astype(np.int32)
    i = t["item"].to_numpy().astype(np.int32) + N_USERS
    n = len(u)
    X = sp.csr_matrix(
        (
            np.ones(2 * n, dtype=np.float32),
            np.stack([u, i], axis=1).ravel(),
            np.arange(0, 2 * n + 1, 2, dtype=np.int64),
        ),
        shape=(n, N_FEATURES),
    )
    return X, t["rating"].to_numpy().astype(np.float64)


def run_libfm(libfm: Path, data: Path, method: str, seed: int, tmp: Path) -> dict:
    rlog = tmp / f"libfm_{method}.rlog"
    cmd = [str(libfm), "-task", "r", "-train", str(data / "train.libfm")]
    cmd += ["-test", str(data / "test.libfm"), "-dim", f"1,1,{K}", "-init_stdev", str(INIT_STD)]
    cmd += ["-method", method, "-seed", str(seed), "-rlog", str(rlog)]
    if method == "als":
        cmd += ["-regular", ",".join(map(str, ALS_REG)), "-iter", str(ALS_ITER)]
    else:
        cmd += ["-iter", str(MCMC_ITER)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(rlog) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    column = "rmse_mcmc_this" if method == "als" else "rmse_mcmc_all"
    return {
        "wall": wall,
        "per_iter": statistics.median(float(r["time_learn"]) for r in rows),
        "rmse": float(rows[-1][column]),
        "rmse_burn_in_5": float(rows[-1]["rmse_mcmc_all_but5"]),
    }


def run_ours(X, y, Xt, yt, method: str, seed: int, burn_in: int = 0) -> dict:
    kw = dict(method=method, k=K, init_std=INIT_STD, seed=seed, X_test=Xt, y_test=yt)
    if method == "als":
        kw |= dict(n_iter=ALS_ITER, reg=ALS_REG)
    else:
        kw |= dict(n_iter=MCMC_ITER, burn_in=burn_in)
    r = fit_coordinate(X, y, metrics=False, **kw)
    per = [h["seconds"] + h["seconds_predict"] for h in r.history]
    rmse = float(np.sqrt(np.mean((r.test_pred - yt) ** 2)))
    return {"wall": sum(per), "per_iter": statistics.median(per), "rmse": rmse}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".bench-data" / "planted")
    ap.add_argument("--libfm", type=Path, default=Path("/work/libfm-build/bin/libFM"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    for name in ("train.parquet", "test.parquet", "train.libfm", "test.libfm"):
        if not (a.data_dir / name).exists():
            raise SystemExit(f"{a.data_dir / name} missing: run shared/bench/planted.py first")
    if not a.libfm.exists():
        raise SystemExit(f"{a.libfm} not found: build libFM (make in its source root)")

    X, y = load(a.data_dir / "train.parquet")
    Xt, yt = load(a.data_dir / "test.parquet")
    t0 = time.perf_counter()
    design_arrays(X)
    setup = time.perf_counter() - t0
    # Compile (or load from numba's cache) every kernel before timing anything.
    for method in ("als", "mcmc"):
        fit_coordinate(X[:1000], y[:1000], method=method, k=K, n_iter=2, X_test=Xt[:10])

    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for method in ("als", "mcmc"):
                results.setdefault(("libFM 1.4.4", method), []).append(
                    run_libfm(a.libfm, a.data_dir, method, r + 1, Path(tmp))
                )
                results.setdefault(("streamfm", method), []).append(
                    run_ours(X, y, Xt, yt, method, r + 1)
                )
                print(
                    f"repeat {r} {method}: libFM {results[('libFM 1.4.4', method)][-1]}"
                    f"  ours {results[('streamfm', method)][-1]}",
                    flush=True,
                )
            results.setdefault(("streamfm", "mcmc5"), []).append(
                run_ours(X, y, Xt, yt, "mcmc", r + 1, burn_in=5)
            )
            print(f"repeat {r} mcmc burn-in 5: ours {results[('streamfm', 'mcmc5')][-1]}")

    print()
    print(
        f"planted data: {X.shape[0]} train / {Xt.shape[0]} test rows, k={K}, init_std={INIT_STD};"
        f" medians of {a.repeats} interleaved repeats (seeds 1..{a.repeats});"
        f" noise floor {FLOOR}"
    )
    print(f"ours: CSR -> CSR + CSC set-up {setup:.2f} s (not in the times below)")
    print()
    print("| tool | method | iterations | wall s | s/iter | test RMSE (median) | RMSE range |")
    print("|---|---|---|---|---|---|---|")
    for method, n_iter in (("als", ALS_ITER), ("mcmc", MCMC_ITER)):
        for tool in ("libFM 1.4.4", "streamfm"):
            rs = results[(tool, method)]
            rm = [x["rmse"] for x in rs]
            print(
                f"| {tool} | {method.upper()} | {n_iter} "
                f"| {statistics.median(x['wall'] for x in rs):.2f} "
                f"| {statistics.median(x['per_iter'] for x in rs):.3f} "
                f"| {statistics.median(rm):.4f} | {min(rm):.4f} .. {max(rm):.4f} |"
            )
    lib5 = [x["rmse_burn_in_5"] for x in results[("libFM 1.4.4", "mcmc")]]
    ours5 = [x["rmse"] for x in results[("streamfm", "mcmc5")]]
    for tool, rm in (("libFM 1.4.4", lib5), ("streamfm", ours5)):
        print(
            f"| {tool} | MCMC, burn-in 5 | {MCMC_ITER} | | "
            f"| {statistics.median(rm):.4f} | {min(rm):.4f} .. {max(rm):.4f} |"
        )
    print()
    print(
        "libFM wall = whole process (text parsing + training + prediction); ours wall = the "
        "iterations only.\ns/iter: libFM's time_learn (rlog), ours coordinate_iteration + test "
        "scoring; both include re-predicting the training rows each iteration."
    )


if __name__ == "__main__":
    main()
