"""Top-N ranking on MovieLens 100K as implicit feedback: streamfm next to popularity, the
`implicit` package's BPR and LightFM's BPR / WARP, in the same run.

    python benchmarks/bench_ranking.py [--data ../shared/data] [--seed 0] [--quick]

Protocol (`_ranking_eval.py`): ratings >= 4 are positives; each user's last 20% of positives by
time (round half up) are the test set. Every method is scored on all catalogue items (items with
a training positive) minus the user's training positives: recall@10, NDCG@10, AUC, averaged over
users with test positives (test positives of items without a training positive are dropped and
counted). Hyper-parameters are chosen by NDCG@10 on a validation split carved the same way from
the training positives (each user's last 20% of them); the chosen setting is then refitted on
all training positives and scored once on the test set. The test set is used for nothing else.

One `--seed` drives every method (its random_state / model.seed). Baselines run single-threaded.
The baselines are the `bench` extra (`pip install -e ".[bench]"`); a baseline that is not
installed is reported as such. streamfm's rows (MF-BPR; FM with genres and a `sequence`
builder) train through the spec path (`task: ranking`): `streamfm_runs` below; they are
reported as not run while streamfm's spec has no `task: ranking`.

Writes the table to the "ranking-ml100k" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _ranking_eval import csr_of, leave_last_fraction, load_ml100k, rank_metrics
from _report import command_line, machine, write_section

K = 10


@dataclass
class Split:
    """Training positives and evaluation positives over dense user / item indices (the
    catalogue = items with a training positive; users = every user with a training positive)."""

    users: np.ndarray  # raw user id of each user index
    items: np.ndarray  # raw item id of each item index
    train_u: np.ndarray
    train_i: np.ndarray
    train_t: np.ndarray
    eval_u: np.ndarray
    eval_i: np.ndarray
    dropped: int  # evaluation positives of items (or users) without a training positive

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def train_csr(self) -> tuple[np.ndarray, np.ndarray]:
        return csr_of(self.train_u, self.train_i, self.n_users)

    def eval_csr(self) -> tuple[np.ndarray, np.ndarray]:
        return csr_of(self.eval_u, self.eval_i, self.n_users)

    def score(self, scores: np.ndarray) -> dict[str, float]:
        return rank_metrics(scores, self.train_csr(), self.eval_csr(), k=K)


def make_split(user, item, t, held: np.ndarray) -> Split:
    users = np.unique(user[~held])
    items = np.unique(item[~held])
    ui, ii = np.searchsorted(users, user), np.searchsorted(items, item)
    known = (ui < len(users)) & (ii < len(items))
    known &= users[np.minimum(ui, len(users) - 1)] == user
    known &= items[np.minimum(ii, len(items) - 1)] == item
    ev = held & known
    return Split(
        users,
        items,
        ui[~held],
        ii[~held],
        t[~held],
        ui[ev],
        ii[ev],
        int((held & ~known).sum()),
    )


# --- methods: fit on split's training positives, return scores (n_users, n_items)


def popularity(split: Split, params: dict, seed: int) -> np.ndarray:
    counts = np.bincount(split.train_i, minlength=split.n_items).astype(float)
    return np.broadcast_to(counts, (split.n_users, split.n_items))


def implicit_bpr(split: Split, params: dict, seed: int) -> np.ndarray:
    import scipy.sparse as sp
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    m = sp.csr_matrix(
        (np.ones(len(split.train_u), np.float32), (split.train_u, split.train_i)),
        shape=(split.n_users, split.n_items),
    )
    m.data[:] = 1.0  # repeated pairs count once
    model = BayesianPersonalizedRanking(**params, random_state=seed, num_threads=1)
    model.fit(m, show_progress=False)
    return np.asarray(model.user_factors) @ np.asarray(model.item_factors).T


def lightfm_epochs(loss: str) -> Callable:
    """LightFM with `loss`, scored after every epoch in `params['epochs']` (a list: the
    validation search scores each of them from one run; a refit uses the one chosen)."""

    def run(split: Split, params: dict, seed: int) -> dict[int, np.ndarray]:
        import scipy.sparse as sp
        from lightfm import LightFM

        params = dict(params)
        epochs = sorted(params.pop("epochs"))
        m = sp.coo_matrix(
            (np.ones(len(split.train_u), np.float32), (split.train_u, split.train_i)),
            shape=(split.n_users, split.n_items),
        ).tocsr()
        m.data[:] = 1.0
        model = LightFM(loss=loss, random_state=seed, **params)
        out, done = {}, 0
        for e in epochs:
            model.fit_partial(m.tocoo(), epochs=e - done, num_threads=1)
            done = e
            ub, U = model.get_user_representations()
            ib, V = model.get_item_representations()
            out[e] = ub[:, None] + ib[None, :] + U @ V.T
        return out

    return run


# --- streamfm (the spec path; needs task: ranking)

HERE = Path(__file__).resolve().parent
STREAMFM = {"checkout": HERE.parent, "data": Path("../shared/data"), "work": None}


def _child_env() -> dict[str, str]:
    """PYTHONPATH = the streamfm checkout with task: ranking (--streamfm); numba's cache and
    bytecode kept out of that checkout."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(STREAMFM["checkout"]), str(STREAMFM["work"])])
    env["NUMBA_CACHE_DIR"] = str(Path(STREAMFM["work"]) / "numba-cache")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def streamfm_ranking_available() -> str | None:
    """None when the streamfm of --streamfm accepts `task: ranking`, else why not."""
    import subprocess
    import sys

    probe = (
        "from streamfm.spec import parse_spec; parse_spec({'source': {'path': 'x.parquet'}, "
        "'task': 'ranking', 'features': [{'type': 'mf'}], 'ranking': {'item': 'item'}}, "
        "origin='probe')"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe],
        env=_child_env(),
        capture_output=True,
        text=True,
        cwd=STREAMFM["work"],  # not this checkout: its streamfm/ would come first
    )
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["?"])[-1][:100]
        return f"not run: {STREAMFM['checkout']} has no `task: ranking` ({last})"
    return None


