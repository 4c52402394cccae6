"""The planted yardstick through the real CLI, whole process, next to the peers of PEERS.md.

    python benchmarks/bench_train.py [--shared ../shared] [--work .bench-data] [--repeats 3]
                                     [--search]

Each case is `streamfm train SPEC -q` (specs in benchmarks/specs/) run as a subprocess under
`/usr/bin/time -f "%e %M %U %S"`: wall seconds, peak RSS and CPU seconds of the whole process
(start-up, imports, reading, training, evaluating the test file after every epoch, saving the
model), as the peers were measured. Each round also times a "start-up floor" process that only
imports the CLI and the training loop and calls one numba kernel once: the fixed cost of any run. One warm-up run per case first (numba's on-disk cache, page cache), then
`--repeats` rounds that visit every case in turn; the table shows medians. Test RMSE is the
`holdout_rmse` of the last epoch in the run's metrics.json (validation source = the test file
of the same format; the last epoch's model is kept, the test set chooses nothing).

Cases: libFM's SGD settings (k 8, 10 epochs, lr 0.01, reg 0/0/0.01, init_std 0.1) from
train.parquet, train.libfm and train.csv; AdaGrad (planted_adagrad.yaml) from train.parquet,
its learning_rate / reg_factors chosen by `--search` on a split of the training data only.

--search: write the first 90% of train.parquet to WORK/planted-val/train.parquet and the last
10% to WORK/planted-val/val.parquet, train AdaGrad on a small grid (10 epochs each) and print the
validation RMSE of each; hard-code the winner in benchmarks/specs/planted_adagrad.yaml.

Writes the `train-planted` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _planted import ROOT, ensure_planted, planted_arguments
from _report import command_line, machine, write_section

SPECS = Path(__file__).resolve().parent / "specs"
TIME = "/usr/bin/time"
LIBFM_WALL, LIBFM_RMSE = 1.47, 0.7332  # PEERS.md, libFM 1.4.4 SGD: the SGD targets
ADAGRAD_RMSE = 0.665  # target of the AdaGrad case (xLearn AdaGrad 0.6691, libFM ALS 0.6647)
SEARCH_LR = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
SEARCH_REG_FACTORS = (0.001, 0.01, 0.03)
# The fixed cost of any `streamfm train`: the imports of the CLI and the training loop, and the
# first call of a numba kernel (loading its machine code from numba's on-disk cache), no data.
FLOOR = (
    "import numpy as np, streamfm.cli, streamfm.training.loop\n"
    "from streamfm.learners.scoring import predict_csr\n"
    "from streamfm.learners.params import FMParams\n"
    "p = FMParams(8)\n"
    "p.ensure_features(1)\n"
    "predict_csr(np.array([0, 1], np.int64), np.array([0], np.int32), "
    "np.ones(1, np.float32), p.w0, p.w, p.V, p.n_features, np.empty(1))\n"
)


def streamfm_exe() -> Path:
    """The `streamfm` console script of the running interpreter's environment (else .venv's)."""
    here = Path(sys.executable).parent / "streamfm"
    return here if here.exists() else ROOT / ".venv" / "bin" / "streamfm"


@dataclass
class Case:
    label: str  # "tool, method" column
    spec: str  # file name in benchmarks/specs
    train: str  # file name in the planted folder
    test: str
    target: str  # description of the target, for the verdict
    max_wall: float | None = None
    max_rmse: float | None = None
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    rmses: list[float] = field(default_factory=list)
    loops: list[float] = field(default_factory=list)  # the training loop's own seconds
    cpus: list[float] = field(default_factory=list)  # user + system seconds of the process

    def met(self) -> bool:
        wall_ok = self.max_wall is None or statistics.median(self.walls) <= self.max_wall
        rmse_ok = self.max_rmse is None or statistics.median(self.rmses) <= self.max_rmse
        return wall_ok and rmse_ok


CASES = [
    Case(
        "streamfm, SGD (parquet)",
        "planted_sgd_parquet.yaml",
        "train.parquet",
        "test.parquet",
        f"wall <= {LIBFM_WALL} s, RMSE <= {LIBFM_RMSE}",
        LIBFM_WALL,
        LIBFM_RMSE,
    ),
    Case(
        "streamfm, SGD (libFM text)",
        "planted_sgd_libfm.yaml",
        "train.libfm",
        "test.libfm",
        f"wall <= {LIBFM_WALL} s, RMSE <= {LIBFM_RMSE}",
        LIBFM_WALL,
        LIBFM_RMSE,
    ),
    Case(
        "streamfm, SGD (CSV)",
        "planted_sgd_csv.yaml",
        "train.csv",
        "test.csv",
        f"wall <= {LIBFM_WALL} s, RMSE <= {LIBFM_RMSE}",
        LIBFM_WALL,
        LIBFM_RMSE,
    ),
    Case(
        "streamfm, AdaGrad (parquet)",
        "planted_adagrad.yaml",
        "train.parquet",
        "test.parquet",
        f"RMSE <= {ADAGRAD_RMSE}",
        None,
        ADAGRAD_RMSE,
    ),
]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s = user + system) of one process, from /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.run(
            [TIME, "-f", "%e %M %U %S", "-o", tf.name, *cmd],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        wall, kb, user, system = tf.read().split()[-4:]
    return float(wall), float(kb) / 1024.0, float(user) + float(system)


def run_cli(
    spec: Path, sets: list[str], root: Path | None = None
) -> tuple[float, float, float, list[dict]]:
    """(wall s, peak RSS MB, CPU s, metrics.json records) of one `streamfm train SPEC -q`;
    with `root`, the streamfm of that checkout (`python -m streamfm.cli` on its PYTHONPATH)."""
    out_dir = next(s.split("=", 1)[1] for s in sets if s.startswith("output.dir="))
    metrics = Path(out_dir) / "metrics.json"
    metrics.unlink(missing_ok=True)
    env = None
    if root is None:
        # --overwrite: each round writes into the same run folder (0.1.0's CLI, measured as
        # a baseline, overwrote without being asked and has no such option).
        cmd = [str(streamfm_exe()), "train", str(spec), "-q", "--overwrite"]
    else:
        # -P: the working directory (this checkout) must not come before PYTHONPATH.
        cmd = [str(streamfm_exe().parent / "python"), "-P", "-m", "streamfm.cli", "train"]
        cmd.append(str(spec))
        if "--overwrite" in (Path(root) / "streamfm" / "cli.py").read_text():
            cmd.append("--overwrite")  # a checkout whose CLI has the option (not 0.1.0's)
        cmd.append("-q")
        env = {**os.environ, "PYTHONPATH": str(root)}
    for s in sets:
        cmd += ["--set", s]
    wall, mb, cpu = timed(cmd, env)
    return wall, mb, cpu, json.loads(metrics.read_text())


def case_sets(case: Case, folder: Path, runs: Path) -> list[str]:
    return [
        f"source.path={folder / case.train}",
        f"validation.source.path={folder / case.test}",
        f"output.dir={runs / Path(case.spec).stem}",
    ]


def peers(shared: Path) -> list[tuple[str, str, str, str, str]]:
    """(tool, passes, wall s, peak MB, RMSE) rows of PEERS.md's table."""
    path = shared / "bench" / "PEERS.md"
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not re.fullmatch(r"[\d.]+", cells[3]):
            continue
        tool, _settings, passes, wall, rss, rmse = cells
        rows.append((tool, passes, wall, rss, rmse))
    return rows


