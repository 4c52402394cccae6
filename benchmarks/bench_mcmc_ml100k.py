"""MCMC on MovieLens 100K next to myFM's published figures (../shared/data/README.md).

    python benchmarks/bench_mcmc_ml100k.py [--data ../shared/data] [--seeds 0]

Cases (the example specs, their settings myFM's, nothing chosen on a test file):

- u3, user + movie ids, one prior for all features: examples/ml100k-mcmc.yaml (myFM 0.8944);
- the same with a prior per group (users, movies): --set learner.mcmc.group_priors=true
  (myFM 0.8925);
- u3, ids + user / movie side features, a prior per attribute: examples/ml100k-side-mcmc.yaml
  (myFM 0.8855);
- u1, ids + implicit user and movie sets + the rating day ("timeSVD++ flipped"):
  examples/ml100k-time-mcmc.yaml (myFM 0.889).

Rank 10, 200 iterations (300 for the last), burn-in 0. Each spec is trained through
`streamfm.training.loop.train` with its data paths moved under --data by --set. "test RMSE" is
the last record's holdout_rmse: the average of every sample's (clipped) predictions of the test
file, kept while sampling, as libFM and myFM report it. "model file" is the saved model's RMSE on
the same file (its samples_kept thinned samples, what `streamfm predict` uses). With several
--seeds the table shows the median and the range.

Writes the `mcmc-ml100k` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from _report import command_line, machine, write_section
from _specs import DATA_PREFIX, ROOT, data_argument, data_overrides, train_and_score

CASES = (
    ("u3, ids, one prior", "examples/ml100k-mcmc.yaml", [], 0.894),
    (
        "u3, ids, a prior per group",
        "examples/ml100k-mcmc.yaml",
        ["learner.mcmc.group_priors=true"],
        0.8925,
    ),
    (
        "u3, ids + side features, a prior per attribute",
        "examples/ml100k-side-mcmc.yaml",
        [],
        0.8855,
    ),
    ("u1, timeSVD++ flipped (implicit sets + day)", "examples/ml100k-time-mcmc.yaml", [], 0.889),
)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_argument(ap)
    ap.add_argument("--seeds", default="0", help="comma-separated model.seed values")
    ap.add_argument("--only", type=int, default=None, help="run case number N only (0-based)")
    args = ap.parse_args()
    data = (args.data or ROOT / DATA_PREFIX).resolve()
    if not data.is_dir():
        sys.exit(f"{data}: no such folder (pass --data pointing at the datasets)")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="streamfm-mcmc-") as tmp:
        for i, (label, rel, extra, target) in enumerate(CASES):
            if args.only is not None and i != args.only:
                continue
            spec_path = ROOT / rel
            raw = yaml.safe_load(spec_path.read_text())
            runs = []
            for seed in seeds:
                out = Path(tmp) / f"{i}-{seed}"
                sets = data_overrides(raw, data, out) + extra + [f"model.seed={seed}"]
                r = train_and_score(spec_path, sets, data)
                import json

                history = json.loads((out / "metrics.json").read_text())
                r["holdout"] = history[-1]["holdout_rmse"]
                r["iterations"] = history[-1]["iteration"]
                r["per_iter"] = statistics.median(h["seconds_iteration"] for h in history)
                runs.append(r)
                print(
                    f"{label} seed {seed}: test RMSE {r['holdout']:.4f} (model file "
                    f"{r['metrics']['rmse']:.4f}), {r['seconds']:.1f} s",
                    flush=True,
                )
            rows.append((label, rel, extra, target, runs))
    lines = [
        "## MCMC on MovieLens 100K next to myFM's figures",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine()}",
        "",
        "The example specs (settings myFM's: rank 10, init_std 0.1, 200 iterations (300 for "
        "u1), burn-in 0; libFM's hyper-priors; nothing chosen on a test file), trained through "
        "`streamfm.training.loop.train`. **test RMSE**: the average of every sample's clipped "
        "predictions of the test file (the learner's holdout running average, as libFM and myFM "
        "report); *model file*: the saved model (its samples_kept thinned samples) on the same "
        f"file. Seeds: {', '.join(map(str, seeds))} (median and range when several). s: wall time "
        "of `train` (reading, features, all iterations, the test file predicted after each, "
        "saving).",
        "",
        "| case | spec | iterations | s | s/iter | test RMSE | range | model file RMSE "
        "| myFM | target | met |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    verdicts = []
    for label, rel, extra, target, runs in rows:
        vals = [r["holdout"] for r in runs]
        med = statistics.median(vals)
        ok = med <= target
        spec = rel + "".join(f" `--set {e}`" for e in extra)
        lines.append(
            f"| {label} | {spec} | {runs[0]['iterations']} | "
            f"{statistics.median(r['seconds'] for r in runs):.1f} | "
            f"{statistics.median(r['per_iter'] for r in runs):.3f} | **{med:.4f}** | "
            f"{min(vals):.4f} .. {max(vals):.4f} | "
            f"{statistics.median(r['metrics']['rmse'] for r in runs):.4f} | {target} | "
            f"RMSE <= {target} | {'yes' if ok else 'NO'} |"
        )
        verdicts.append(f"{label}: {med:.4f} (target <= {target}: {'met' if ok else 'NOT met'})")
    lines += ["", "; ".join(verdicts) + "."]
    text = "\n".join(lines)
    print()
    print(text)
    if args.only is None:
        write_section("mcmc-ml100k", text)


if __name__ == "__main__":
    main()
