"""The example specs on the real datasets: one training run each, holdout metrics and time.

    python benchmarks/examples.py [--data ../shared/data] [SPEC ...]

Runs examples/ml100k-mf.yaml, examples/frappe.yaml and examples/adult.yaml (or the SPECs given)
through the Python API, `streamfm.pipeline.train(load_spec(path, overrides))`. The specs name their
files as ../shared/data/...; the overrides of source.path and validation.source.path put `--data`
in place of that prefix, and output.dir points to a temporary folder (runs/ is left alone).

Seconds: wall time of `train` (reading, building features, every epoch, the holdout evaluation
after each epoch, saving the model); numba's kernels come from its on-disk cache after a first run
of any spec. Holdout metrics are those of the model `train` returns, on the spec's validation
source (the specs keep the last epoch's model: the holdout chooses nothing).

Writes the `examples` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _report import command_line, machine, write_section

from streamfm.pipeline import train
from streamfm.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ("examples/ml100k-mf.yaml", "examples/frappe.yaml", "examples/adult.yaml")
DATA_PREFIX = "../shared/data"
METRICS = {"regression": ("rmse", "mae"), "classification": ("auc", "logloss", "accuracy")}


def relocate(path: str, data: Path) -> str:
    """`path` with the ../shared/data prefix of the specs replaced by `data`."""
    norm = posixpath.normpath(path)
    if norm == DATA_PREFIX or norm.startswith(DATA_PREFIX + "/"):
        return str(data / posixpath.relpath(norm, DATA_PREFIX))
    return path


def overrides(spec_path: Path, data: Path, out_dir: Path) -> list[str]:
    """`--set` assignments moving the spec's data paths to `data` and its output to `out_dir`."""
    raw = yaml.safe_load(spec_path.read_text()) or {}
    sets = [f"output.dir={out_dir}"]
    for key, section in (
        ("source.path", raw.get("source")),
        ("validation.source.path", (raw.get("validation") or {}).get("source")),
    ):
        path = (section or {}).get("path")
        if isinstance(path, str):
            sets.append(f"{key}={relocate(path, data)}")
        elif isinstance(path, list):
            sets.append(f"{key}=[{', '.join(relocate(p, data) for p in path)}]")
    return sets


def first(path: str | list[str]) -> Path:
    return Path(path if isinstance(path, str) else path[0])


def shown(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies below it, for the table."""
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def run(spec_path: Path, data: Path, out_dir: Path) -> dict:
    spec = load_spec(spec_path, overrides(spec_path, data, out_dir))
    if spec.validation.source is None:
        raise SystemExit(f"{spec_path}: no validation.source, nothing to report")
    t0 = time.perf_counter()
    result = train(spec)
    seconds = time.perf_counter() - t0
    names = METRICS[spec.task]
    scores = result.model.evaluate(spec.validation.source, names)
    return {
        "spec": shown(spec_path, ROOT),
        "train": shown(first(spec.source.path), data),
        "holdout": shown(first(spec.validation.source.path), data),
        "task": spec.task,
        "rows": result.summary["rows_read"],
        "holdout_rows": scores["rows"],
        "epochs": result.summary["epochs"],
        "k": spec.model.k,
        "seconds": seconds,
        "metrics": {n: scores[n] for n in names},
    }


def metric_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the folder of the datasets (default: ../shared/data from the project root)",
    )
    ap.add_argument("specs", nargs="*", type=Path, help=f"default: {' '.join(SPECS)}")
    args = ap.parse_args()

    data = (args.data or ROOT / DATA_PREFIX).resolve()
    if not data.is_dir():
        sys.exit(f"{data}: no such folder (pass --data pointing at the datasets)")
    specs = [p.resolve() for p in args.specs] or [ROOT / s for s in SPECS]

    rows = []
    with tempfile.TemporaryDirectory(prefix="streamfm-examples-") as tmp:
        for spec_path in specs:
            r = run(spec_path, data, Path(tmp) / spec_path.stem)
            rows.append(r)
            print(
                f"{r['spec']:26s} {r['rows']:>7,} rows {r['epochs']:>3} epochs "
                f"{r['seconds']:6.2f} s  {r['holdout']}: {metric_text(r['metrics'])}",
                flush=True,
            )

    lines = [
        "## Examples: the specs of examples/ on the real datasets",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "One run per spec through `streamfm.pipeline.train`. Seconds: wall time of `train` (reading, "
        "features, all epochs, the holdout evaluation after each epoch, saving). Metrics: the "
        "returned model (the last epoch's; the holdout chooses nothing) on the holdout file. "
        "Hyper-parameters were chosen on a split of each training file only.",
        "",
        "| spec | train file | rows | holdout | holdout rows | k | epochs | s | holdout metrics |",
        "|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['spec']} | {r['train']} | {r['rows']:,} | {r['holdout']} | "
            f"{r['holdout_rows']:,} | {r['k']} | {r['epochs']} | {r['seconds']:.2f} | "
            f"{metric_text(r['metrics'])} |"
        )
    write_section("examples", "\n".join(lines))


if __name__ == "__main__":
    main()
