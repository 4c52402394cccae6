"""Running example specs on the shared datasets: path relocation and train-then-score."""

from __future__ import annotations

import argparse
import posixpath
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamfm.spec import load_spec
from streamfm.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
DATA_PREFIX = "../shared/data"
METRICS = {"regression": ("rmse", "mae"), "classification": ("auc", "logloss", "accuracy")}


def relocate(path: str, data: Path) -> str:
    """`path` with the ../shared/data prefix of the specs replaced by `data`."""
    norm = posixpath.normpath(path)
    if norm == DATA_PREFIX or norm.startswith(DATA_PREFIX + "/"):
        return str(data / posixpath.relpath(norm, DATA_PREFIX))
    return path


def path_settings(raw: Any, prefix: str = "") -> list[tuple[str, str | list[str]]]:
    """(dotted key, value) of every `path` in the spec: sources, validation, side tables."""
    found: list[tuple[str, str | list[str]]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            where = f"{prefix}{key}"
            if key == "path" and isinstance(value, str | list):
                found.append((where, value))
            else:
                found.extend(path_settings(value, where + "."))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            found.extend(path_settings(value, f"{prefix}{i}."))
    return found


def data_overrides(
    raw: dict, data: Path, out_dir: Path, change: Callable[[str], str] = lambda p: p
) -> list[str]:
    """`--set` assignments: every data path moved under `data` (then `change`d), output in out_dir."""
    sets = [f"output.dir={out_dir}"]
    for key, value in path_settings(raw):
        if isinstance(value, str):
            sets.append(f"{key}={change(relocate(value, data))}")
        else:
            moved = (change(relocate(p, data)) for p in value)
            sets.append(f"{key}=[{', '.join(moved)}]")
    return sets


def shown(path: str | Path | list[str], base: Path) -> str:
    """A path (the first of a list) relative to `base` when it lies below it, for tables."""
    p = Path(path[0] if isinstance(path, list) else path)
    return p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)


def train_and_score(spec_path: Path, sets: list[str], data: Path) -> dict[str, Any]:
    """Train the spec with `sets`, then score the returned model on its validation source."""
    spec = load_spec(spec_path, sets)
    if spec.validation.source is None:
        raise SystemExit(f"{spec_path}: no validation.source, nothing to report")
    t0 = time.perf_counter()
    result = train(spec)
    seconds = time.perf_counter() - t0
    names = METRICS[spec.task]
    scores = result.model.evaluate(spec.validation.source, names)
    return {
        "train": shown(spec.source.path, data),
        "test": shown(spec.validation.source.path, data),
        "task": spec.task,
        "rows": result.summary["rows_read"],
        "test_rows": scores["rows"],
        "epochs": result.summary["epochs"],
        "k": spec.model.k,
        "seconds": seconds,
        "metrics": {n: scores[n] for n in names},
    }


def metric_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def data_argument(ap: argparse.ArgumentParser) -> None:
    """--data, the folder of the shared datasets."""
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the folder of the datasets (default: ../shared/data from the project root)",
    )
