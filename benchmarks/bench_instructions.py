"""Instructions per case of the learning and prediction kernels, this checkout next to a baseline.

    python benchmarks/bench_instructions.py --baseline /path/to/older/checkout [--passes 4]

Machines here are shared and timings noisy; instruction counts are not. Each figure comes from two
runs of a small script under `valgrind --tool=callgrind` (which counts every instruction the
process executes): one that sets the data up and calls the kernel once (compiled code loaded from
numba's cache), and one that then makes `--passes` more passes; the difference over the extra
cases is the kernel's instructions per case. Data as in bench_kernels.py (one-hot rows, 10,000
features, 200,000 non-zeros). Each checkout gets a private numba cache, warmed under valgrind first
(numba keys its cache by CPU, and valgrind reports its own; a shared cache raced by other
processes would make a run compile and spoil its count). Fewer instructions is not always faster
(vector width, memory), so read this beside the timings of bench_kernels.py --baseline.
Writes the `instructions` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import command_line, machine, write_section

ROOT = Path(__file__).resolve().parent.parent
CASES = [(2, 8, "sgd"), (2, 8, "adagrad"), (10, 8, "sgd"), (10, 8, "adagrad"), (2, 32, "sgd")]
CASES += [(2, 8, "predict"), (10, 8, "predict")]
NNZ = 200_000

SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {bench!r})
import bench_kernels as bk
nnz, k, kernel, passes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
n_rows = {nnz} // nnz
data = bk.make_data(n_rows, nnz, 10_000)
order = np.arange(n_rows, dtype=np.int64)
pred = np.empty(n_rows)
p = bk.Params(10_000, k, kernel == "adagrad")
tr = np.array([np.inf, -np.inf])
learn, predict = bk.kernels()
def once():
    if kernel == "predict":
        predict(data[0], data[1], data[2], p.w0, p.w, p.V, 10_000, pred)
    else:
        bk.sgd_pass(data, order, p, 0.001 if kernel == "sgd" else 0.01, pred, tr)
for _ in range(1 + passes):
    once()
"""


def instructions(
    root: Path, cache: Path, script: Path, nnz: int, k: int, kernel: str, passes: int
) -> int:
    """Instructions callgrind counts for the whole process (numba's cache in `cache`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out"]
        cmd += [sys.executable, str(script), str(nnz), str(k), kernel, str(passes)]
        env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(cache)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    m = re.search(r"Collected : (\d+)", done.stderr)
    if m is None:
        raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the checkout to compare with")
    ap.add_argument("--passes", type=int, default=4, help="extra passes counted (default 4)")
    args = ap.parse_args()
    roots = {"baseline": args.baseline.resolve(), "now": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "one_kernel.py"
        script.write_text(SCRIPT.format(bench=str(ROOT / "benchmarks"), nnz=NNZ))
        caches = {who: Path(tmp) / f"numba-{who}" for who in roots}
        for who, root in roots.items():  # warm a private numba cache under valgrind
            for nnz, k, kernel in CASES:
                instructions(root, caches[who], script, nnz, k, kernel, 0)
        rows = [
            "| nnz/row | k | kernel | baseline instr/case | now instr/case | now / baseline |",
            "|---:|---:|---|---:|---:|---:|",
        ]
        for nnz, k, kernel in CASES:
            cases = args.passes * (NNZ // nnz)
            per = {}
            for who, root in roots.items():
                extra = instructions(root, caches[who], script, nnz, k, kernel, args.passes)
                base = instructions(root, caches[who], script, nnz, k, kernel, 0)
                per[who] = (extra - base) / cases
            line = (
                f"| {nnz} | {k} | {kernel} | {per['baseline']:.0f} | {per['now']:.0f} | "
                f"{per['now'] / per['baseline']:.3f} |"
            )
            rows.append(line)
            print(line, flush=True)
    body = "\n".join(
        [
            "## Kernels: instructions per case, this version next to a baseline",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            "callgrind instruction counts (deterministic, unlike timings on a shared machine): "
            f"for each case, a run with {args.passes} extra passes minus a run without, divided "
            "by the extra cases. One-hot rows over 10,000 features, 200,000 non-zeros per pass; "
            "regression, constant rate, clipping on. Ratio < 1: fewer instructions now.",
            "",
            *rows,
        ]
    )
    write_section("instructions", body)


if __name__ == "__main__":
    main()
