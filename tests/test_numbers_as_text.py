"""Targets and numeric features read by streamfm.text's one rule in every format: "0x10" and
"1_000" are bad values, not 16 and 1000, and text that is not a number is a bad row even where
the first rows of a file made its column look numeric."""

import json

import pyarrow as pa
import pytest
from source_helpers import source

from streamfm.spec import parse_spec
from streamfm.training.loop import train


def quarantined(out):
    return [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]


def run(path, out, features=None):
    spec = {
        "source": {"path": str(path), "on_bad_rows": "quarantine"},
        "target": "rating",
        "features": features or [{"type": "mf"}],
        "learner": {"epochs": 1},
        "output": {"dir": str(out)},
    }
    return train(parse_spec(spec))


@pytest.mark.parametrize("value", ["0x10", "0X1F", "1_000"])
def test_hex_and_underscores_are_not_targets_even_alone_in_a_file(tmp_path, value):
    # A column holding only "0x10" is read as the integer 16 by pyarrow's CSV inference.
    (tmp_path / "d.csv").write_text(f"user,item,rating\nu1,i1,{value}\n")
    r = run(tmp_path / "d.csv", tmp_path / "out")
    assert r.summary["rows_learnt"] == 0
    assert [(q["row"], q["value"]) for q in quarantined(tmp_path / "out")] == [(2, value)]


def test_numeric_features_and_jsonl_follow_the_same_rule(tmp_path):
    (tmp_path / "d.csv").write_text(
        "user,item,rating,age\nu1,i1,4,0x10\nu2,i2,5,1_000\nu3,i3,3,7\n"
    )
    r = run(tmp_path / "d.csv", tmp_path / "out", [{"type": "numeric", "columns": ["age"]}])
    assert [q["row"] for q in quarantined(tmp_path / "out")] == [2, 3]
    assert r.summary["rows_learnt"] == 1
    lines = [{"user": "u", "item": "i", "rating": v} for v in ("0x10", "1_000", " 2.5 ", 3)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = run(tmp_path / "d.jsonl", tmp_path / "out2")
    assert [q["row"] for q in quarantined(tmp_path / "out2")] == [1, 2]
    assert r.summary["rows_learnt"] == 2


def test_text_after_the_first_block_is_not_an_error_of_the_file(tmp_path):
    rows = [f"u{i},i{i % 3},{i % 5 + 1}" for i in range(400)] + ["u9,i9,oops", "u8,i8,2"]
    (tmp_path / "d.csv").write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    src = source(tmp_path / "d.csv", block_size=1_024)
    src.column_types = {"rating": pa.float64()}  # what training declares for a regression target
    table = pa.Table.from_batches([b for b, _ in src.batches()])
    assert table.num_rows == 402 and table.column("rating").to_pylist()[-2:] == ["oops", "2"]
