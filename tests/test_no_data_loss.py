"""Nothing learnt is lost and learning does not stop for good: a data error checkpoints the rows
learnt up to the bad one (standard input cannot be read again); a resume with nothing new
records nothing; an early stop does not end continual learning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from streamfm.datasets import make_event_log
from streamfm.errors import DataError
from streamfm.spec import parse_spec
from streamfm.training.loop import train

EXE = Path(sys.executable).with_name("streamfm")


def csv_lines(n: int, start: int = 0) -> list[str]:
    return [f"u{(start + i) % 37},i{(start + i) % 11},{1 + (start + i) % 5}" for i in range(n)]


def stdin_run(spec: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), "train", str(spec), "-q", *extra],
        input=text,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )


@pytest.mark.parametrize("bad_line", ["u1,i1,", "u1,i1,4,extra"], ids=["target", "fields"])
def test_stdin_data_error_checkpoints_the_rows_before_it(tmp_path, bad_line):
    spec = {
        "source": {"path": "-", "format": "csv", "batch_size": 400},
        "target": "rating",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    text = "\n".join(["user,item,rating", *csv_lines(1_000), bad_line, *csv_lines(50)]) + "\n"
    r = stdin_run(tmp_path / "spec.yaml", text)
    assert r.returncode == 1, r.stderr
    assert "row 1002" in r.stderr  # the physical line: header, 1,000 rows, then the bad one
    assert "keeps the 1,000 rows learnt before the bad one" in r.stderr
    # The producer is fixed and sends the rest: the 1,000 rows are not lost.
    r = stdin_run(
        tmp_path / "spec.yaml", "user,item,rating\n" + "\n".join(csv_lines(50)) + "\n", "--resume"
    )
    assert r.returncode == 0, r.stderr
    assert "trained 1,050 rows" in r.stdout


def test_a_file_data_error_checkpoints_before_the_failing_batch(tmp_path):
    lines = ["user,item,rating", *csv_lines(900), "u1,i1,oops", *csv_lines(99, 900)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "source": {"path": str(tmp_path / "d.csv"), "batch_size": 250},
        "target": "rating",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    with pytest.raises(DataError, match=r"d.csv, row 902, column 'rating'") as info:
        train(parse_spec(spec))
    assert any("keeps the 750 rows" in n for n in info.value.run_notes)
    lines[901] = "u1,i1,3"  # fixed in place: the resumed run reads the failing batch again
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    again = train(parse_spec(spec), resume=True)
    whole = train(parse_spec({**spec, "output": {"dir": str(tmp_path / "ref")}}))
    assert again.summary["rows_learnt"] == whole.summary["rows_learnt"] == 1_000
    np.testing.assert_array_equal(again.model.learner.params.V, whole.model.learner.params.V)


@pytest.fixture(scope="module")
def constant_events():
    """Training targets all 3: predictions are clipped to [3, 3], so the holdout metric never
    improves after the first evaluation (patience runs out as soon as it can)."""
    table, _ = make_event_log(n_users=30, n_items=20, n_events=1_200, seed=4)
    table = table.drop(["timestamp"]).set_column(2, "rating", pa.array([3.0] * 1_200))
    return table


def single_pass_spec(inbox: Path, holdout: Path, out: Path, **source) -> dict:
    return {
        "source": {"path": str(inbox), "format": "parquet", "batch_size": 100, **source},
        "target": "rating",
        "features": [{"type": "mf"}],
        "model": {"k": 2},
        "learner": {"epochs": 1},
        "validation": {"source": {"path": str(holdout)}, "patience": 1},
        "output": {"dir": str(out)},
    }


def test_resumes_with_nothing_new_record_nothing_and_early_stops_do_not_end_learning(
    tmp_path, constant_events
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    holdout = tmp_path / "holdout.parquet"
    pq.write_table(
        constant_events.slice(1_000).set_column(2, "rating", pa.array([4.0] * 200)), holdout
    )
    pq.write_table(constant_events.slice(0, 300), inbox / "a.parquet")
    spec = single_pass_spec(inbox, holdout, tmp_path / "out")
    train(parse_spec(spec))
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for _ in range(3):  # nothing new: no evaluation, no record, and no early stop
        r = train(parse_spec(spec), resume=True)
        assert "nothing new to learn" in " ".join(r.summary["notes"])
        assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == history
    pq.write_table(constant_events.slice(300, 300), inbox / "b.parquet")
    r = train(parse_spec(spec), resume=True)
    assert r.summary["rows_learnt"] == 600 and r.summary["stopped_early"]  # no improvement
    pq.write_table(constant_events.slice(600, 300), inbox / "c.parquet")
    r = train(parse_spec(spec), resume=True)
    assert r.summary["rows_learnt"] == 900, "new data must be learnt after an early stop"


def test_patience_does_not_end_a_follow_run(tmp_path, constant_events):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    holdout = tmp_path / "holdout.parquet"
    pq.write_table(
        constant_events.slice(1_000).set_column(2, "rating", pa.array([4.0] * 200)), holdout
    )
    for i in range(3):
        pq.write_table(constant_events.slice(300 * i, 300), inbox / f"part-{i}.parquet")
    spec = single_pass_spec(
        inbox, holdout, tmp_path / "out", follow=True, poll_seconds=0.05, idle_timeout=0.5
    )
    spec["validation"]["every_rows"] = 200
    r = train(parse_spec(spec))
    assert r.summary["rows_learnt"] == 900 and not r.summary["stopped_early"]
    assert len(r.history) >= 3  # evaluations went on without improvement


def test_a_failed_resumed_run_still_says_which_checkpoint_it_used(tmp_path):
    from typer.testing import CliRunner

    from streamfm.cli import app

    lines = ["user,item,rating", *csv_lines(300)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "source": {"path": str(tmp_path / "d.csv"), "batch_size": 100},
        "target": "rating",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "checkpoint": {"every_rows": 100},
        "output": {"dir": str(tmp_path / "out")},
    }
    train(parse_spec(spec))
    ckpt = tmp_path / "out" / "checkpoints"
    newest = ckpt / (ckpt / "latest").read_text()
    (newest / "state.zip").write_bytes(b"damaged")
    (tmp_path / "e.csv").write_text("user,item,rating\nu1,i1,\n")  # a new file that fails
    spec["source"]["path"] = [str(tmp_path / "d.csv"), str(tmp_path / "e.csv")]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    r = CliRunner().invoke(app, ["train", str(tmp_path / "spec.yaml"), "--resume", "-q"])
    assert r.exit_code == 1
    assert f"note: checkpoint {newest} is not usable" in r.output
    assert "note: resumed from" in r.output and "e.csv, row 2" in r.output
