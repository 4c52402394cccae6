"""Start-up: what a tiny `streamfm train` costs beyond its dependencies, before and after a change.

    python benchmarks/bench_startup.py [--before REV] [--rounds 5] [--rows 1000]

Each round runs, one after another, as whole processes under `/usr/bin/time`:
- `python -c pass`; `import numba, numpy, pyarrow.parquet, pydantic, typer`, and the same plus
  one numba kernel loaded from numba's cache and called (what any training command must load and
  do: the floor no change of ours can go under);
- `streamfm --help`;
- `streamfm train SPEC -q --overwrite` on a `--rows`-row Parquet file (user and item one-hot, k 8,
  AdaGrad, one epoch; checkpoints, holdout-free, model file written), with this tree and, given
  `--before`, with the code of that git revision (extracted with `git archive`).
Every code tree is byte-compiled first (`compileall`, as a pip install leaves it; this machine sets
PYTHONDONTWRITEBYTECODE, so an editable tree would otherwise be compiled in every process).
One warm-up run per case (numba's on-disk cache and the page cache warm), then the median over
the rounds. Also prints the ten slowest imports of one train process (`python -X importtime`).
Writes the `startup` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _planted import DEFAULT_WORK, ROOT
from _report import command_line, machine, write_section
from bench_state_memory import extract
from bench_train import timed

SPEC = """\
source: {{path: {data}}}
target: rating
features:
  - {{type: categorical, columns: [user]}}
  - {{type: categorical, columns: [item]}}
model: {{k: 8, seed: 0}}
learner: {{optimizer: adagrad, learning_rate: 0.1, epochs: 1}}
output: {{dir: {out}}}
"""

DEPENDENCIES = "import numba, numpy, pyarrow.parquet, pydantic, typer"
# As the CLI does (cli._skip_numba_blas_probe): numba's first kernel would import scipy.linalg.
KERNEL = """\
import sys

sys.modules["scipy.linalg.cython_blas"] = None
import numba.np.arraymath  # noqa: E402

del sys.modules["scipy.linalg.cython_blas"]
import numba  # noqa: E402


@numba.njit(cache=True)
def one(x):
    return x + 1.0
"""


def tiny_file(folder: Path, rows: int) -> Path:
    path = folder / f"tiny-{rows}.parquet"
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "user": pa.array([f"u{u}" for u in rng.integers(0, 100, rows)]),
            "item": pa.array([f"i{i}" for i in rng.integers(0, 50, rows)]),
            "rating": pa.array(rng.integers(1, 6, rows).astype(np.float64)),
        }
    )
    pq.write_table(table, path)
    return path


def streamfm(*args: str) -> list[str]:
    """A command running the streamfm CLI's entry point (of the tree that `env_of` puts first)."""
    return [sys.executable, "-c", "import streamfm.cli as c; c.run()", *args]


def env_of(code: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"}


def slowest_imports(code: Path, spec: Path, n: int = 10) -> list[tuple[float, str]]:
    """(cumulative s, module) of the `n` slowest top-level imports of one train process."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import streamfm.cli as c; c.run()"]
        + ["train", str(spec), "-q", "--overwrite"],
        capture_output=True,
        text=True,
        env=env_of(code),
    )
    found = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith("  ") or not cumulative.strip().isdigit():
            continue  # a nested import: counted in its parent's cumulative time
        found.append((int(cumulative) / 1e6, name.strip()))
    return sorted(found, reverse=True)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--before", help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = ap.parse_args()
    work = args.work.resolve() / "startup"
    work.mkdir(parents=True, exist_ok=True)
    data = tiny_file(work, args.rows)
    (work / "floor_kernel.py").write_text(KERNEL)
    codes = {"this tree": ROOT}
    if args.before:
        codes = {f"before ({args.before})": extract(args.before, work), **codes}
    for code in codes.values():
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(code / "streamfm")], check=True
        )
    cases: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        DEPENDENCIES: ([sys.executable, "-c", DEPENDENCIES], None),
        "the same and one numba kernel from its cache": (
            [sys.executable, "-c", f"{DEPENDENCIES}; import floor_kernel; floor_kernel.one(1.0)"],
            {"PYTHONPATH": str(work), "PATH": "/usr/bin:/bin"},
        ),
        "streamfm --help": (streamfm("--help"), env_of(ROOT)),
    }
    for label, code in codes.items():
        spec = work / f"spec-{len(cases)}.yaml"
        spec.write_text(SPEC.format(data=data, out=work / f"run-{len(cases)}"))
        cases[f"streamfm train, {args.rows:,} rows ({label})"] = (
            streamfm("train", str(spec), "-q", "--overwrite"),
            env_of(code),
        )
    results: dict[str, list[tuple[float, float, float]]] = {c: [] for c in cases}
    for cmd, env in cases.values():
        timed(cmd, env)  # warm-up
    for r in range(args.rounds):
        for label, (cmd, env) in cases.items():
            results[label].append(timed(cmd, env))
            print(f"round {r + 1}: {label:60s} {results[label][-1][0]:5.2f} s", flush=True)
    rows = ["| process | wall s | CPU s | peak RSS MB |", "|---|---:|---:|---:|"]
    for label, runs in results.items():
        wall = statistics.median(x[0] for x in runs)
        mb = statistics.median(x[1] for x in runs)
        cpu = statistics.median(x[2] for x in runs)
        rows.append(f"| {label} | {wall:.2f} | {cpu:.2f} | {mb:.0f} |")
    spec = next(work.glob("spec-*.yaml"))
    imports = [f"| {name} | {s:.3f} |" for s, name in slowest_imports(ROOT, spec)]
    body = "\n".join(
        [
            "## Start-up: a tiny train next to its dependencies' import",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            f"Whole processes under `/usr/bin/time`, in turns, {args.rounds} rounds after one "
            "warm-up run each; medians. The train case: user and item one-hot, k 8, AdaGrad, one "
            "epoch, checkpoints and the model file written. Code trees byte-compiled first, as a "
            "pip install leaves them. The import line is the floor: every streamfm command that "
            "trains loads those modules.",
            "",
            *rows,
            "",
            "Slowest top-level imports of one train process (`python -X importtime`, cumulative s; "
            "numpy and pyarrow come in through the first of these):",
            "",
            "| module | s |",
            "|---|---:|",
            *imports,
        ]
    )
    print(body)
    write_section("startup", body)


if __name__ == "__main__":
    main()
