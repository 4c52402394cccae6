"""The planted yardstick (../shared/bench) through the Python API: FMRegressor, SGD and AdaGrad.

    python benchmarks/bench_planted.py [--shared ../shared] [--work .bench-data] [--search]

Reads train/test.parquet with pyarrow and builds CSR rows with the ids of the libFM files
(user -> feature `user`, item -> feature 6000 + `item`, value 1). Then:

- libFM's SGD settings (k 8, lr 0.01, reg 0/0/0.01, init_std 0.1, 10 passes), seed 0 timed and
  scored, plus the spread of test RMSE over init seeds 0..9 (plain SGD after 10 passes depends
  on the random initial factors);
- AdaGrad with the setting chosen on a validation split carved from the training data (its last
  10 %), never the test set; `--search` re-runs that small search and uses its winner.

Times are of `fit` alone (10 passes over the in-memory CSR, numba compiled beforehand by a tiny
fit), best of 3. PEERS.md's figures are whole-process times (reading the libFM text file,
training, predicting) and sit beside ours for scale only. Writes the "planted-api" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from _planted import ensure_planted, planted_arguments
from _report import command_line, machine, peak_rss_mb, write_section

from streamfm import FMRegressor

N_USERS = 6000
N_FEATURES = 10_000  # 6000 users + 4000 items, as in the libFM files
REPEATS = 3
SGD_SEEDS = 10

LIBFM_SGD: dict[str, Any] = dict(
    k=8, learning_rate=0.01, reg_bias=0.0, reg_linear=0.0, reg_factors=0.01, init_std=0.1, epochs=10
)
ADAGRAD_BASE: dict[str, Any] = dict(
    k=8, optimizer="adagrad", reg_bias=0.0, reg_linear=0.0, init_std=0.1, epochs=10
)
# Chosen by `--search` (fit on the first 90 % of train.parquet, RMSE on its last 10 %; the test
# set played no part): the lowest validation RMSE of SEARCH_GRID, 0.6648. A wider exploratory
# sweep on the same split (lr 0.05..0.4, reg_factors 0..0.03, adagrad_init 0.1 or 1, init_std
# 0.05 or 0.2, reg_linear 0.01) found nothing better in row order (shuffle=True at lr 0.2 gave
# 0.6647); SEARCH_GRID is the neighbourhood of its best.
ADAGRAD_CHOSEN: dict[str, Any] = dict(learning_rate=0.15, reg_factors=0.01, adagrad_init=1.0)
SEARCH_GRID: list[dict[str, Any]] = [
    dict(learning_rate=lr, reg_factors=0.01, adagrad_init=1.0) for lr in (0.05, 0.1, 0.15, 0.2, 0.3)
] + [
    dict(learning_rate=0.15, reg_factors=0.02, adagrad_init=1.0),
    dict(learning_rate=0.15, reg_factors=0.01, adagrad_init=0.1),
]

# PEERS.md (whole process: read the libFM text file + train + predict; medians of 3 runs).
PEERS: list[tuple[str, str, float, float, float]] = [
    ("libFM 1.4.4, SGD", "lr 0.01, reg 0,0,0.01, init 0.1", 1.47, 39, 0.7332),
    ("libFM, ALS", "reg 0,0,0.01, init 0.1", 4.45, 72, 0.6647),
    ("libFM, MCMC (50 passes)", "init 0.1", 16.62, 72, 0.6858),
    ("xLearn 0.44, SGD", "lr 0.01, lambda 0.01, no norm", 2.04, 103, 0.7589),
    ("xLearn, AdaGrad (its defaults)", "lr 0.2, lambda 2e-5, instance norm", 2.30, 103, 0.6691),
    ("fastFM 0.2.11, SGD", "step 0.01, l2_reg_V 0.01", 2.61, 245, 0.7474),
    ("fastFM, ALS (0.6647 clipped to 1..5)", "l2_reg_V 0.01", 4.92, 245, 0.6702),
    ("fastFM, MCMC (50 passes)", "rank 8", 19.74, 245, 0.6855),
    ("Vowpal Wabbit 9.11.9 --lrq ui8", "best of an lr sweep", 15.31, 71, 0.7305),
    ("River 0.26.1 FMRegressor", "SGD(0.01), l2_latent 0.01", 240.95, 494, 0.6753),
]


def load(path: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    """CSR design (user, 6000 + item, values 1) and float64 ratings of one planted Parquet file."""
    table = pq.read_table(path, columns=["user", "item", "rating"])
    user = table["user"].to_numpy().astype(np.int32)
    item = table["item"].to_numpy().astype(np.int32) + N_USERS
    n = len(user)
    indices = np.column_stack([user, item]).ravel()
    indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    X = sp.csr_matrix((np.ones(2 * n, np.float32), indices, indptr), shape=(n, N_FEATURES))
    return X, table["rating"].to_numpy().astype(np.float64)


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def timed_fit(
    params: dict[str, Any], X: sp.csr_matrix, y: np.ndarray
) -> tuple[FMRegressor, float, float]:
    """The model fitted with `params`, and the best wall and best CPU time of `fit` over REPEATS
    fits."""
    wall, cpu, model = float("inf"), float("inf"), None
    for _ in range(REPEATS):
        t, c = time.perf_counter(), time.process_time()
        model = FMRegressor(**params).fit(X, y)
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return model, wall, cpu


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels with a tiny fit of each optimiser."""
    X = sp.csr_matrix(np.eye(4, dtype=np.float32))
    y = np.arange(4, dtype=np.float64)
    for optimizer in ("sgd", "adagrad"):
        FMRegressor(k=8, optimizer=optimizer, epochs=1).fit(X, y).predict(X)


