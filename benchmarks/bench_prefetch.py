"""Reading ahead (`source.prefetch`) against sequential reading, whole process, side by side.

    python benchmarks/bench_prefetch.py [--rows 20000000] [--rounds 3] [--work .bench-data]

Data: the planted-style ratings of benchmarks/bench_memory.py (100,000 users x 50,000 items,
rank-8 planted FM) as Parquet and the same rows as libFM text (user ids 0.., item ids after
them), `rows` rows each, generated once into --work; and the event log of `make demo`
(examples/events.yaml on data/events, 1M events with the mf, implicit, time and side-table
builders; generated if absent).

Each case runs `streamfm train SPEC -q` under /usr/bin/time with `--set source.prefetch=0` and
`=2` in turn, `rounds` times (one warm-up run first: numba's cache); medians. rows/s counts the
rows learnt over the whole process's wall time. The models of the two settings are compared
byte for byte (they must be the same). Writes the `prefetch` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _planted import DEFAULT_WORK, ROOT
from _report import command_line, machine, write_section
from bench_memory import Universe, ensure_file, streamfm_exe

TIME = "/usr/bin/time"
SPEC = ROOT / "benchmarks" / "specs" / "memory_sgd.yaml"
EVENTS_SPEC = ROOT / "examples" / "events.yaml"


def ensure_libfm(parquet: Path) -> Path:
    """The rows of `parquet` as libFM text (rating user:1 item:1), written once in batches."""
    import numpy as np
    import pyarrow.parquet as pq

    path = parquet.with_suffix(".libfm")
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 20):
            u = batch.column("user").to_numpy().astype(np.int64)
            i = batch.column("item").to_numpy().astype(np.int64) + 100_000
            rating = batch.column("rating").to_numpy()
            lines = [f"{r:g} {a}:1 {b}:1\n" for r, a, b in zip(rating, u, i, strict=True)]
            out.writelines(lines)
    tmp.replace(path)
    return path


def libfm_spec(libfm: Path) -> Path:
    """memory_sgd.yaml's learner on the libFM text file (target and features from the file)."""
    import yaml

    spec = yaml.safe_load(SPEC.read_text())
    spec["source"] = {"path": str(libfm)}
    del spec["target"], spec["features"]
    path = libfm.with_name("libfm_sgd.yaml")
    path.write_text(yaml.safe_dump(spec))
    return path


def run(spec: Path, sets: list[str], out: Path) -> tuple[float, float, str]:
    """(wall s, CPU s, sha256 of the model file's arrays) of one whole process (the JSON part
    differs: it holds the spec and timings)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = [TIME, "-f", "%e %U %S", "-o", tf.name, str(streamfm_exe()), "train", str(spec)]
        cmd += ["-q", "--overwrite", "--set", f"output.dir={out}"]
        for s in sets:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        wall, user, system = tf.read().split()[-3:]
    from streamfm.store.archive import read_archive

    digest = hashlib.sha256()
    for name, array in sorted(read_archive(out / "model.sfm")[1].items()):
        digest.update(name.encode() + array.tobytes())
    return float(wall), float(user) + float(system), digest.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = ap.parse_args()

    folder = args.work / "prefetch"
    parquet, _ = ensure_file(folder, args.rows, Universe())
    libfm = ensure_libfm(parquet)
    if not (ROOT / "data" / "events" / "train.parquet").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "generate_events.py"), "data/events"],
            cwd=ROOT,
            check=True,
        )
    cases = [
        (f"planted Parquet, {args.rows:,} rows", SPEC, [f"source.path={parquet}"], args.rows),
        (f"planted libFM text, {args.rows:,} rows", libfm_spec(libfm), [], args.rows),
        ("event log (examples/events.yaml), 1 epoch", EVENTS_SPEC, ["learner.epochs=1"], None),
    ]
    rows_md = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for name, spec, sets, n_rows in cases:
            out = Path(tmp) / "run"
            run(spec, sets, out)  # warm-up
            if n_rows is None:
                import json

                n_rows = json.loads((out / "metrics.json").read_text())[-1]["rows"]
            walls: dict[int, list[float]] = {0: [], 2: []}
            cpus: dict[int, list[float]] = {0: [], 2: []}
            digests: dict[int, set[str]] = {0: set(), 2: set()}
            for _ in range(args.rounds):
                for depth in (0, 2):
                    wall, cpu, digest = run(spec, [*sets, f"source.prefetch={depth}"], out)
                    walls[depth].append(wall)
                    cpus[depth].append(cpu)
                    digests[depth].add(digest)
            w0, w2 = statistics.median(walls[0]), statistics.median(walls[2])
            same = digests[0] == digests[2] and len(digests[0]) == 1
            print(
                f"{name}: sequential {w0:.2f} s, prefetch 2 {w2:.2f} s, x{w0 / w2:.2f}, same {same}"
            )
            rows_md.append(
                f"| {name} | {n_rows / w0:,.0f} | {n_rows / w2:,.0f} | {w0 / w2:.2f} | "
                f"{statistics.median(cpus[0]):.1f} | {statistics.median(cpus[2]):.1f} | "
                f"{'yes' if same else 'NO'} |"
            )
    body = "\n".join(
        [
            "## Reading ahead: `source.prefetch` 2 against sequential reading (whole process)",
            "",
            f"Command: `{command_line()}`  ",
            f"Machine: {machine()}",
            "",
            "SGD, one epoch, k 8; Parquet and libFM text hold the same planted-style rows (user "
            "and item one-hot). Each round runs both settings in turn; one warm-up run; medians "
            f"of {args.rounds}. rows/s: rows learnt / whole-process wall (start-up included). "
            "CPU s: user + system (reading ahead adds no work, it overlaps it). same model: the "
            "model files of both settings have the same sha256.",
            "",
            "| case | sequential rows/s | prefetch 2 rows/s | speed-up | sequential CPU s | "
            "prefetch CPU s | same model |",
            "|---|---:|---:|---:|---:|---:|---|",
            *rows_md,
        ]
    )
    write_section("prefetch", body)
    print(body)


if __name__ == "__main__":
    main()
