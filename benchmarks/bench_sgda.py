"""SGDA with its defaults against our best swept AdaGrad, on ML-100K u1..u5 and the planted set.

    python benchmarks/bench_sgda.py [--data ../shared/data] [--shared ../shared] [--work .bench-data]
        [--libfm /work/libfm-build/bin/libFM]

The hidden-set protocol: nothing is chosen on a test file.

ML-100K, each fold uN (train uN.base, test uN.test), both learners with examples/ml100k-mf.yaml's
shape (user and movie ids, k 32, init_std 0.01, 25 epochs, shuffle_buffer 100,000):

- **AdaGrad, swept**: uN.base split at random (seed 0) into 90% train / 10% validation; a grid
  of learning_rate {0.02, 0.04, 0.08} x reg (reg_linear = reg_factors) {0.03, 0.1, 0.3} trained
  on the 90% and scored on the 10% (last epoch); the best is trained on all of uN.base, scored on
  uN.test.
- **SGDA, defaults**: method sgda and nothing else (learning_rate, regularisation start, sgda.*
  at their defaults) trained once on uN.base (it holds out its own tenth), scored on uN.test.
- libFM's sgda for reference, at the same settings (its learn_rate 0.005 = our 0.01: its steps
  are twice ours; -init_stdev 0.01, -dim 1,1,32, 25 iterations, -meta user / movie groups), its
  validation file a random tenth of uN.base (seed 0), trained on the rest.

Planted (900k / 100k): AdaGrad as benchmarks/specs/planted_adagrad.yaml (its lr 0.15 / reg
0.01 chosen on a 90/10 split of the training file by bench_train.py --search) against SGDA with
its defaults (k 8, init_std 0.1, 10 epochs as that spec). Test RMSE of the last epoch's model.

Writes the `sgda` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from _planted import ensure_planted, planted_arguments
from _report import command_line, machine, write_section
from _specs import DATA_PREFIX, ROOT, data_argument

from streamfm.spec import load_spec, parse_spec
from streamfm.training.loop import train

FOLDS = (1, 2, 3, 4, 5)
GRID_LR = (0.02, 0.04, 0.08)
GRID_REG = (0.03, 0.1, 0.3)
MARGIN = 0.005  # target: SGDA within 0.005 RMSE of the swept AdaGrad (5-fold mean)
SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("rating", pa.float32()),
        ("timestamp", pa.int64()),
    ]
)


def read_fold(path: Path) -> pa.Table:
    opts = pacsv.ReadOptions(column_names=["user", "item", "rating", "timestamp"])
    t = pacsv.read_csv(path, read_options=opts, parse_options=pacsv.ParseOptions(delimiter="\t"))
    return t.cast(SCHEMA)


def ml_spec(train_path: Path, test_path: Path, out: Path, learner: dict) -> dict:
    return {
        "source": {"path": str(train_path)},
        "target": "rating",
        "features": [
            {"type": "categorical", "columns": ["user"]},
            {"type": "categorical", "columns": ["item"]},
        ],
        "model": {"k": 32, "init_std": 0.01, "seed": 0},
        "learner": {"epochs": 25, "shuffle_buffer": 100_000, **learner},
        "validation": {"source": {"path": str(test_path)}, "restore_best": False},
        "checkpoint": {"enabled": False},
        "output": {"dir": str(out)},
    }


def last_rmse(spec: dict) -> float:
    return float(train(parse_spec(spec)).history[-1]["holdout_rmse"])


def libfm_lines(t: pa.Table) -> list[str]:
    u = np.asarray(t["user"].to_numpy(zero_copy_only=False), dtype=np.int64) - 1
    i = np.asarray(t["item"].to_numpy(zero_copy_only=False), dtype=np.int64) - 1 + 943
    r = t["rating"].to_numpy().astype(np.int64)
    return [f"{a} {b}:1 {c}:1" for a, b, c in zip(r, u, i, strict=True)]


def run_libfm_sgda(libfm: Path, base: pa.Table, test: pa.Table, tmp: Path) -> float:
    perm = np.random.default_rng(0).permutation(base.num_rows)
    cut = int(0.9 * base.num_rows)
    files = {
        "train": base.take(np.sort(perm[:cut])),
        "valid": base.take(np.sort(perm[cut:])),
        "test": test,
    }
    for name, t in files.items():
        (tmp / f"{name}.libfm").write_text("\n".join(libfm_lines(t)) + "\n")
    (tmp / "meta.txt").write_text("\n".join(["0"] * 943 + ["1"] * 1682) + "\n")
    rlog = tmp / "sgda.rlog"
    cmd = [str(libfm), "-task", "r", "-method", "sgda", "-learn_rate", "0.005"]
    cmd += ["-init_stdev", "0.01", "-dim", "1,1,32", "-iter", "25", "-meta", str(tmp / "meta.txt")]
    for flag, name in (("-train", "train"), ("-validation", "valid"), ("-test", "test")):
        cmd += [flag, str(tmp / f"{name}.libfm")]
    subprocess.run([*cmd, "-rlog", str(rlog)], check=True, stdout=subprocess.DEVNULL, cwd=tmp)
    with open(rlog) as f:
        return float(list(csv.DictReader(f, delimiter="\t"))[-1]["rmse"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(ap)
    planted_arguments(ap)
    ap.add_argument("--libfm", type=Path, default=Path("/work/libfm-build/bin/libFM"))
    args = ap.parse_args()
    data = (args.data or ROOT / DATA_PREFIX).resolve()
    if not (data / "ml-100k").is_dir():
        sys.exit(f"{data}/ml-100k: no such folder (pass --data pointing at the datasets)")
    folds = []
    with tempfile.TemporaryDirectory(prefix="streamfm-sgda-") as tmp_name:
        tmp = Path(tmp_name)
        for f in FOLDS:
            base = read_fold(data / "ml-100k" / f"u{f}.base")
            test = read_fold(data / "ml-100k" / f"u{f}.test")
            perm = np.random.default_rng(0).permutation(base.num_rows)
            cut = int(0.9 * base.num_rows)
            paths = {n: tmp / f"u{f}-{n}.parquet" for n in ("base", "test", "fit", "val")}
            pq.write_table(base, paths["base"])
            pq.write_table(test, paths["test"])
            pq.write_table(base.take(np.sort(perm[:cut])), paths["fit"])
            pq.write_table(base.take(np.sort(perm[cut:])), paths["val"])
            sweep = {}
            for lr in GRID_LR:
                for reg in GRID_REG:
                    learner = {"method": "adagrad", "learning_rate": lr}
                    learner |= {"reg_linear": reg, "reg_factors": reg}
                    spec = ml_spec(paths["fit"], paths["val"], tmp / "run", learner)
                    sweep[(lr, reg)] = last_rmse(spec)
            lr, reg = min(sweep, key=sweep.get)
            learner = {"method": "adagrad", "learning_rate": lr, "reg_linear": reg}
            adagrad = last_rmse(ml_spec(paths["base"], paths["test"], tmp / "run", learner | {
                "reg_factors": reg}))  # fmt: skip
            sgda = last_rmse(ml_spec(paths["base"], paths["test"], tmp / "run", {"method": "sgda"}))
            lib_dir = tmp / f"libfm-{f}"
            lib_dir.mkdir()
            libfm = run_libfm_sgda(args.libfm, base, test, lib_dir) if args.libfm.exists() else None
            folds.append(
                {
                    "fold": f,
                    "lr": lr,
                    "reg": reg,
                    "val": sweep[(lr, reg)],
                    "adagrad": adagrad,
                    "sgda": sgda,
                    "libfm": libfm,
                }  # fmt: skip
            )
            print(folds[-1], flush=True)
    planted = ensure_planted(args.shared, args.work)
    sets = [
        f"source.path={planted / 'train.parquet'}",
        f"validation.source.path={planted / 'test.parquet'}",
        f"output.dir={args.work.resolve() / 'runs' / 'sgda-planted'}",
        "checkpoint.enabled=false",
    ]
    spec_file = ROOT / "benchmarks" / "specs" / "planted_adagrad.yaml"
    planted_adagrad = train(load_spec(spec_file, sets)).history[-1]["holdout_rmse"]
    sgda_sets = [*sets, "learner.optimizer=null", "learner.method=sgda"]
    sgda_sets += ["learner.learning_rate=0.01", "learner.reg_factors=0.01"]  # the defaults
    planted_sgda = train(load_spec(spec_file, sgda_sets)).history[-1]["holdout_rmse"]

    mean = {k: statistics.fmean(r[k] for r in folds) for k in ("adagrad", "sgda")}
    lib = [r["libfm"] for r in folds if r["libfm"] is not None]
    lines = [
        "## SGDA with its defaults against swept AdaGrad",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "ML-100K, folds u1..u5, user and movie ids, k 32, init_std 0.01, 25 epochs, "
        "shuffle_buffer 100,000 (examples/ml100k-mf.yaml's shape). AdaGrad: learning_rate "
        f"{{{', '.join(map(str, GRID_LR))}}} x reg_linear = reg_factors "
        f"{{{', '.join(map(str, GRID_REG))}}} on a random 90/10 split of uN.base (seed 0), the "
        "best (last-epoch validation RMSE) retrained on uN.base. SGDA: `method: sgda` and its "
        "defaults (learning_rate 0.01, λ starting at reg_linear 0 / reg_factors 0.01, one row in "
        "10 held out, sgda.steps sgd), one run on uN.base. libFM 1.4.4's sgda at the same "
        "settings (its learn_rate 0.005 = our 0.01), a random tenth of uN.base as its "
        "-validation file. Test RMSE on uN.test of the last epoch's model; nothing is chosen on "
        "a test file.",
        "",
        "| fold | AdaGrad chosen (lr, reg) | its validation RMSE | AdaGrad test RMSE "
        "| SGDA (defaults) test RMSE | libFM sgda test RMSE |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in folds:
        libfm = f"{r['libfm']:.4f}" if r["libfm"] is not None else ""
        lines.append(
            f"| u{r['fold']} | {r['lr']}, {r['reg']} | {r['val']:.4f} | {r['adagrad']:.4f} | "
            f"{r['sgda']:.4f} | {libfm} |"
        )
    lib_mean = f"{statistics.fmean(lib):.4f}" if lib else ""
    lines.append(
        f"| **mean** | | | **{mean['adagrad']:.4f}** | **{mean['sgda']:.4f}** | {lib_mean} |"
    )
    gap = mean["sgda"] - mean["adagrad"]
    ok = gap <= MARGIN
    lines += [
        "",
        f"Planted (900,000 / 100,000 rows, k 8, 10 epochs): AdaGrad (planted_adagrad.yaml, "
        f"swept on a training split) {planted_adagrad:.4f}; SGDA with its defaults "
        f"{planted_sgda:.4f}.",
        "",
        f"Target: SGDA with its defaults within {MARGIN} RMSE of the swept AdaGrad on u1..u5 "
        f"(mean): {mean['sgda']:.4f} vs {mean['adagrad']:.4f}, gap {gap:+.4f}, "
        f"{'met' if ok else 'NOT met'}.",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    write_section("sgda", text)


if __name__ == "__main__":
    main()
