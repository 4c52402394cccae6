"""Peak memory of training when the *state* is large: 10M distinct categorical values, and 2M
users with causal implicit histories, before and after a change.

    python benchmarks/bench_state_memory.py --before REV [--work .bench-data] [--values 10000000]
        [--users 2000000]

Both workloads train one epoch of SGD, k 8, with checkpoints on (the final checkpoint and the
model file are written: that is where a state assembled in memory costs the most), under
`/usr/bin/time`:

- **distinct values**: `values` rows, each of a new user ("u0000000", ...), one categorical
  builder; every row allocates a feature.
- **implicit users**: `users` users with 2 events each (items drawn from 10,000), builders
  categorical user, categorical item and `implicit` (key user, items item, max_items 200):
  each user keeps 2 items of a bound of 200.

"model + vocabulary" is what the run must hold at the least: the parameters of the features
seen (w, V float32, group int32) and, per key, its UTF-8 text, an 8-byte offset and its id;
for the histories, the items stored (int32) and a count per user. The target of issue 13 is
peak RSS <= 1.5 x that, on top of the cost of any run (the same run on its first 200,000 rows).

`--before REV` runs the same workloads with the code of git revision REV (extracted with
`git archive` into the work folder) next to the working tree's code. Writes the
`state-memory` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _planted import DEFAULT_WORK, ROOT
from _report import command_line, machine, write_section

TIME = "/usr/bin/time"
K = 8
MAX_ITEMS = 200
N_ITEMS = 10_000
CHUNK = 1_000_000
FLOOR_ROWS = 200_000  # three batches of 65,536 rows


def key_column(prefix: str, ids: np.ndarray, width: int) -> pa.Array:
    """ "u0000042"-style keys of fixed width."""
    text = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), width, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), text, "")


def write_parquet(path: Path, chunks) -> None:
    tmp = path.with_suffix(".tmp")
    writer = None
    for table in chunks:
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=1 << 17)
    writer.close()
    tmp.replace(path)


def distinct_values_file(folder: Path, n: int) -> Path:
    path = folder / f"distinct-{n}.parquet"
    if not path.exists():
        rng = np.random.default_rng(0)
        width = len(str(n - 1))

        def chunks():
            for start in range(0, n, CHUNK):
                ids = np.arange(start, min(start + CHUNK, n))
                rating = rng.integers(1, 6, len(ids)).astype(np.float32)
                yield pa.table({"user": key_column("u", ids, width), "rating": rating})

        write_parquet(path, chunks())
    return path


def implicit_users_file(folder: Path, users: int) -> Path:
    path = folder / f"implicit-{users}.parquet"
    if not path.exists():
        rng = np.random.default_rng(1)
        width = len(str(users - 1))

        def chunks():
            for start in range(0, users, CHUNK // 2):
                ids = np.arange(start, min(start + CHUNK // 2, users))
                u = np.repeat(ids, 2)
                items = rng.integers(0, N_ITEMS, len(u))
                rating = rng.integers(1, 6, len(u)).astype(np.float32)
                yield pa.table(
                    {
                        "user": key_column("u", u, width),
                        "item": key_column("i", items, 5),
                        "rating": rating,
                    }
                )

        write_parquet(path, chunks())
    return path


def spec(path: Path, implicit: bool) -> dict:
    features: list[dict] = [{"type": "categorical", "columns": ["user"]}]
    if implicit:
        features += [
            {"type": "categorical", "columns": ["item"]},
            {"type": "implicit", "key": "user", "items": "item", "max_items": MAX_ITEMS},
        ]
    return {
        "source": {"path": str(path)},
        "target": "rating",
        "features": features,
        "model": {"k": K, "seed": 0},
        "learner": {"optimizer": "sgd", "learning_rate": 0.01, "epochs": 1},
        "cache": {"enabled": False},
    }


def least_bytes(n_values: int, key_chars: int, implicit_users: int = 0) -> int:
    """Bytes of model + vocabulary (see the module docstring) for `n_values` keyed features."""
    per_feature = 4 + 4 * K + 4  # w, V, group
    per_key = key_chars + 8 + 8  # text, offset, id
    histories = implicit_users * (2 * 4 + 8 + key_chars + 16)  # 2 items, count, key of user
    return n_values * (per_feature + per_key) + histories


def run(code: Path, spec_body: dict, out: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, summary line) of `streamfm train` with the package at `code`."""
    out.mkdir(parents=True, exist_ok=True)
    # A fresh output folder each time (train refuses to replace a previous run's output, and
    # the code of --before may not know --overwrite).
    shutil.rmtree(out / "run", ignore_errors=True)
    spec_path = out / "spec.yaml"
    body = {**spec_body, "output": {"dir": str(out / "run")}}
    spec_path.write_text(json.dumps(body))
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = [TIME, "-f", "%e %M", "-o", tf.name, sys.executable, "-c"]
        cmd += ["import streamfm.cli as c; c.run()", "train", str(spec_path), "-q"]
        env = {"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
        wall, kb = tf.read().split()[-2:]
    return float(wall), float(kb) / 1024.0, proc.stdout.splitlines()[0]


def floor_mb(code: Path, spec_body: dict, tiny: Path, out: Path) -> float:
    """Peak RSS of the same run on the first FLOOR_ROWS rows (MB): the fixed cost of any run
    (imports, compiled kernels) and of the batches in flight (Arrow buffers, chunks), which
    the state comes on top of (the state of those rows is ~1/50 of the whole)."""
    return run(code, {**spec_body, "source": {"path": str(tiny)}}, out)[1]


def first_rows(path: Path, n: int) -> Path:
    head = path.with_name(f"{path.stem}-head{n}.parquet")
    if not head.exists():
        pf = pq.ParquetFile(path)
        rows = pa.concat_tables(pf.read_row_group(g) for g in range(min(3, pf.num_row_groups)))
        pq.write_table(rows.slice(0, n), head)
    return head


def extract(rev: str, work: Path) -> Path:
    """The package of git revision `rev`, extracted under `work` (reused)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = work / f"code-{sha}"
    if not (dest / "streamfm").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "streamfm"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--before", help="git revision to compare with (e.g. main)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--values", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=2_000_000)
    args = ap.parse_args()
    work = args.work.resolve() / "state-memory"
    work.mkdir(parents=True, exist_ok=True)
    files = {
        "distinct": distinct_values_file(work, args.values),
        "implicit": implicit_users_file(work, args.users),
    }
    codes = {"after (this tree)": ROOT}
    if args.before:
        codes = {f"before ({args.before})": extract(args.before, work), **codes}
    width = len(str(args.values - 1)) + 1
    uwidth = len(str(args.users - 1)) + 1
    least = {
        "distinct": least_bytes(args.values, width),
        "implicit": least_bytes(args.users + N_ITEMS, uwidth, implicit_users=args.users),
    }
    rows = []
    for label, code in codes.items():
        for name, implicit in (("distinct", False), ("implicit", True)):
            out = work / "runs" / f"{name}-{label.split()[0]}"
            body = spec(files[name], implicit)
            base = floor_mb(code, body, first_rows(files[name], FLOOR_ROWS), out / "floor")
            wall, mb, summary = run(code, body, out)
            need = least[name] / 1e6
            ratio = (mb - base) / need
            rows.append((label, name, wall, mb, base, need, ratio, summary))
            print(
                f"{label:>22} {name:>9}: {wall:7.1f} s  peak {mb:7.0f} MB  floor {base:4.0f} MB"
                f"  model+vocabulary {need:6.0f} MB  (peak - floor) / that = {ratio:.2f}",
                flush=True,
            )
    what = {
        "distinct": f"{args.values:,} distinct values (one categorical builder)",
        "implicit": f"{args.users:,} users x 2 events, implicit max_items {MAX_ITEMS}",
    }
    lines = [
        "## State memory: 10M distinct values, 2M users with implicit histories",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "One epoch of SGD (k 8, checkpoints on: the final checkpoint and the model file are "
        "written) as a subprocess under `/usr/bin/time`, once per workload and code version. "
        "*model + vocabulary*: w, V and group of every feature seen, each key's UTF-8 text with "
        "an 8-byte offset and an 8-byte id, and for histories the items stored (int32) with a "
        "count per user: what any run must hold. *floor*: peak RSS of the same run on the first "
        f"{FLOOR_ROWS:,} rows (imports, compiled kernels, the batches in flight: the cost of "
        "any run whatever its state). "
        "Target: (peak - floor) <= 1.5 x model + vocabulary.",
        "",
        "| code | workload | wall s | peak RSS MB | floor MB | model + vocabulary MB "
        "| (peak - floor) / (model + vocabulary) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, name, wall, mb, base, need, ratio, _summary in rows:
        lines.append(
            f"| {label} | {what[name]} | {wall:.1f} | {mb:,.0f} | {base:.0f} | {need:,.0f} "
            f"| {ratio:.2f} |"
        )
    write_section("state-memory", "\n".join(lines))


if __name__ == "__main__":
    main()
