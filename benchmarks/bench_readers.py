"""Reader throughput: the planted train files read fully through `open_source`.

    python benchmarks/bench_readers.py [--shared ../shared] [--work .bench-data] [--repeat 3]

For train.libfm, train.csv and train.parquet: one warm-up read (numba compilation, page cache),
then the best of `--repeat` full reads. MB/s counts the file's bytes on disk (Parquet is
compressed, so compare formats by rows/s). Writes the `readers` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _planted import ensure_planted, planted_arguments
from _report import command_line, machine, peak_rss_mb, write_section

from streamfm.config import SourceConfig
from streamfm.sources import open_source

FILES = ("train.libfm", "train.csv", "train.parquet")


def read_once(path: Path, batch_size: int) -> tuple[float, int, int]:
    """(seconds, rows, batches) of one full read of `path`."""
    src = open_source(SourceConfig(path=str(path), batch_size=batch_size))
    t0 = time.perf_counter()
    rows = batches = 0
    for batch, _pos in src.batches():
        rows += batch.num_rows
        batches += 1
    return time.perf_counter() - t0, rows, batches


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    planted_arguments(ap)
    ap.add_argument("--repeat", type=int, default=3, help="timed reads per file (best is kept)")
    ap.add_argument("--batch-size", type=int, default=65536)
    args = ap.parse_args()

    folder = ensure_planted(args.shared, args.work)
    rows_out = []
    for name in FILES:
        path = folder / name
        size = path.stat().st_size
        read_once(path, args.batch_size)  # warm-up: compile, fill the page cache
        best, rows, batches = min(read_once(path, args.batch_size) for _ in range(args.repeat))
        fmt = open_source(SourceConfig(path=str(path))).format
        rows_out.append((name, fmt, size, rows, batches, best))
        print(
            f"{name:14s} {fmt:8s} {size / 1e6:7.1f} MB {rows:>10,} rows {best:7.3f} s "
            f"{size / 1e6 / best:8.1f} MB/s {rows / best / 1e6:6.2f} M rows/s",
            flush=True,
        )

    lines = [
        "## Readers: full reads of the planted train files through `open_source`",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        f"One warm-up read (numba compilation, page cache), then the best of {args.repeat}; "
        f"batch_size {args.batch_size:,}, all columns. MB/s counts the bytes of the file on disk "
        "(Parquet is compressed: compare formats by rows/s).",
        "",
        "| file | format | MB | rows | batches | s | MB/s | M rows/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, fmt, size, rows, batches, best in rows_out:
        lines.append(
            f"| {name} | {fmt} | {size / 1e6:.1f} | {rows:,} | {batches} | {best:.3f} | "
            f"{size / 1e6 / best:.0f} | {rows / best / 1e6:.2f} |"
        )
    lines += ["", f"Peak RSS of the run: {peak_rss_mb():.0f} MB."]
    write_section("readers", "\n".join(lines))
    print(f"peak RSS {peak_rss_mb():.0f} MB; wrote the 'readers' section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
