"""`streamfm plot`: the numbers behind the panels against references, and the image."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from reference import auc

import streamfm
from streamfm.datasets import make_event_log
from streamfm.plot import calibration_bins, learning_curves, plot_run, roc_area, roc_points


def test_learning_curves_split_the_history_by_metric_and_series():
    history = [
        {
            "kind": "cadence",
            "epoch": 1,
            "rows": 50,
            "seconds": 0.1,
            "rmse": 1.5,
            "window_rmse": 1.4,
        },
        {
            "kind": "epoch",
            "epoch": 1,
            "rows": 100,
            "seconds": 0.2,
            "rmse": 1.2,
            "holdout_rmse": 1.3,
        },
    ]
    curves = learning_curves(history)
    assert curves == {
        "rmse": {
            "progressive": ([50, 100], [1.5, 1.2]),
            "window": ([50], [1.4]),
            "holdout": ([100], [1.3]),
        }
    }


def test_roc_area_is_the_auc_ties_included():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    p = np.round(rng.random(500) * 0.5 + 0.4 * y, 2)  # many ties
    fpr, tpr = roc_points(y, p)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert roc_area(fpr, tpr) == pytest.approx(auc(y.astype(int), p), abs=1e-12)


def test_calibration_bins_are_means_per_bin():
    p = np.array([0.05, 0.07, 0.5, 0.55, 0.99, 1.0])
    y = np.array([0, 1, 1, 1, 0, 1])
    mean_p, frac, count = calibration_bins(y, p, bins=10)
    np.testing.assert_allclose(mean_p, [0.06, 0.525, 0.995])  # [0, .1), [.5, .6), [.9, 1]
    np.testing.assert_allclose(frac, [0.5, 1, 0.5])
    assert count.tolist() == [2, 2, 2]


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_plot_of_a_run(tmp_path, task):
    pytest.importorskip("matplotlib")
    events, _ = make_event_log(n_users=30, n_items=20, n_events=800, seed=1)
    pq.write_table(events, tmp_path / "e.parquet")
    spec = {
        "source": {"path": str(tmp_path / "e.parquet")},
        "task": task,
        "target": "rating" if task == "regression" else {"column": "rating", "positive": [5]},
        "features": [{"type": "mf"}],
        "learner": {"epochs": 3},
        "validation": {"source": {"path": str(tmp_path / "e.parquet")}, "every_rows": 500},
        "output": {"dir": str(tmp_path / "run"), "window_rows": 200},
        "checkpoint": {"enabled": False},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    streamfm.train(tmp_path / "s.yaml")
    written = plot_run(tmp_path / "run")
    assert written == tmp_path / "run" / "plot.png"
    from PIL import Image

    with Image.open(written) as img:
        width, height = img.size
    panels = 3 if task == "regression" else 6  # metrics (+ ROC, calibration) + groups
    assert width == 1500 and height == 360 * ((panels + 2) // 3)
    svg = plot_run(tmp_path / "run" / "model.sfm", tmp_path / "p.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