def search(X: sp.csr_matrix, y: np.ndarray) -> dict[str, Any]:
    """Fit SEARCH_GRID on the first 90 % of the training rows, print each validation RMSE on the
    last 10 %, and return the best configuration."""
    n_fit = int(0.9 * X.shape[0])
    Xf, yf, Xv, yv = X[:n_fit], y[:n_fit], X[n_fit:], y[n_fit:]
    print(f"AdaGrad search: fit on {n_fit:,} training rows, validate on {X.shape[0] - n_fit:,}")
    scored = []
    for cfg in SEARCH_GRID:
        m = FMRegressor(**ADAGRAD_BASE, **cfg).fit(Xf, yf)
        score = rmse(yv, m.predict(Xv))
        scored.append((score, cfg))
        print(f"  {cfg}: validation RMSE {score:.4f}", flush=True)
    best = min(scored, key=lambda s: s[0])
    print(f"  chosen: {best[1]} (validation RMSE {best[0]:.4f})")
    return best[1]


def main() -> None:
    """Run the yardstick, print the table and write the "planted-api" section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    planted_arguments(ap)
    ap.add_argument("--search", action="store_true", help="re-run the AdaGrad search")
    args = ap.parse_args()

    folder = ensure_planted(args.shared, args.work)
    t = time.perf_counter()
    Xtr, ytr = load(folder / "train.parquet")
    Xte, yte = load(folder / "test.parquet")
    read_s = time.perf_counter() - t
    warm_up()
    rss_before = peak_rss_mb()

    chosen = search(Xtr, ytr) if args.search else ADAGRAD_CHOSEN
    mean_rmse = rmse(yte, np.full_like(yte, ytr.mean()))

    sgd, sgd_s, sgd_cpu = timed_fit(LIBFM_SGD, Xtr, ytr)
    sgd_rmse = rmse(yte, sgd.predict(Xte))
    seed_rmse = [sgd_rmse] + [
        rmse(yte, FMRegressor(**LIBFM_SGD, seed=s).fit(Xtr, ytr).predict(Xte))
        for s in range(1, SGD_SEEDS)
    ]
    ada_params = {**ADAGRAD_BASE, **chosen}
    ada, ada_s, ada_cpu = timed_fit(ada_params, Xtr, ytr)
    ada_rmse = rmse(yte, ada.predict(Xte))
    rss = peak_rss_mb()

    rows = [
        "| tool, method | settings | passes | wall s | peak RSS MB | test RMSE |",
        "|---|---|---:|---:|---:|---:|",
        f"| **streamfm FMRegressor, SGD** (seed 0) | libFM's: lr 0.01, reg 0,0,0.01, init 0.1 | "
        f"10 | **{sgd_s:.2f}** ({sgd_cpu:.2f} CPU) | {rss:.0f} | **{sgd_rmse:.4f}** |",
        f"| streamfm SGD, seeds 0..{SGD_SEEDS - 1} | same | 10 | | | "
        f"{np.mean(seed_rmse):.4f} mean, {min(seed_rmse):.4f}..{max(seed_rmse):.4f} |",
        f"| **streamfm FMRegressor, AdaGrad** | lr {chosen['learning_rate']:g}, reg 0,0,"
        f"{chosen['reg_factors']:g}, adagrad_init {chosen['adagrad_init']:g}, init 0.1 | "
        f"10 | **{ada_s:.2f}** ({ada_cpu:.2f} CPU) | {rss:.0f} | **{ada_rmse:.4f}** |",
        *(
            f"| {name} (PEERS.md) | {settings} | {50 if 'MCMC' in name else 10} | {wall:.2f} | "
            f"{mem:.0f} | {score:.4f} |"
            for name, settings, wall, mem, score in PEERS
        ),
        f"| train mean | | | | | {mean_rmse:.4f} |",
    ]
    table = "\n".join(rows)
    print(table)
    seeds = ", ".join(f"{s:.4f}" for s in seed_rmse)
    body = "\n".join(
        [
            "## Planted yardstick through the Python API",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            f"Data: {folder.name}/train.parquet ({Xtr.shape[0]:,} rows) and test.parquet "
            f"({Xte.shape[0]:,} rows), read with pyarrow into CSR in {read_s:.2f} s (not in the "
            "times below); ids as in the libFM files.",
            "",
            "**Times are not like for like.** Ours: wall time of `fit` alone (10 passes over the "
            f"in-memory CSR; numba compiled beforehand), best of {REPEATS}, with the best CPU "
            "time of the process beside it (the machine is shared). PEERS.md's: the whole "
            "process (reading the libFM text file + training + predicting), medians of 3 runs. "
            "Our peak RSS is of this whole script (both data sets, every model fitted); "
            f"{rss_before:.0f} MB of it before the first fit (Python, numba, pyarrow, scipy, the "
            "data).",
            "",
            table,
            "",
            f"Plain SGD with libFM's settings after 10 passes depends on the random initial "
            f"factors: test RMSE by seed 0..{SGD_SEEDS - 1}: {seeds}. libFM's 0.7332 is one such "
            "draw (its own generator and seed).",
            "",
            "AdaGrad setting chosen on a validation split of the training data (first 90 % fit, "
            "last 10 % scored), never the test set; `--search` re-runs that search.",
        ]
    )
    write_section("planted-api", body)


if __name__ == "__main__":
    main()
