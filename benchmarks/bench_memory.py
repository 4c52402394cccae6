"""Peak memory of `streamfm train` does not grow with the number of rows: 1M vs 20M rows.

    python benchmarks/bench_memory.py [--work .bench-data] [--rows 1000000,20000000] [--repeats 3]

Data: planted-style ratings (like ../shared/bench/planted.py: rank-8 planted FM, biases,
power-law user and item popularity, integer stars 1..5) over one fixed universe of 100,000 users
x 50,000 items, written in chunks of 500,000 rows with pyarrow.parquet.ParquetWriter, so the
generator never holds a whole file. Chunk c is drawn from seed (0, c) whatever the file size: the
1M file is the first 1M rows of the 20M one. (user, item) pairs may repeat, which planted.py
avoids; deduplicating 20M pairs would need them all in memory. Files: WORK/memory/*.parquet,
generated once and reused.

Each file is trained one epoch (benchmarks/specs/memory_sgd.yaml: SGD, k 8, no validation,
chunk cache off) by `streamfm train SPEC -q` in a subprocess under `/usr/bin/time -f "%e %M %U %S"`.
One warm-up run on the smallest file (numba's on-disk cache), then `--repeats` rounds over all
sizes; medians. rows/s counts whole-process wall time (start-up included) and, separately, the
training loop's own seconds from the run's metrics.json. Writes the `memory` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _planted import DEFAULT_WORK, ROOT
from _report import command_line, machine, peak_rss_mb, write_section

SPEC = Path(__file__).resolve().parent / "specs" / "memory_sgd.yaml"
TIME = "/usr/bin/time"
N_USERS, N_ITEMS, K = 100_000, 50_000, 8
MU, SD_BU, SD_BI, SD_V, SD_EPS = 3.6, 0.35, 0.45, 0.5, 0.6
CHUNK = 500_000
MAX_RATIO, MAX_MB = 1.2, 500.0  # targets: peak RSS(largest) <= 1.2 x peak RSS(smallest), < 500 MB


class Universe:
    """Users, items and the planted model shared by every file (seed 0)."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.bu = rng.normal(0, SD_BU, N_USERS)
        self.bi = rng.normal(0, SD_BI, N_ITEMS)
        self.vu = rng.normal(0, SD_V, (N_USERS, K))
        self.vi = rng.normal(0, SD_V, (N_ITEMS, K))
        pu = (np.arange(N_USERS) + 10.0) ** -0.7
        pi = (np.arange(N_ITEMS) + 20.0) ** -0.9
        # Cumulative popularity of a random permutation: draws are searchsorted(cdf, uniform).
        self.cdf_u = np.cumsum(rng.permutation(pu / pu.sum()))
        self.cdf_i = np.cumsum(rng.permutation(pi / pi.sum()))
        self.seed = seed

    def chunk(self, c: int, n: int):
        """Rows of chunk number `c` (n rows): user int32, item int32, rating float32."""
        import pyarrow as pa

        rng = np.random.default_rng([self.seed, c])
        u = np.searchsorted(self.cdf_u, rng.random(n) * self.cdf_u[-1]).astype(np.int32)
        i = np.searchsorted(self.cdf_i, rng.random(n) * self.cdf_i[-1]).astype(np.int32)
        np.minimum(u, N_USERS - 1, out=u)
        np.minimum(i, N_ITEMS - 1, out=i)
        clean = MU + self.bu[u] + self.bi[i] + np.einsum("nk,nk->n", self.vu[u], self.vi[i])
        r = np.clip(np.rint(clean + rng.normal(0, SD_EPS, n)), 1, 5).astype(np.float32)
        return pa.table({"user": u, "item": i, "rating": r})


def ensure_file(folder: Path, rows: int, universe: Universe) -> tuple[Path, float]:
    """The Parquet file of `rows` rows (generated if absent) and the generation time (0 if reused)."""
    import pyarrow.parquet as pq

    path = folder / f"rows-{rows}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    t0 = time.perf_counter()
    writer = None
    try:
        for c, start in enumerate(range(0, rows, CHUNK)):
            table = universe.chunk(c, min(CHUNK, rows - start))
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=1 << 17)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)
    return path, time.perf_counter() - t0


def streamfm_exe() -> Path:
    here = Path(sys.executable).parent / "streamfm"
    return here if here.exists() else ROOT / ".venv" / "bin" / "streamfm"


