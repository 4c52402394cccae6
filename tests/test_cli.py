"""The installed `streamfm` console script, end to end in subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from streamfm.datasets import write_event_log

EXE = Path(sys.executable).with_name("streamfm")


def run(*args, cwd=None, stdin=None):
    return subprocess.run(
        [str(EXE), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    paths = write_event_log(folder / "data", n_users=100, n_items=60, n_events=4_000, seed=2)
    spec = {
        "source": {"path": str(paths["train"])},
        "target": "rating",
        "features": [
            {"type": "categorical", "columns": ["user"]},
            {"type": "categorical", "columns": ["item"]},
        ],
        "model": {"k": 4},
        "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 2},
        "validation": {"source": {"path": str(paths["test"])}},
        "output": {"dir": str(folder / "run")},
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder, paths


def test_version_and_help():
    assert run("--version").stdout.strip().startswith("streamfm ")
    out = run("--help").stdout
    for command in ("train", "predict", "evaluate", "inspect", "init"):
        assert command in out


def test_train_predict_evaluate_inspect(workdir):
    folder, paths = workdir
    r = run("train", folder / "spec.yaml", "--set", "learner.epochs=3")
    assert r.returncode == 0, r.stderr
    assert "epoch 3:" in r.stderr and "holdout_rmse" in r.stderr
    assert "trained" in r.stdout and "model:" in r.stdout
    model = folder / "run" / "model.sfm"
    assert model.exists() and (folder / "run" / "metrics.csv").exists()

    r = run(
        "predict",
        model,
        paths["test"],
        "-o",
        folder / "pred.parquet",
        "--keep",
        "user",
        "--keep",
        "item",
    )
    assert r.returncode == 0, r.stderr
    pred = pq.read_table(folder / "pred.parquet")
    assert pred.column_names == ["user", "item", "prediction"]
    assert pred.num_rows == pq.read_metadata(paths["test"]).num_rows
    r = run("predict", model, paths["test"], "-o", folder / "pred.csv")
    assert r.returncode == 0, r.stderr
    assert pacsv.read_csv(folder / "pred.csv").column_names == ["prediction"]

    r = run("evaluate", model, paths["test"], "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    history = json.loads((folder / "run" / "metrics.json").read_text())
    assert scores["rmse"] == pytest.approx(history[-1]["holdout_rmse"])

    r = run("inspect", model)
    assert r.returncode == 0, r.stderr
    assert "feature groups" in r.stdout and "user" in r.stdout
    info = json.loads(run("inspect", model, "--json").stdout)
    assert info["k"] == 4 and info["cases_learnt"] == 3 * history[0]["rows"]


def test_train_from_stdin(workdir, tmp_path):
    folder, paths = workdir
    pacsv.write_csv(pq.read_table(paths["train"]), tmp_path / "train.csv")
    r = run(
        "train",
        folder / "spec.yaml",
        "--set",
        "source.path=-",
        "--set",
        "source.format=csv",
        "--set",
        f"output.dir={tmp_path / 'stdin-run'}",
        "-q",
        stdin=(tmp_path / "train.csv").read_text(),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "stdin-run" / "model.sfm").exists()


def test_spec_errors_exit_2_with_one_paragraph(workdir):
    folder, _ = workdir
    r = run("train", folder / "spec.yaml", "--set", "learner.learning_rate=-0.1")
    assert r.returncode == 2
    assert "learner.learning_rate: must be > 0.0, got -0.1" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("train", folder / "missing.yaml")
    assert r.returncode == 2 and "cannot read spec" in r.stderr


def test_runtime_errors_exit_1(workdir):
    folder, _ = workdir
    r = run("train", folder / "spec.yaml", "--set", "target=stars")
    assert r.returncode == 1
    assert "stars" in r.stderr and "Traceback" not in r.stderr
    r = run("--debug", "train", folder / "spec.yaml", "--set", "target=stars")
    assert r.returncode == 1 and "Traceback" in r.stderr
    r = run("train", folder / "spec.yaml", "--set", "source.path=/nonexistent/*.parquet")
    assert r.returncode in (1, 2) and "/nonexistent" in r.stderr
    r = run("evaluate", folder / "nothing.sfm", "x.parquet")
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_init_writes_a_starter_spec(tmp_path):
    r = run("init", tmp_path / "s.yaml")
    assert r.returncode == 0 and (tmp_path / "s.yaml").exists()
    assert run("init", tmp_path / "s.yaml").returncode == 2
