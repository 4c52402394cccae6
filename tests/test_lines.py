"""Lines at the edges: a last CSV line of standard input without its newline (a producer that
died mid-write, e.g. inside a number) is a bad row, not a row; lines over source.max_line_bytes are bad rows (JSON lines,
libFM) or a named error (CSV), never pyarrow's "try to increase block size"."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamfm.errors import DataError
from streamfm.spec import parse_spec
from streamfm.training.loop import train

EXE = Path(sys.executable).with_name("streamfm")

STREAMS = {
    "csv": ("user,item,rating\n", lambda i: f"u{i},i{i % 3},{1 + i % 5}", "u9,i9,4.2"),
    "jsonl": (
        "",
        lambda i: json.dumps({"user": f"u{i}", "item": "i", "rating": 1}),
        '{"user": "u9"',
    ),
    "libfm": ("", lambda i: f"{1 + i % 5} {i % 7}:1 {7 + i % 3}:1", "4 3:1 9:0."),
}


@pytest.mark.parametrize("fmt", ["csv"])
def test_a_stdin_line_cut_off_is_a_bad_row(tmp_path, fmt):
    head, line, cut = STREAMS[fmt]
    spec = {
        "source": {"path": "-", "format": fmt, "on_bad_rows": "quarantine", "batch_size": 7},
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    if fmt != "libfm":
        spec.update(target="rating", features=[{"type": "mf"}])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    text = head + "".join(line(i) + "\n" for i in range(20)) + cut  # no final newline
    r = subprocess.run(
        [str(EXE), "train", str(tmp_path / "spec.yaml"), "-q"],
        input=text,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "trained 20 rows (21 read, 0 skipped, 1 quarantined" in r.stdout
    (rec,) = [
        json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()
    ]
    assert rec["row"] == 21 + (fmt == "csv") and "ended inside this line" in rec["reason"]


@pytest.mark.parametrize("fmt", ["jsonl", "libfm"])
def test_lines_over_max_line_bytes_are_bad_rows(tmp_path, fmt):
    _head, line, _cut = STREAMS[fmt]
    long = (
        json.dumps({"user": "u", "item": "i", "rating": 1, "note": "x" * 5_000})
        if fmt == "jsonl"
        else "1 " + " ".join(f"{i}:1" for i in range(2_000))
    )
    lines = [line(0), long, line(1), long, line(2)]
    path = tmp_path / f"d.{fmt}"
    path.write_text("\n".join(lines) + "\n")
    spec = {
        "source": {"path": str(path), "on_bad_rows": "quarantine", "max_line_bytes": 2_048},
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    if fmt == "jsonl":
        spec.update(target="rating", features=[{"type": "mf"}])
    r = train(parse_spec(spec))
    assert (r.summary["rows_learnt"], r.summary["rows_quarantined"]) == (3, 2)
    recs = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [x["row"] for x in recs] == [2, 4] and "source.max_line_bytes" in recs[0]["reason"]


def test_a_csv_record_over_the_block_names_max_line_bytes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("user,item,rating\nu1,i1,1\nu2," + "x" * (20 << 20) + ",2\nu3,i3,3\n")
    spec = {
        "source": {"path": str(path), "on_bad_rows": "skip", "max_line_bytes": 1024},
        "target": "rating",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    with pytest.raises(DataError, match=r"d.csv: a record is longer .* source.max_line_bytes"):
        train(parse_spec(spec))
    spec["source"]["max_line_bytes"] = 24 << 20
    assert train(parse_spec(spec)).summary["rows_learnt"] == 3
