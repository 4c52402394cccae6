"""Data-parallel training on a local Dask cluster: 1 vs 2 workers (and one process) on 20M rows.

    python benchmarks/bench_distributed.py [--work .bench-data] [--rows 20000000] [--files 8]
                                           [--epochs 1] [--sync 500000]

Data: the planted-style ratings of bench_memory.py (100,000 users x 50,000 items, rank 8), the
first `--rows` rows dealt into `--files` Parquet files, and 1M later rows as the test file;
generated once into WORK/distributed/. Each case trains benchmarks/specs/memory_sgd.yaml with
AdaGrad (learning_rate 0.1, the epochs given) and the test file as holdout: one process
(`streamfm.train`), then `train_distributed` on `local:1` and `local:2` (worker processes
started for the run, included in the time). rows/s: learnt rows over the wall time of the whole
run. One untimed warm-up run on the test file first, so that numba's on-disk cache holds the
kernels (else the first case compiles them: the first figures of this benchmark had one process
at 23.3 s for what takes 6-7 s warm). Writes the `distributed` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.parquet as pq
from _planted import DEFAULT_WORK
from _report import command_line, machine, write_section
from bench_memory import CHUNK, SPEC, Universe


def ensure_files(folder: Path, rows: int, files: int) -> tuple[list[Path], Path]:
    """`files` training files holding the first `rows` rows, and a 1M-row test file."""
    folder.mkdir(parents=True, exist_ok=True)
    universe = Universe()
    paths = [folder / f"train-{rows}-{i:02d}.parquet" for i in range(files)]
    test = folder / "test.parquet"
    per_file = rows // files
    chunks_per_file = max(1, per_file // CHUNK)
    if not all(p.exists() for p in paths):
        for i, path in enumerate(paths):
            writer = None
            for j in range(chunks_per_file):
                table = universe.chunk(i * chunks_per_file + j, per_file // chunks_per_file)
                if writer is None:
                    writer = pq.ParquetWriter(path.with_suffix(".tmp"), table.schema)
                writer.write_table(table, row_group_size=1 << 17)
            writer.close()
            path.with_suffix(".tmp").replace(path)
    if not test.exists():
        pq.write_table(universe.chunk(10_000, 1_000_000), test)
    return paths, test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sync", type=int, default=500_000, help="distributed.sync_every_rows")
    args = ap.parse_args()
    from streamfm.distributed import train_distributed
    from streamfm.spec import load_spec
    from streamfm.training.loop import train

    folder = args.work.resolve() / "distributed"
    paths, test = ensure_files(folder, args.rows, args.files)
    sets = [
        f"source.path={folder}/train-{args.rows}-*.parquet",
        f"validation.source.path={test}",
        "learner.optimizer=adagrad",
        "learner.learning_rate=0.1",
        f"learner.epochs={args.epochs}",
        f"distributed.sync_every_rows={args.sync}",
        "checkpoint.enabled=false",
    ]
    warm = load_spec(SPEC, [*sets, f"source.path={test}", f"output.dir={folder}/runs/warm-up"])
    train(warm.model_copy(update={"distributed": None}))
    rows = [
        "| run | workers | rows learnt | wall s | rows/s | test RMSE |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, cluster in (
        ("one process", None),
        ("Dask local:1", "local:1"),
        ("Dask local:2", "local:2"),
    ):
        spec = load_spec(SPEC, [*sets, f"output.dir={folder}/runs/{label.replace(' ', '_')}"])
        t0 = time.perf_counter()
        if cluster is None:
            result = train(spec.model_copy(update={"distributed": None}))
        else:
            result = train_distributed(spec, cluster)
        wall = time.perf_counter() - t0
        learnt = result.summary["rows_learnt"]
        rmse = result.history[-1]["holdout_rmse"]
        workers = 1 if cluster is None else int(cluster.split(":")[1])
        line = (
            f"| {label} | {workers} | {learnt:,} | {wall:.1f} | {learnt / wall:,.0f} | {rmse:.4f} |"
        )
        rows.append(line)
        print(line, flush=True)
    body = "\n".join(
        [
            "## Distributed: one process vs a local Dask cluster of 1 and 2 workers",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            f"{args.rows:,} planted-style ratings in {args.files} Parquet files (bench_memory.py's "
            f"universe), 1M test rows; memory_sgd.yaml with AdaGrad lr 0.1, {args.epochs} "
            f"epoch(s), sync_every_rows {args.sync:,}. Wall time of the whole run, worker start-up "
            "and the vocabulary pass included, after an untimed warm-up run (numba's cache); "
            "the machine has 2 cores, so 2 workers is its limit, and one process already uses "
            "both (it reads and builds batches in a thread beside the learning one).",
            "",
            *rows,
        ]
    )
    write_section("distributed", body)


if __name__ == "__main__":
    main()
