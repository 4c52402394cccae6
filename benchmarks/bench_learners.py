"""ALS and MCMC through the real CLI, whole process, side by side with libFM in the same run.

    python benchmarks/bench_learners.py [--shared ../shared] [--work .bench-data]
        [--libfm /work/libfm-build/bin/libFM] [--repeats 3]

The planted yardstick (../shared/bench/planted.py: 900k train / 100k test ratings, user and item
one-hot). Both tools read the same libFM text files, train.libfm and test.libfm:

- ours: `streamfm train benchmarks/specs/planted_{als,mcmc}_libfm.yaml -q` with source,
  validation and output pointed at WORK by --set, and model.seed = r in repeat r;
- libFM 1.4.4 (built from source outside this repository), PEERS.md's settings: k 8,
  init_stdev 0.1; ALS -regular '0,0,0.01' 10 iterations; MCMC 50 iterations; -seed r.

Each process runs under `/usr/bin/time -f "%e %M %U %S"`: wall and CPU (user + system) seconds
and peak RSS of the whole process (start-up, reading the text file, training, predicting the
test file after every iteration, writing the model / libFM's -rlog). One warm-up run of ours per
method first (numba's on-disk cache); then `--repeats` rounds, each running libFM ALS, ours ALS,
libFM MCMC, ours MCMC in turn so that both tools meet the same machine load. Medians; "x libFM" =
median of our wall / median of libFM's wall.

Test RMSE: ALS the final parameters (ours: the last record's holdout_rmse; libFM: rlog's
rmse_mcmc_this of the last iteration, its -out prediction); MCMC the average of the clipped
predictions of all 50 samples (burn-in 0; ours: the last holdout_rmse, the running average kept
by the learner; libFM: rmse_mcmc_all). s/iter: ours the median `seconds_iteration` (one
coordinate_iteration call: residuals, hyper-parameters, all sweeps); libFM its `time_learn`
(the sweep plus re-predicting train and test): not like for like, the wall is.

Writes the `learners-planted` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _planted import ROOT, ensure_planted, planted_arguments
from _report import command_line, machine, write_section

SPECS = Path(__file__).resolve().parent / "specs"
TIME = "/usr/bin/time"
K, INIT_STD = 8, 0.1
ITERS = {"als": 10, "mcmc": 50}
TARGET_RMSE = {"als": 0.665, "mcmc": 0.686}
MAX_RATIO = 0.7


def streamfm_exe() -> Path:
    here = Path(sys.executable).parent / "streamfm"
    return here if here.exists() else ROOT / ".venv" / "bin" / "streamfm"


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of a command run under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [TIME, "-f", "%e %M %U %S", "-o", tf.name, *cmd]
        proc = subprocess.run(full, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        wall, kb, user, system = tf.read().split()[-4:]
    return float(wall), float(user) + float(system), float(kb) / 1024.0


def run_ours(method: str, data: Path, out: Path, seed: int) -> dict:
    spec = SPECS / f"planted_{method}_libfm.yaml"
    cmd = [str(streamfm_exe()), "train", str(spec), "-q", "--overwrite"]
    for s in (
        f"source.path={data / 'train.libfm'}",
        f"validation.source.path={data / 'test.libfm'}",
        f"output.dir={out}",
        f"model.seed={seed}",
    ):
        cmd += ["--set", s]
    wall, cpu, rss = timed(cmd, ROOT)
    history = json.loads((out / "metrics.json").read_text())
    return {
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "rmse": history[-1]["holdout_rmse"],
        "per_iter": statistics.median(r["seconds_iteration"] for r in history),
    }


def run_libfm(libfm: Path, method: str, data: Path, tmp: Path, seed: int) -> dict:
    rlog = tmp / f"libfm_{method}.rlog"
    cmd = [str(libfm), "-task", "r", "-train", str(data / "train.libfm")]
    cmd += ["-test", str(data / "test.libfm"), "-dim", f"1,1,{K}", "-init_stdev", str(INIT_STD)]
    cmd += ["-method", method, "-iter", str(ITERS[method]), "-seed", str(seed), "-rlog", str(rlog)]
    if method == "als":
        cmd += ["-regular", "0,0,0.01"]
    wall, cpu, rss = timed(cmd, tmp)
    with open(rlog) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    column = "rmse_mcmc_this" if method == "als" else "rmse_mcmc_all"
    return {
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "rmse": float(rows[-1][column]),
        "per_iter": statistics.median(float(r["time_learn"]) for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    planted_arguments(ap)
    ap.add_argument("--libfm", type=Path, default=Path("/work/libfm-build/bin/libFM"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if not a.libfm.exists():
        raise SystemExit(f"{a.libfm} not found: build libFM from its source (make in its root)")
    data = ensure_planted(a.shared, a.work)
    runs = a.work.resolve() / "runs"
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ITERS:  # warm-up: numba's on-disk cache, the page cache
            run_ours(method, data, runs / f"learners-{method}", 1)
        for r in range(a.repeats):
            seed = r + 1  # libFM's srand(0) and srand(1) are the same sequence
            for method in ITERS:
                lib = run_libfm(a.libfm, method, data, Path(tmp), seed)
                ours = run_ours(method, data, runs / f"learners-{method}", seed)
                results.setdefault(("libFM", method), []).append(lib)
                results.setdefault(("streamfm", method), []).append(ours)
                print(f"round {r + 1} {method}: libFM {lib}\n  ours {ours}", flush=True)

    def med(tool, method, key):
        return statistics.median(x[key] for x in results[(tool, method)])

    lines = [
        "## ALS and MCMC on the planted yardstick, whole process, next to libFM",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "Both tools read the same libFM text files (900,000 train / 100,000 test ratings, user "
        "and item one-hot), k 8, init_std 0.1; ALS: reg 0,0,0.01, 10 iterations; MCMC: 50 "
        "iterations, libFM's hyper-priors, burn-in 0. Ours: `streamfm train benchmarks/specs/"
        "planted_{als,mcmc}_libfm.yaml -q` (paths by --set); libFM 1.4.4 with PEERS.md's "
        "settings. Whole processes under `/usr/bin/time` (start-up, reading, training, the test "
        "file predicted after every iteration, the model or rlog written); one warm-up run of "
        f"ours, then {a.repeats} rounds running libFM and ours in turn (seed r in round r); "
        "medians. Test RMSE: ALS the final parameters; MCMC the average of all 50 samples' "
        "clipped predictions (libFM's rmse_mcmc_all; ours the learner's holdout running "
        "average). s/iter: ours one coordinate_iteration call (median), libFM its time_learn "
        "(sweep + predicting train and test): indicative only, the wall is like for like.",
        "",
        "| tool, method | iterations | wall s | CPU s | x libFM (wall) | s/iter | peak RSS MB "
        "| test RMSE (median) | RMSE range | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    verdicts = []
    for method in ITERS:
        lib_wall = med("libFM", method, "wall")
        for tool in ("libFM", "streamfm"):
            rm = [x["rmse"] for x in results[(tool, method)]]
            wall = med(tool, method, "wall")
            ratio = wall / lib_wall
            target = met = ""
            if tool == "streamfm":
                ok_rmse = statistics.median(rm) <= TARGET_RMSE[method]
                ok_wall = ratio <= MAX_RATIO
                target = f"RMSE <= {TARGET_RMSE[method]}, wall <= {MAX_RATIO} x libFM"
                met = f"{'yes' if ok_rmse else 'NO'}; {'yes' if ok_wall else 'NO'}"
                verdicts.append(
                    f"{method.upper()}: test RMSE {statistics.median(rm):.4f} (target <= "
                    f"{TARGET_RMSE[method]}: {'met' if ok_rmse else 'NOT met'}; libFM "
                    f"{statistics.median(x['rmse'] for x in results[('libFM', method)]):.4f}); "
                    f"wall {wall:.2f} s = {ratio:.2f} x libFM's {lib_wall:.2f} s (target <= "
                    f"{MAX_RATIO}: {'met' if ok_wall else 'NOT met'}); s/iter "
                    f"{med(tool, method, 'per_iter'):.3f} vs libFM "
                    f"{med('libFM', method, 'per_iter'):.3f}."
                )
            label = "libFM 1.4.4" if tool == "libFM" else "**streamfm**"
            lines.append(
                f"| {label}, {method.upper()} | {ITERS[method]} | {wall:.2f} | "
                f"{med(tool, method, 'cpu'):.2f} | {ratio:.2f} | {med(tool, method, 'per_iter'):.3f} "
                f"| {med(tool, method, 'rss'):.0f} | {statistics.median(rm):.4f} | "
                f"{min(rm):.4f} .. {max(rm):.4f} | {target} | {met} |"
            )
    lines += ["", *verdicts]
    text = "\n".join(lines)
    print()
    print(text)
    write_section("learners-planted", text)


if __name__ == "__main__":
    main()