def split_train(folder: Path, work: Path) -> Path:
    """First 90% of train.parquet -> planted-val/train.parquet, last 10% -> val.parquet."""
    import pyarrow.parquet as pq

    out = work / "planted-val"
    if not (out / "val.parquet").exists():
        out.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(folder / "train.parquet")
        cut = table.num_rows - table.num_rows // 10
        pq.write_table(table.slice(0, cut), out / "train.parquet", row_group_size=1 << 17)
        pq.write_table(table.slice(cut), out / "val.parquet", row_group_size=1 << 17)
    return out


def search(folder: Path, work: Path) -> None:
    """AdaGrad grid on the training data's own validation split; prints validation RMSEs."""
    val = split_train(folder, work)
    spec = SPECS / "planted_adagrad.yaml"
    results = []
    print(f"AdaGrad search: train {val / 'train.parquet'}, validate {val / 'val.parquet'}")
    for lr in SEARCH_LR:
        for reg in SEARCH_REG_FACTORS:
            sets = [
                f"source.path={val / 'train.parquet'}",
                f"validation.source.path={val / 'val.parquet'}",
                f"output.dir={work / 'runs' / 'search'}",
                f"learner.learning_rate={lr}",
                f"learner.reg_factors={reg}",
            ]
            *_, history = run_cli(spec, sets)
            rmse = history[-1]["holdout_rmse"]
            results.append((rmse, lr, reg))
            print(f"  learning_rate {lr:<5} reg_factors {reg:<6} validation RMSE {rmse:.4f}")
    rmse, lr, reg = min(results)
    print(
        f"best: learning_rate {lr}, reg_factors {reg} (validation RMSE {rmse:.4f}); "
        f"hard-code them in {spec.relative_to(ROOT)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    planted_arguments(ap)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case (median shown)")
    ap.add_argument(
        "--search", action="store_true", help="re-run the AdaGrad search on the validation split"
    )
    ap.add_argument(
        "--baseline", type=Path, help="another checkout: run every case with both, in turns"
    )
    args = ap.parse_args()
    work = args.work.resolve()
    folder = ensure_planted(args.shared, work).resolve()
    runs = work / "runs"

    if args.search:
        search(folder, work)
    if args.baseline is not None:
        side_by_side(args, folder, runs)
        return

    python = str(streamfm_exe().parent / "python")
    for case in CASES:  # warm-up: numba's on-disk cache, the page cache
        run_cli(SPECS / case.spec, case_sets(case, folder, runs))
    floor: list[tuple[float, float, float]] = []
    for r in range(args.repeats):
        floor.append(timed([python, "-c", FLOOR]))
        print(
            f"run {r + 1}: {'start-up floor':30s} {floor[-1][0]:6.2f} s {floor[-1][1]:6.0f} MB "
            f"(CPU {floor[-1][2]:.2f} s)"
        )
        for case in CASES:
            wall, mb, cpu, history = run_cli(SPECS / case.spec, case_sets(case, folder, runs))
            case.walls.append(wall)
            case.cpus.append(cpu)
            case.rss.append(mb)
            case.rmses.append(history[-1]["holdout_rmse"])
            case.loops.append(history[-1]["seconds"])
            print(
                f"run {r + 1}: {case.label:30s} {wall:6.2f} s {mb:6.0f} MB "
                f"RMSE {case.rmses[-1]:.4f} (CPU {cpu:.2f} s, loop {case.loops[-1]:.2f} s)",
                flush=True,
            )

    floor_wall = statistics.median(f[0] for f in floor)
    floor_mb = statistics.median(f[1] for f in floor)
    floor_cpu = statistics.median(f[2] for f in floor)
    lines = [
        "## Training on the planted yardstick: streamfm next to the peers of PEERS.md",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "Whole process, as PEERS.md measured the peers: `streamfm train SPEC -q` (specs in "
        "`benchmarks/specs/`) under `/usr/bin/time -f '%e %M %U %S'`: start-up and imports, "
        "reading, 10 epochs of training, the test file evaluated after each epoch, the model "
        "saved. One warm-up run per case (numba's on-disk cache warm), then the median of "
        f"{args.repeats} runs taken in turns. k = 8, user and item one-hot. Test RMSE: "
        "`holdout_rmse` of the last epoch (the last epoch's model is kept: the test set "
        "chooses nothing). AdaGrad's learning_rate 0.15 / reg_factors 0.01 were chosen on a "
        "90/10 split of the training data (`--search`). *CPU s*: user + system seconds (less "
        "sensitive than wall to other jobs on the machine). *loop s*: the training loop's own "
        "seconds (metrics.json), so wall - loop = start-up, spec, model file. *start-up floor*: "
        "a process that only imports the CLI and training loop and calls one numba kernel once "
        "(machine code loaded from numba's cache), no data: the fixed cost of any run, measured "
        "in the same rounds. Peer rows are PEERS.md's figures, measured in another session on "
        f"this kind of machine; x libFM = wall / libFM SGD's {LIBFM_WALL} s.",
        "",
        "| tool, method | passes | wall s | CPU s | loop s | x libFM | peak RSS MB | test RMSE "
        "| target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        f"| streamfm start-up floor (no data) | 0 | {floor_wall:.2f} | {floor_cpu:.2f} | | "
        f"{floor_wall / LIBFM_WALL:.2f} | {floor_mb:.0f} | | | |",
    ]
    print()
    print(
        f"{'tool, method':36s} {'wall s':>7s} {'CPU s':>6s} {'loop s':>6s} {'peak MB':>7s} "
        f"{'RMSE':>7s}  target"
    )
    print(
        f"{'streamfm start-up floor (no data)':36s} {floor_wall:7.2f} {floor_cpu:6.2f} "
        f"{'':6s} {floor_mb:7.0f}"
    )
    for case in CASES:
        wall = statistics.median(case.walls)
        cpu = statistics.median(case.cpus)
        loop = statistics.median(case.loops)
        mb = statistics.median(case.rss)
        rmse = statistics.median(case.rmses)
        verdict = "yes" if case.met() else "NO"
        print(
            f"{case.label:36s} {wall:7.2f} {cpu:6.2f} {loop:6.2f} {mb:7.0f} {rmse:7.4f}  "
            f"{case.target}: {verdict} (walls {', '.join(f'{w:.2f}' for w in case.walls)})"
        )
        lines.append(
            f"| **{case.label}** | 10 | {wall:.2f} | {cpu:.2f} | {loop:.2f} | "
            f"{wall / LIBFM_WALL:.2f} | {mb:.0f} | {rmse:.4f} | {case.target} | {verdict} |"
        )
    for tool, passes, wall, rss, rmse in peers(args.shared):
        print(f"{tool:36.36s} {wall:>7s} {'':6s} {'':6s} {rss:>7s} {rmse:>7s}  (PEERS.md)")
        lines.append(
            f"| {tool} (PEERS.md) | {passes} | {wall} | | | {float(wall) / LIBFM_WALL:.2f} | "
            f"{rss} | {rmse} | | |"
        )
    write_section("train-planted", "\n".join(lines))