def train_once(path: Path, out_dir: Path) -> tuple[float, float, float, int, str, float]:
    """(wall s, peak RSS MB, training-loop s, rows learnt, features, CPU s) of one run."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = [
            TIME,
            "-f",
            "%e %M %U %S",
            "-o",
            tf.name,
            str(streamfm_exe()),
            "train",
            str(SPEC),
            "-q",
            "--overwrite",
        ]
        cmd += ["--set", f"source.path={path}", "--set", f"output.dir={out_dir}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        wall, kb, user, system = tf.read().split()[-4:]
    last = json.loads((out_dir / "metrics.json").read_text())[-1]
    feats = re.search(r"([\d,]+) features", proc.stdout)
    return (
        float(wall),
        float(kb) / 1024.0,
        float(last["seconds"]),
        int(last["rows"]),
        feats.group(1) if feats else "?",
        float(user) + float(system),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where data files are kept")
    ap.add_argument("--rows", default="1000000,20000000", help="comma-separated file sizes")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per size (median shown)")
    args = ap.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.rows.split(","))
    work = args.work.resolve()
    folder = work / "memory"

    universe = Universe()
    files = {}
    generated = False
    for rows in sizes:
        files[rows], gen_s = ensure_file(folder, rows, universe)
        generated = generated or gen_s > 0
        size_mb = files[rows].stat().st_size / 1e6
        made = f"generated in {gen_s:.1f} s" if gen_s else "reused"
        print(f"{files[rows]}: {rows:,} rows, {size_mb:.0f} MB ({made})", flush=True)
    gen_peak = peak_rss_mb()
    gen_note = (
        f"generator peak RSS {gen_peak:.0f} MB"
        if generated
        else "files reused from an earlier run, so no generator figure"
    )
    print(gen_note, flush=True)

    results: dict[int, list[tuple]] = {n: [] for n in sizes}
    train_once(files[sizes[0]], work / "runs" / "memory")  # warm-up: numba's on-disk cache
    for r in range(args.repeats):
        for rows in sizes:
            res = train_once(files[rows], work / "runs" / f"memory-{rows}")
            if res[3] != rows:
                raise SystemExit(f"{files[rows]}: learnt {res[3]:,} rows, expected {rows:,}")
            results[rows].append(res)
            print(
                f"run {r + 1}: {rows:>12,} rows {res[0]:7.2f} s {res[1]:6.0f} MB "
                f"(CPU {res[5]:.2f} s, loop {res[2]:.2f} s)",
                flush=True,
            )

    table = []
    for rows in sizes:
        wall = statistics.median(x[0] for x in results[rows])
        mb = statistics.median(x[1] for x in results[rows])
        loop = statistics.median(x[2] for x in results[rows])
        cpu = statistics.median(x[5] for x in results[rows])
        table.append((rows, wall, mb, loop, cpu))
    base_mb = table[0][2]
    lines = [
        "## Memory: peak RSS of one training epoch, 1M vs 20M rows",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        f"Planted-style ratings over one universe of {N_USERS:,} users x {N_ITEMS:,} items "
        "(rank-8 planted FM, power-law popularity, stars 1..5), Parquet written in chunks "
        f"of {CHUNK:,} rows ({gen_note}); the smaller file is the "
        "first rows of the larger. `streamfm train benchmarks/specs/memory_sgd.yaml -q` (SGD, "
        "k 8, one epoch, no validation, chunk cache off) as a subprocess under `/usr/bin/time`; "
        f"one warm-up run, then the median of {args.repeats}. rows/s: whole process (start-up "
        "included) and training loop only (metrics.json `seconds`); CPU s = user + system.",
        "",
        "| rows | features | wall s | CPU s | rows/s (process) | loop s | rows/s (loop) "
        "| peak RSS MB | RSS / smallest |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print()
    print(
        f"{'rows':>12s} {'wall s':>7s} {'rows/s':>11s} {'loop s':>7s} {'loop rows/s':>12s} {'MB':>6s}"
    )
    for rows, wall, mb, loop, cpu in table:
        print(
            f"{rows:>12,} {wall:7.2f} {rows / wall:11,.0f} {loop:7.2f} {rows / loop:12,.0f} "
            f"{mb:6.0f} ({mb / base_mb:.2f}x)"
        )
        feats = results[rows][-1][4]
        lines.append(
            f"| {rows:,} | {feats} | {wall:.2f} | {cpu:.2f} | {rows / wall:,.0f} | {loop:.2f} | "
            f"{rows / loop:,.0f} | {mb:.0f} | {mb / base_mb:.2f} |"
        )
    top_mb = table[-1][2]
    ratio_ok = top_mb <= MAX_RATIO * base_mb
    abs_ok = top_mb < MAX_MB
    verdict = (
        f"Target: peak RSS of {table[-1][0]:,} rows <= {MAX_RATIO} x that of {table[0][0]:,} "
        f"rows: {top_mb / base_mb:.2f}x, {'met' if ratio_ok else 'NOT met'}; "
        f"and < {MAX_MB:.0f} MB: {top_mb:.0f} MB, {'met' if abs_ok else 'NOT met'}."
    )
    print(verdict)
    lines += ["", verdict]
    write_section("memory", "\n".join(lines))


if __name__ == "__main__":
    main()
