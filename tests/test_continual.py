"""Continual learning (follow mode, exactly-once files across restarts, publishing) and the
bad-row policies."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

import streamfm
from streamfm.datasets import make_event_log
from streamfm.errors import DataError, SpecError
from streamfm.spec import parse_spec
from streamfm.training.loop import train

EXE = Path(sys.executable).with_name("streamfm")


@pytest.fixture(scope="module")
def events():
    table, _ = make_event_log(n_users=80, n_items=40, n_events=4_000, seed=9)
    return table.drop(["timestamp"])


def drop_file(folder: Path, name: str, table: pa.Table) -> None:
    """Write elsewhere (a temporary name), then rename into place: how producers publish."""
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)


def spec_for(folder: Path, out: Path, **extra) -> dict:
    return {
        "source": {
            "path": str(folder),
            "format": "parquet",
            "follow": True,
            "poll_seconds": 0.1,
            "idle_timeout": 3.0,
            "batch_size": 300,
        },
        "target": "rating",
        "features": [{"type": "mf"}],
        "model": {"k": 4},
        "learner": {"optimizer": "adagrad", "learning_rate": 0.05, "epochs": 1},
        "checkpoint": {"every_seconds": 0.2},
        "output": {"dir": str(out), "window_rows": 500},
        **extra,
    }


def test_follow_learns_new_files_once_also_across_restarts(events, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop_file(inbox, "part-000.parquet", events.slice(0, 1_000))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_for(inbox, tmp_path / "out")))
    proc = subprocess.Popen(
        [str(EXE), "train", str(spec_path), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    (inbox / "part-001.parquet.part").write_bytes(b"half written")  # never read
    drop_file(inbox, "part-001.parquet", events.slice(1_000, 1_000))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "trained 2,000 rows" in out
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "window_rmse" in history[-1]

    # A restart learns only what is new.
    drop_file(inbox, "part-002.parquet", events.slice(2_000, 500))
    r = subprocess.run(
        [str(EXE), "train", str(spec_path), "--resume", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "trained 2,500 rows" in r.stdout  # cumulative: 2,000 before, 500 new

    # The same three files in one uninterrupted pass give the identical model.
    one = tmp_path / "one"
    one.mkdir()
    for i, (a, n) in enumerate([(0, 1_000), (1_000, 1_000), (2_000, 500)]):
        drop_file(one, f"part-{i:03d}.parquet", events.slice(a, n))
    ref = train(
        parse_spec(spec_for(one, tmp_path / "ref", source={"path": str(one), "batch_size": 300}))
    )
    a = streamfm.load_model(tmp_path / "out" / "model.sfm").learner.params
    b = ref.model.learner.params
    np.testing.assert_array_equal(a.V[: a.n_features], b.V[: b.n_features])
    np.testing.assert_array_equal(a.w[: a.n_features], b.w[: b.n_features])


def test_latest_model_is_published_while_training(events, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop_file(inbox, "a.parquet", events.slice(0, 2_000))
    spec = spec_for(
        inbox,
        tmp_path / "out",
        source={"path": str(inbox), "follow": True, "poll_seconds": 0.1, "idle_timeout": 60},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [str(EXE), "train", str(spec_path), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    model = tmp_path / "out" / "model.sfm"
    deadline = time.monotonic() + 60
    while not model.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # Readers see a whole model at any moment, while training goes on.
    first = streamfm.load_model(model)
    assert first.learner.t > 0
    drop_file(inbox, "b.parquet", events.slice(2_000, 2_000))
    deadline = time.monotonic() + 60
    while streamfm.load_model(model).learner.t < 4_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert streamfm.load_model(model).learner.t == 4_000
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "--resume" in out


# --------------------------------------------------------------------------- bad rows
BAD_CSV = "user,item,rating,age\nu1,i1,4,30\nu2,i2,,31\nu3,i3,5,abc\nu1,i2,oops,20\nu2,i1,3,40\n"


def csv_spec(path: Path, out: Path, policy: str) -> dict:
    return {
        "source": {"path": str(path), "on_bad_rows": policy},
        "target": "rating",
        "features": [{"type": "mf"}, {"type": "numeric", "columns": ["age"]}],
        "learner": {"epochs": 1},
        "output": {"dir": str(out)},
    }


def test_bad_rows_fail_names_file_row_column_value(tmp_path):
    (tmp_path / "d.csv").write_text(BAD_CSV)
    with pytest.raises(DataError, match=r"d.csv, row 3, column 'rating': the target is missing"):
        train(parse_spec(csv_spec(tmp_path / "d.csv", tmp_path / "out", "fail")))


def test_bad_rows_skip_counts(tmp_path):
    (tmp_path / "d.csv").write_text(BAD_CSV)
    r = train(parse_spec(csv_spec(tmp_path / "d.csv", tmp_path / "out", "skip")))
    s = r.summary
    assert (s["rows_read"], s["rows_learnt"], s["rows_skipped"], s["rows_quarantined"]) == (
        5,
        2,
        3,
        0,
    )


def test_bad_rows_quarantine_writes_them_with_the_reason(tmp_path):
    (tmp_path / "d.csv").write_text(BAD_CSV)
    r = train(parse_spec(csv_spec(tmp_path / "d.csv", tmp_path / "out", "quarantine")))
    assert r.summary["rows_quarantined"] == 3 and r.summary["rows_learnt"] == 2
    recs = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    # Physical lines of the file, header counted.
    assert [(x["row"], x["column"]) for x in recs] == [(3, "rating"), (4, "age"), (5, "rating")]
    assert recs[1]["reason"].endswith("not a number") and recs[1]["values"]["age"] == "abc"
    assert recs[2]["value"] == "oops"


def test_missing_classification_labels_are_bad_rows_other_labels_a_spec_error(tmp_path):
    (tmp_path / "c.csv").write_text("user,item,label\nu1,i1,1\nu2,i2,\nu3,i3,0\n")
    spec = {
        "source": {"path": str(tmp_path / "c.csv"), "on_bad_rows": "skip"},
        "task": "classification",
        "target": "label",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    r = train(parse_spec(spec))
    assert r.summary["rows_skipped"] == 1 and r.summary["rows_learnt"] == 2
    # A third class is not a bad row to skip: task classification is binary.
    (tmp_path / "c.csv").write_text("user,item,label\nu1,i1,1\nu2,i2,2\nu3,i3,0\n")
    spec["output"]["dir"] = str(tmp_path / "out2")
    with pytest.raises(SpecError, match="label 2 .*c.csv, row 3"):
        train(parse_spec(spec))


def test_stdin_stream_with_time_checkpoints(events, tmp_path):
    pacsv.write_csv(events.slice(0, 1_500), tmp_path / "e.csv")
    spec = {
        "source": {"path": "-", "format": "csv"},
        "target": "rating",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "checkpoint": {"every_seconds": 0.01},
        "output": {"dir": str(tmp_path / "out")},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with open(tmp_path / "e.csv") as f:
        r = subprocess.run(
            [str(EXE), "train", str(tmp_path / "spec.yaml"), "-q"],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    assert "trained 1,500 rows" in r.stdout
    # A new producer later: --resume keeps the model and learns the new stream.
    with open(tmp_path / "e.csv") as f:
        r = subprocess.run(
            [str(EXE), "train", str(tmp_path / "spec.yaml"), "--resume", "-q"],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    assert "trained 3,000 rows" in r.stdout


def test_malformed_source_rows_through_training(tmp_path):
    (tmp_path / "r.csv").write_text("user,item,rating\nu1,i1,4\nu2,i2\nu3,i3,5,extra\nu1,i2,3\n")
    spec = csv_spec(tmp_path / "r.csv", tmp_path / "out", "quarantine")
    spec["features"] = [{"type": "mf"}]
    r = train(parse_spec(spec))
    assert (r.summary["rows_learnt"], r.summary["rows_quarantined"]) == (2, 2)
    recs = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [(x["row"], x["text"]) for x in recs] == [(3, "u2,i2"), (4, "u3,i3,5,extra")]
    assert "expected 3 columns, got 2" in recs[0]["reason"]
    (tmp_path / "bad.libfm").write_text("1 0:1 1:1\n2 0:1 1:x\n3 2:1\n")
    spec = {
        "source": {"path": str(tmp_path / "bad.libfm")},
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out2")},
    }
    with pytest.raises(
        DataError, match=r"bad.libfm, row 2: the feature value is not a number \(got '1:x'\)"
    ):
        train(parse_spec(spec))
    spec["source"]["on_bad_rows"] = "skip"
    assert train(parse_spec(spec)).summary["rows_skipped"] == 1