def side_by_side(args: argparse.Namespace, folder: Path, runs: Path) -> None:
    """Every case with this checkout and with --baseline, alternating, medians of --repeats;
    writes the `train-baseline` section."""
    roots = {"baseline": args.baseline.resolve(), "now": ROOT}
    for root in roots.values():  # as a pip install leaves them (this machine may set
        # PYTHONDONTWRITEBYTECODE: each process would compile the trees' sources again)
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(root / "streamfm")], check=True
        )
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for case in CASES:  # warm-up of both
        for root in roots.values():
            run_cli(SPECS / case.spec, case_sets(case, folder, runs), root)
    for r in range(args.repeats):
        for case in CASES:
            for who, root in roots.items():
                wall, _mb, cpu, history = run_cli(
                    SPECS / case.spec, case_sets(case, folder, runs), root
                )
                results.setdefault((case.label, who), []).append(
                    (wall, cpu, history[-1]["holdout_rmse"])
                )
                print(
                    f"run {r + 1}: {case.label:30s} {who:8s} {wall:6.2f} s CPU {cpu:5.2f} s "
                    f"RMSE {history[-1]['holdout_rmse']:.4f}",
                    flush=True,
                )
    lines = [
        "## Training on the planted yardstick: this version next to a baseline",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "Whole process, `python -m streamfm.cli train SPEC -q` of each checkout (the baseline "
        "by `--baseline`, on its PYTHONPATH; both trees byte-compiled first, as a pip install "
        "leaves them), the same specs and files as the `train-planted` "
        f"section; one warm-up run each, then {args.repeats} rounds visiting every case with both "
        "in turns; medians. Ratios < 1: this version is faster.",
        "",
        "| case | baseline wall s | now wall s | wall now/baseline | baseline CPU s | now CPU s "
        "| CPU now/baseline | baseline RMSE | now RMSE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        b = [statistics.median(x) for x in zip(*results[(case.label, "baseline")], strict=True)]
        n = [statistics.median(x) for x in zip(*results[(case.label, "now")], strict=True)]
        line = (
            f"| {case.label} | {b[0]:.2f} | {n[0]:.2f} | {n[0] / b[0]:.3f} | {b[1]:.2f} | "
            f"{n[1]:.2f} | {n[1] / b[1]:.3f} | {b[2]:.4f} | {n[2]:.4f} |"
        )
        lines.append(line)
        print(line)
    write_section("train-baseline", "\n".join(lines))


if __name__ == "__main__":
    main()
