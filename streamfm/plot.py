"""`streamfm plot`: a run in pictures (matplotlib, the optional `plot` extra).

One figure: the learning curves (progressive, windowed and holdout metrics over the rows
learnt, from the history the model file keeps); for classification, the ROC curve and the
calibration (reliability) curve on labelled rows (the spec's validation source, or `--data`);
and the importance of every feature group (mean |w| and mean |v| of its features).
The numbers behind each panel come from the functions here, which need no matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamfm.errors import SpecError, StreamFMError

PANEL = (5.0, 3.6)  # inches per panel


def learning_curves(history: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list, list]]]:
    """{metric: {series: (rows, values)}} with series "progressive", "window", "holdout"
    (each present when the history has it); rows are the rows learnt at each record."""
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for rec in history:
        for key, value in rec.items():
            if not isinstance(value, float) or key == "seconds":
                continue
            series, _, metric = key.partition("_")
            if series not in ("window", "holdout"):
                series, metric = "progressive", key
            rows, values = out.setdefault(metric, {}).setdefault(series, ([], []))
            rows.append(rec["rows"])
            values.append(value)
    return out


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of every threshold, from (0, 0) to (1, 1);
    tied scores make one step (so the area under the points is the AUC, ties counting 1/2)."""
    y = np.asarray(y, dtype=bool)
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="stable")
    ps, ys = np.asarray(p)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last index of every distinct score
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    npos, nneg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / nneg], np.r_[0.0, tp / npos]


def roc_area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC points (trapezoids): the AUC."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def calibration_bins(
    y: np.ndarray, p: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted probability, fraction of positives, rows) of the non-empty bins of equal
    width over [0, 1]."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_p = np.bincount(which, weights=p, minlength=bins)
    mean_y = np.bincount(which, weights=y, minlength=bins)
    used = count > 0
    return mean_p[used] / count[used], mean_y[used] / count[used], count[used]


def group_importance(model) -> list[tuple[str, float, float]]:
    """(group, mean |w|, mean |v|) of every feature group of a TrainedModel."""
    from streamfm.inspect import _groups

    groups = _groups(model.pipeline, model.learner.params, 0, None)
    return [(g["name"], g["mean_abs_w"], g["mean_norm_v"]) for g in groups]


def labelled_predictions(model, data: str | None = None):
    """(y, predictions) on labelled rows: `data` (read like the training data), else the
    spec's validation source; None when there is neither."""
    if data is not None:
        source = model.source_config(data)
    elif model.spec.validation.source is not None:
        source = model.spec.validation.source
    else:
        return None
    ys, ps = [], []
    for chunk, y in model.holdout_chunks(source):
        ys.append(y)
        ps.append(model.learner.predict(chunk))
    if not ys:
        return None
    return np.concatenate(ys), np.concatenate(ps)


def model_of(path: str | Path) -> tuple[Any, Path]:
    """The TrainedModel of a run folder (its model.sfm, or its one .sfm file) or a model file."""
    from streamfm.store.trained import TrainedModel

    path = Path(path)
    if path.is_dir():
        candidates = (
            [path / "model.sfm"] if (path / "model.sfm").exists() else sorted(path.glob("*.sfm"))
        )
        if len(candidates) != 1:
            raise SpecError(
                f"{path}: expected a run folder holding one model file (*.sfm), found "
                f"{len(candidates)}; give the model file"
            )
        path = candidates[0]
    return TrainedModel.load(path), path


def plot_run(path: str | Path, output: str | Path | None = None, data: str | None = None) -> Path:
    """Draw the figure of a run folder or model file into `output` (default: plot.png next to
    the model); returns the file written. The format follows the suffix (.png, .svg, .pdf)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise StreamFMError(
            "streamfm plot needs matplotlib: pip install 'streamfm[plot]'"
        ) from None
    model, model_path = model_of(path)
    output = Path(output) if output is not None else model_path.with_name("plot.png")
    curves = learning_curves(model.history)
    labelled = labelled_predictions(model, data) if model.task == "classification" else None
    importance = group_importance(model)
    n = len(curves) + (2 if labelled is not None else 0) + 1
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL[0] * cols, PANEL[1] * rows), squeeze=False)
    panels = iter(axes.ravel())
    styles = {"progressive": "-", "window": ":", "holdout": "-o"}
    for metric, series in curves.items():
        ax = next(panels)
        for name, (x, v) in series.items():
            ax.plot(x, v, styles[name], label=name, markersize=3)
        ax.set_title(metric)
        ax.set_xlabel("rows learnt")
        ax.legend()
    if labelled is not None:
        y, p = labelled
        ax = next(panels)
        fpr, tpr = roc_points(y, p)
        area = roc_area(fpr, tpr)
        ax.plot(fpr, tpr, label=f"AUC {area:.4f}")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(
            title=f"ROC ({len(y):,} rows)",
            xlabel="false positive rate",
            ylabel="true positive rate",
        )
        ax.legend()
        ax = next(panels)
        mean_p, frac, _count = calibration_bins(y, p)
        ax.plot(mean_p, frac, "-o", markersize=3)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(
            title="calibration", xlabel="mean predicted P(class 1)", ylabel="fraction of class 1"
        )
    ax = next(panels)
    names = [g for g, _, _ in importance]
    pos = np.arange(len(names))
    ax.barh(pos - 0.2, [w for _, w, _ in importance], height=0.4, label="mean |w|")
    ax.barh(pos + 0.2, [v for _, _, v in importance], height=0.4, label="mean |v|")
    ax.set_yticks(pos, [name if len(name) <= 24 else name[:23] + "…" for name in names])
    ax.invert_yaxis()
    ax.set_title("feature groups")
    ax.legend()
    for ax in panels:
        ax.axis("off")
    fig.suptitle(f"{model_path}  ({model.task}, k={model.learner.params.k})")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
