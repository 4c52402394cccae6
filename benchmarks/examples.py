"""The example specs on the real datasets: one training run each, holdout metrics and time.

    python benchmarks/examples.py [--data ../shared/data] [SPEC ...]

Runs examples/ml100k-mf.yaml, examples/frappe.yaml and examples/adult.yaml (or the SPECs given)
through the Python API, `streamfm.training.loop.train(load_spec(path, overrides))`. The specs name their
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
import sys
import tempfile
from pathlib import Path

import yaml
from _report import command_line, machine, write_section
from _specs import (
    DATA_PREFIX,
    ROOT,
    data_argument,
    data_overrides,
    metric_text,
    shown,
    train_and_score,
)

SPECS = ("examples/ml100k-mf.yaml", "examples/frappe.yaml", "examples/adult.yaml")


def run(spec_path: Path, data: Path, out_dir: Path) -> dict:
    raw = yaml.safe_load(spec_path.read_text()) or {}
    return {
        "spec": shown(spec_path, ROOT),
        **train_and_score(spec_path, data_overrides(raw, data, out_dir), data),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(ap)
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
                f"{r['seconds']:6.2f} s  {r['test']}: {metric_text(r['metrics'])}",
                flush=True,
            )

    lines = [
        "## Examples: the specs of examples/ on the real datasets",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "One run per spec through `streamfm.training.loop.train`. Seconds: wall time of `train` (reading, "
        "features, all epochs, the holdout evaluation after each epoch, saving). Metrics: the "
        "returned model (the last epoch's; the holdout chooses nothing) on the holdout file. "
        "Hyper-parameters were chosen on a split of each training file only.",
        "",
        "| spec | train file | rows | holdout | holdout rows | k | epochs | s | holdout metrics |",
        "|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['spec']} | {r['train']} | {r['rows']:,} | {r['test']} | "
            f"{r['test_rows']:,} | {r['k']} | {r['epochs']} | {r['seconds']:.2f} | "
            f"{metric_text(r['metrics'])} |"
        )
    write_section("examples", "\n".join(lines))


if __name__ == "__main__":
    main()
