"""Anonymous memory of MCMC out of core does not grow with the rows: 1M vs 10M planted rows.

    python benchmarks/bench_memory_coordinate.py [--work .bench-data] [--rows 1000000,10000000]

Data: the planted-style ratings of benchmarks/bench_memory.py (one universe of 100,000 users x
50,000 items, rank-8 planted FM, stars 1..5; Parquet written in chunks, the smaller file the
first rows of the larger), plus a fixed holdout of 100,000 rows from the same universe.

Each file is trained by `streamfm train benchmarks/specs/memory_mcmc.yaml -q` (MCMC, k 8, 3
iterations, the holdout evaluated after each, checkpoints every 1,000,000 rows and iteration) in a
subprocess. The training rows live in files of the cache folder (CSR, transposed CSC, e / q as
memory maps), which the kernel pages in and out: they count as file-backed resident memory, not
as anonymous memory. So the figure compared is the peak of **RssAnon** (anonymous resident
memory: heaps, numpy arrays, the model; /proc/<pid>/status), sampled every 10 ms by this script
while the process runs (the peak between two samples can be missed by at most 10 ms of
allocations). Shown beside it: the peak of RssFile sampled the same way (the mapped files in the
page cache, which the kernel may drop at any time) and /usr/bin/time's peak RSS (anonymous + file
+ shared, the kernel's high-water mark). One warm-up run on the smallest file (numba's cache).

Writes the `memory-coordinate` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _planted import DEFAULT_WORK, ROOT
from _report import command_line, machine, write_section
from bench_memory import Universe, ensure_file, streamfm_exe

SPEC = Path(__file__).resolve().parent / "specs" / "memory_mcmc.yaml"
TIME = "/usr/bin/time"
HOLDOUT_ROWS = 100_000
MAX_RATIO = 1.5  # target: peak RssAnon(10M) <= 1.5 x peak RssAnon(1M)


def ensure_holdout(folder: Path, universe: Universe) -> Path:
    import pyarrow.parquet as pq

    path = folder / "holdout.parquet"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(universe.chunk(999_999, HOLDOUT_ROWS), path)
    return path


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def train_once(path: Path, holdout: Path, work: Path) -> dict:
    out_dir = work / "runs" / f"memory-coordinate-{path.stem}"
    ckpt = work / "runs" / f"memory-coordinate-{path.stem}-ckpt"
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = [TIME, "-f", "%e %M %U %S", "-o", tf.name, str(streamfm_exe()), "train", str(SPEC)]
        cmd += [
            "-q",
            "--overwrite",
            "--set",
            f"source.path={path}",
            "--set",
            f"validation.source.path={holdout}",
        ]
        cmd += ["--set", f"output.dir={out_dir}", "--set", f"checkpoint.dir={ckpt}"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        peak = {"RssAnon": 0, "RssFile": 0}
        done = threading.Event()

        def sample() -> None:
            child = None
            while not done.is_set():
                if child is None:  # the streamfm process under /usr/bin/time
                    try:
                        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
                        child = int(kids.split()[0]) if kids.split() else None
                    except (FileNotFoundError, ValueError):
                        child = None
                if child is not None:
                    now = status_kb(child)
                    for k in peak:
                        peak[k] = max(peak[k], now.get(k, 0))
                time.sleep(0.01)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        _, err = proc.communicate()
        done.set()
        t.join()
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
        wall, kb, user, system = tf.read().split()[-4:]
    history = json.loads((out_dir / "metrics.json").read_text())
    return {
        "wall": float(wall),
        "cpu": float(user) + float(system),
        "peak_rss": float(kb) / 1024.0,
        "anon": peak["RssAnon"] / 1024.0,
        "file": peak["RssFile"] / 1024.0,
        "rows": history[-1]["rows"],
        "holdout_rmse": history[-1]["holdout_rmse"],
        "per_iter": sum(r["seconds_iteration"] for r in history) / len(history),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where data files are kept")
    ap.add_argument("--rows", default="1000000,10000000", help="comma-separated file sizes")
    args = ap.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.rows.split(","))
    work = args.work.resolve()
    folder = work / "memory"
    universe = Universe()
    files = {rows: ensure_file(folder, rows, universe)[0] for rows in sizes}
    holdout = ensure_holdout(folder, universe)
    train_once(files[sizes[0]], holdout, work)  # warm-up
    results = {}
    for rows in sizes:
        results[rows] = r = train_once(files[rows], holdout, work)
        if r["rows"] != rows:
            raise SystemExit(f"{files[rows]}: learnt {r['rows']:,} rows, expected {rows:,}")
        print(f"{rows:>12,} rows: {r}", flush=True)
    base = results[sizes[0]]["anon"]
    lines = [
        "## Memory of MCMC out of core: anonymous RSS at 1M vs 10M rows",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "The planted-style ratings of the memory section above (100,000 users x 50,000 items; "
        "the smaller file is the first rows of the larger) and a fixed 100,000-row holdout. "
        "`streamfm train benchmarks/specs/memory_mcmc.yaml -q` (MCMC, k 8, 3 iterations, the "
        "holdout predicted after each, checkpoints every 1,000,000 rows and iteration): the "
        "training rows go to files in the cache folder (CSR, transposed CSC, per-row arrays as "
        "memory maps). **Peak RssAnon** (anonymous memory: heaps, arrays, the model) is sampled "
        "from /proc/<pid>/status every 10 ms while the process runs; peak RssFile (the mapped "
        "files, page cache the kernel may drop) likewise; peak RSS is /usr/bin/time's (anonymous "
        "+ file-backed). One warm-up run, then one run per size. s/iter: mean "
        "`seconds_iteration`.",
        "",
        "| rows | wall s | CPU s | s/iter | peak RssAnon MB | RssAnon / smallest "
        "| peak RssFile MB | peak RSS MB | holdout RMSE |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in sizes:
        r = results[rows]
        lines.append(
            f"| {rows:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['per_iter']:.2f} | "
            f"{r['anon']:.0f} | {r['anon'] / base:.2f} | {r['file']:.0f} | {r['peak_rss']:.0f} | "
            f"{r['holdout_rmse']:.4f} |"
        )
    top = results[sizes[-1]]["anon"]
    ok = top <= MAX_RATIO * base
    verdict = (
        f"Target: peak RssAnon of {sizes[-1]:,} rows <= {MAX_RATIO} x that of {sizes[0]:,} rows: "
        f"{top / base:.2f}x ({top:.0f} MB vs {base:.0f} MB), {'met' if ok else 'NOT met'}."
    )
    lines += ["", verdict]
    print(verdict)
    write_section("memory-coordinate", "\n".join(lines))


if __name__ == "__main__":
    main()