def _write_inputs(split: Split, work: Path) -> tuple[Path, Path]:
    """The split's training positives in time order and u.item's genres, as Parquet in `work`
    (a temporary folder, never the repository)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.lexsort((split.items[split.train_i], split.users[split.train_u], split.train_t))
    train = work / f"train-{len(split.train_u)}.parquet"
    pq.write_table(
        pa.table(
            {
                "user": split.users[split.train_u[order]].astype(str),
                "item": split.items[split.train_i[order]].astype(str),
                "timestamp": split.train_t[order],
            }
        ),
        train,
    )
    items = work / "items.parquet"
    if not items.exists():
        genres = "unknown action adventure animation children comedy crime documentary drama "
        genres += "fantasy film_noir horror musical mystery romance sci_fi thriller war western"
        names = genres.split()
        ids, lists = [], []
        text = (STREAMFM["data"] / "ml-100k" / "u.item").read_bytes().decode("latin-1")
        for line in text.splitlines():
            f = line.split("|")
            if len(f) != 24:
                continue
            ids.append(f[0])
            lists.append([n for n, flag in zip(names, f[5:], strict=True) if flag == "1"])
        pq.write_table(pa.table({"item": ids, "genres": lists}), items)
    return train, items


def streamfm_runs(split: Split, params: dict, seed: int, *, genres: bool) -> np.ndarray:
    """streamfm's rows (MF-BPR: genres=False; FM with genres + a `sequence` of the user's last
    items: genres=True), trained through the spec path in a child process
    (`_streamfm_ranking.py`) with the --streamfm checkout; all-items scores in the split's
    user / item order (-inf for catalogue items the model never saw). The `sequence` builder
    enters as a plugin copied into the work dir when that checkout has none."""
    import json
    import shutil
    import subprocess
    import sys

    work = Path(STREAMFM["work"])
    train, items = _write_inputs(split, work)
    has_sequence = (Path(STREAMFM["checkout"]) / "streamfm/features/sequence.py").exists()
    if not has_sequence:
        shutil.copy(HERE.parent / "streamfm/features/sequence.py", work / "seqplugin.py")
    job_dir = work / f"job-{len(list(work.glob('job-*')))}"
    job_dir.mkdir()
    job = {
        "work": str(job_dir),
        "train": str(train),
        "items": str(items),
        "users": split.users.astype(str).tolist(),
        "catalogue": split.items.astype(str).tolist(),
        "seed": seed,
        "params": params,
        "genres": genres,
        "sequence_type": "sequence" if has_sequence else "seqplugin:SequenceBuilder",
    }
    (job_dir / "job.json").write_text(json.dumps(job))
    r = subprocess.run(
        [sys.executable, str(HERE / "_streamfm_ranking.py"), str(job_dir / "job.json")],
        env=_child_env(),
        capture_output=True,
        text=True,
        cwd=work,
    )
    if r.returncode:
        raise SystemExit(f"streamfm run failed ({job_dir}):\n{r.stderr[-3000:]}")
    return np.load(job_dir / "scores.npy")


# --- search and report

GRIDS: dict[str, list[dict[str, Any]]] = {
    "popularity": [{}],
    # 24 settings each, as many as LightFM's grid: rate, passes, L2 and negatives per positive
    "streamfm MF-BPR": [
        {"k": 64, "lr": lr, "epochs": e, "reg": reg, "negatives": n}
        for lr, e, reg, n in itertools.product([0.05, 0.1], [10, 30], [1e-4, 1e-3, 1e-2], [1, 4])
    ],
    # adaptive negatives: each the highest scored of 5 uniform draws (negatives.candidates)
    "streamfm MF-BPR, adaptive negatives": [
        {"k": 64, "lr": lr, "epochs": e, "reg": reg, "negatives": 1, "candidates": 5}
        for lr, e, reg in itertools.product([0.05, 0.1], [10, 30], [1e-3, 1e-2])
    ],
    "streamfm FM + genres + sequence": [
        {"k": 64, "lr": lr, "epochs": e, "reg": reg, "negatives": n, "length": 5}
        for lr, e, reg, n in itertools.product([0.05, 0.1], [10, 30], [1e-4, 1e-3, 1e-2], [1, 4])
    ],
    "implicit BPR": [
        {"factors": f, "learning_rate": lr, "regularization": reg, "iterations": it}
        for f, lr, reg, it in itertools.product([32, 64], [0.01, 0.05], [0.01, 0.001], [100, 300])
    ],
    "LightFM BPR": [
        {
            "no_components": f,
            "learning_rate": 0.05,
            "item_alpha": a,
            "user_alpha": a,
            "epochs": [5, 10, 20, 40],
        }
        for f, a in itertools.product([32, 64], [0.0, 1e-5, 1e-4])
    ],  # fmt: skip
}
GRIDS["LightFM WARP"] = GRIDS["LightFM BPR"]
QUICK = {
    "streamfm MF-BPR": GRIDS["streamfm MF-BPR"][:1],
    "streamfm MF-BPR, adaptive negatives": GRIDS["streamfm MF-BPR, adaptive negatives"][:1],
    "streamfm FM + genres + sequence": GRIDS["streamfm FM + genres + sequence"][:1],
    "implicit BPR": GRIDS["implicit BPR"][:2],
    "LightFM BPR": GRIDS["LightFM BPR"][:1],
    "LightFM WARP": GRIDS["LightFM BPR"][:1],
}
METHODS: dict[str, tuple[Callable, str | None]] = {
    "popularity": (popularity, None),
    "implicit BPR": (implicit_bpr, "implicit"),
    "LightFM BPR": (lightfm_epochs("bpr"), "lightfm"),
    "LightFM WARP": (lightfm_epochs("warp"), "lightfm"),
}


def missing_package(name: str | None) -> str | None:
    if name is None:
        return None
    import importlib.util

    if importlib.util.find_spec(name) is None:
        return f'not run: `{name}` is not installed (`pip install -e ".[bench]"`)'
    return None


def search(fn: Callable, grid: list[dict], valid: Split, seed: int) -> tuple[dict, float, int]:
    """The grid point with the best validation NDCG@10 (lists of epochs expand into one point
    per epoch count), its NDCG and the number of settings tried."""
    best: tuple[float, dict] = (-1.0, {})
    tried = 0
    for params in grid:
        out = fn(valid, params, seed)
        runs = out.items() if isinstance(out, dict) else [(None, out)]
        for epochs, scores in runs:
            ndcg = valid.score(scores)[f"ndcg@{K}"]
            tried += 1
            point = dict(params) if epochs is None else {**params, "epochs": [epochs]}
            if ndcg > best[0]:
                best = (ndcg, point)
    return best[1], best[0], tried


def _revision(checkout: Path) -> str:
    """`git describe`-like name of a checkout's commit (+ "with uncommitted changes")."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(checkout), *a], capture_output=True, text=True)
        return r.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + (" with uncommitted changes" if git("status", "--porcelain", "-uno") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a small grid (a smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument(
        "--streamfm",
        type=Path,
        default=HERE.parent,
        help="streamfm checkout with task: ranking to train streamfm's rows (default: this one)",
    )
    ap.add_argument("--only", nargs="+", help="run only these methods (names as in the table)")
    args = ap.parse_args()
    import tempfile

    STREAMFM.update(checkout=args.streamfm.resolve(), data=args.data)
    STREAMFM["work"] = Path(tempfile.mkdtemp(prefix="bench-ranking-"))

    d = load_ml100k(args.data)
    pos = d["rating"] >= 4
    user, item, t = d["user"][pos], d["item"][pos], d["time"][pos]
    held = leave_last_fraction(user, item, t, 0.2)
    test = make_split(user, item, t, held)
    inner = leave_last_fraction(user[~held], item[~held], t[~held], 0.2)
    valid = make_split(user[~held], item[~held], t[~held], inner)
    print(
        f"positives {pos.sum():,}: train {len(test.train_u):,}, test {len(test.eval_u):,} "
        f"({test.dropped} dropped); validation split: fit {len(valid.train_u):,}, "
        f"valid {len(valid.eval_u):,}; {test.n_users} users, {test.n_items} items"
    )

    rows = []
    methods = dict(METHODS)
    reason = streamfm_ranking_available()
    for name, genres in (
        ("streamfm MF-BPR", False),
        ("streamfm MF-BPR, adaptive negatives", False),
        ("streamfm FM + genres + sequence", True),
    ):
        methods[name] = (
            lambda s, p, seed, genres=genres: streamfm_runs(s, p, seed, genres=genres),
            None,
        )
        GRIDS.setdefault(name, [{}])
    for name, (fn, package) in methods.items():
        if args.only and name not in args.only:
            continue
        why = reason if name.startswith("streamfm") else missing_package(package)
        if why:
            print(f"{name}: {why}")
            rows.append((name, why, None, None, None))
            continue
        grid = QUICK.get(name, GRIDS[name]) if args.quick else GRIDS[name]
        t0 = time.perf_counter()
        params, valid_ndcg, tried = search(fn, grid, valid, args.seed)
        search_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = fn(test, params, args.seed)
        fit_s = time.perf_counter() - t0
        scores = next(iter(out.values())) if isinstance(out, dict) else out
        m = test.score(scores)
        shown = ", ".join(f"{k}={v[0] if isinstance(v, list) else v}" for k, v in params.items())
        print(
            f"{name:32s} recall@{K} {m[f'recall@{K}']:.4f}  NDCG@{K} {m[f'ndcg@{K}']:.4f}  "
            f"AUC {m['auc']:.4f}  (valid NDCG {valid_ndcg:.4f}, {tried} settings, "
            f"search {search_s:.0f} s, fit {fit_s:.1f} s) {shown}"
        )
        rows.append((name, shown or "-", m, valid_ndcg, (tried, search_s, fit_s)))

    lines = [
        "## Ranking on MovieLens 100K (implicit feedback)",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}.",
        "",
        f"Ratings >= 4 are positives ({pos.sum():,}); each user's last 20% by time are the test "
        f"set ({len(test.eval_u):,} positives of {len(np.unique(test.eval_u))} users; "
        f"{test.dropped} of items without a training positive dropped). Scored over all "
        f"{test.n_items:,} catalogue items minus the user's training positives. Hyper-parameters "
        "chosen by NDCG@10 on a validation split (each user's last 20% of the training "
        f"positives), then refitted on all training positives; seed {args.seed}"
        + (", quick grid" if args.quick else "")
        + ".",
        "",
        f"streamfm rows trained with the checkout {STREAMFM['checkout']} at "
        f"{_revision(STREAMFM['checkout'])}. LightFM 1.17 (an sdist whose setup.py fails under "
        "PEP 517 builds) was built with `pip wheel --no-use-pep517` of pip < 23.1.",
        "",
        "| method | recall@10 | NDCG@10 | AUC | valid NDCG@10 | settings tried | "
        "fit (s) | chosen |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, shown, m, v, timing in rows:
        if m is None:
            lines.append(f"| {name} | | | | | | | {shown} |")
        else:
            lines.append(
                f"| {name} | {m[f'recall@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | {m['auc']:.4f} | "
                f"{v:.4f} | {timing[0]} | {timing[2]:.1f} | {shown} |"
            )
    if not args.no_write:
        write_section("ranking-ml100k", "\n".join(lines))


if __name__ == "__main__":
    main()
