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


def invoke(*args):
    """The CLI in this process (no interpreter start-up): exit code, stdout, stderr, like `run`."""
    from typer.testing import CliRunner

    from streamfm.cli import _state, app

    _state["debug"] = False
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


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
    for command in ("train", "predict", "evaluate", "inspect", "explain", "export", "plot", "init"):
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


def test_spec_mistakes_exit_2_and_runtime_errors_exit_1(workdir, tmp_path):
    folder, _ = workdir
    elsewhere = ["--set", f"output.dir={tmp_path / 'x'}"]
    for setting, named in [
        ("target=stars", "stars"),
        ("features.0.columns=[zz]", "zz"),
        ("source.path=/nonexistent/*.parquet", "/nonexistent"),
        ("source.path=/nonexistent.parquet", "no such file"),
    ]:
        r = invoke("train", folder / "spec.yaml", "--set", setting, *elsewhere)
        assert r.returncode == 2, (setting, r.stderr)
        assert named in r.stderr and "Traceback" not in r.stderr
    r = invoke("--debug", "train", folder / "spec.yaml", "--set", "target=stars", *elsewhere)
    assert r.returncode == 2 and "Traceback" in r.stderr
    r = invoke("evaluate", folder / "nothing.sfm", "x.parquet")
    assert r.returncode == 1 and "does not exist" in r.stderr
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    r = invoke("train", folder / "spec.yaml", "--set", f"source.path={bad}", *elsewhere)
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_a_missing_target_is_one_short_sentence(workdir, tmp_path):
    folder, _ = workdir
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    del spec["target"]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    r = invoke("train", tmp_path / "s.yaml")
    assert r.returncode == 2
    assert "target: required key is missing" in r.stderr and len(r.stderr) < 200


def test_rerunning_train_refuses_to_overwrite_a_run(workdir, tmp_path):
    folder, _ = workdir
    out = ["--set", f"output.dir={tmp_path / 'run'}", "--set", "learner.epochs=1", "-q"]
    assert invoke("train", folder / "spec.yaml", *out).returncode == 0
    first = (tmp_path / "run" / "model.sfm").read_bytes()
    r = invoke("train", folder / "spec.yaml", *out, "--set", "model.seed=5")
    assert r.returncode == 2 and "--overwrite" in r.stderr and "--resume" in r.stderr
    assert (tmp_path / "run" / "model.sfm").read_bytes() == first  # untouched
    r = invoke("train", folder / "spec.yaml", *out, "--set", "model.seed=5", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "model.sfm").read_bytes() != first
    assert (
        invoke("train", folder / "spec.yaml", *out, "--set", "model.seed=5", "--resume").returncode
        == 0
    )


def test_the_resume_hint_keeps_the_set_overrides(workdir, tmp_path):
    import signal
    import time

    folder, paths = workdir
    big = pq.read_table(paths["train"])
    import pyarrow as pa

    pq.write_table(pa.concat_tables([big] * 40), tmp_path / "big.parquet", row_group_size=4_000)
    args = ["--set", f"source.path={tmp_path / 'big.parquet'}", "--set", "learner.epochs=200"]
    args += ["--set", f"output.dir={tmp_path / 'my run'}"]
    proc = subprocess.Popen(
        [str(EXE), "train", str(folder / "spec.yaml"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, deadline = "", time.monotonic() + 120
    while "rows" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stderr.read(1) or ""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    hint = next(line for line in out.splitlines() if line.startswith("interrupted"))
    assert f"--set 'output.dir={tmp_path / 'my run'}'" in hint and hint.endswith("--resume")
    assert "--set learner.epochs=200" in hint
    command = hint.split("resume with", 1)[1].split()
    assert command[:2] == ["streamfm", "train"]


def test_predict_to_stdout_and_messages_about_its_options(workdir, tmp_path):
    folder, paths = workdir
    model = folder / "run" / "model.sfm"
    if not model.exists():
        assert invoke("train", folder / "spec.yaml", "-q", "--overwrite").returncode == 0
    r = invoke("predict", model, paths["test"], "-o", "-", "--keep", "user")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert (
        lines[0] == '"user","prediction"'
        and len(lines) == 1 + pq.read_metadata(paths["test"]).num_rows
    )
    assert "wrote" in r.stderr  # the summary goes to stderr, not into the pipe
    renamed = tmp_path / "test.data"
    renamed.write_bytes(Path(paths["test"]).read_bytes())
    r = invoke("predict", model, renamed, "-o", tmp_path / "p.csv")
    assert r.returncode == 2 and "set --format" in r.stderr and "source.format" not in r.stderr
    r = invoke("predict", model, renamed, "-o", tmp_path / "p.csv", "--format", "tsv")
    assert r.returncode == 2 and "--format: must be one of" in r.stderr
    assert "ValidationError" not in r.stderr
    r = invoke("predict", model, renamed, "-o", tmp_path / "p.csv", "--format", "parquet")
    assert r.returncode == 0, r.stderr


def test_inspect_explain_export(workdir, tmp_path):
    folder, paths = workdir
    model = folder / "run" / "model.sfm"
    if not model.exists():
        assert invoke("train", folder / "spec.yaml", "-q", "--overwrite").returncode == 0
    r = invoke("inspect", model, "--group", "item", "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "item: largest |w|" in r.stdout and "user: largest" not in r.stdout
    assert "{" not in r.stdout and "'" not in r.stdout  # no raw dicts or reprs
    r = invoke("inspect", model, "--group", "nope")
    assert r.returncode == 2 and "no such feature group" in r.stderr
    r = invoke("explain", model, paths["test"], "--rows", "2:4", "-o", tmp_path / "terms.parquet")
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.count("prediction") == 2 and "row 2:" in r.stdout and "largest terms" in r.stdout
    )
    terms = pq.read_table(tmp_path / "terms.parquet")
    assert set(terms["row"].to_pylist()) == {2, 3}
    info = json.loads(invoke("explain", model, paths["test"], "--rows", "1", "--json").stdout)
    assert info[0]["sum"] == pytest.approx(info[0]["prediction"], abs=1e-9)
    r = invoke("export", model, "-o", tmp_path / "exp")
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / "exp").iterdir()} == {
        "user.parquet",
        "item.parquet",
        "model.json",
    }
    assert invoke("explain", model, paths["test"], "--rows", "x").returncode == 2


def test_plot_writes_an_image(workdir, tmp_path):
    pytest.importorskip("matplotlib")
    folder, _ = workdir
    if not (folder / "run" / "model.sfm").exists():
        assert invoke("train", folder / "spec.yaml", "-q", "--overwrite").returncode == 0
    r = invoke("plot", folder / "run", "-o", tmp_path / "curve.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_init_writes_a_starter_spec(tmp_path):
    r = run("init", tmp_path / "s.yaml")
    assert r.returncode == 0 and (tmp_path / "s.yaml").exists()
    assert run("init", tmp_path / "s.yaml").returncode == 2
