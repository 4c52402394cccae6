"""JSON lines a fuzzing campaign wrote: nothing crashes the process, and a line whose values do
not fit is a bad row with its line number (and column) under every policy, never an error of
the whole run when rows may be skipped."""

import json

import pyarrow as pa
import pytest
from source_helpers import source

from streamfm.errors import DataError
from streamfm.spec import parse_spec
from streamfm.training.loop import train


def row(i, **kw) -> str:
    return json.dumps({"user": f"u{i % 7}", "item": f"i{i % 5}", "rating": 1 + i % 5, **kw})


def write(path, lines) -> None:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))


def run(path, out, policy="quarantine"):
    spec = {
        "source": {"path": str(path), "on_bad_rows": policy, "batch_size": 64},
        "target": "rating",
        "features": [{"type": "mf"}, {"type": "numeric", "columns": ["age"]}],
        "learner": {"epochs": 1},
        "output": {"dir": str(out)},
    }
    return train(parse_spec(spec))


def quarantined(out):
    return [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]


CASES = {
    "deep nesting": '{"user": "u", "item": "i", "rating": 1, "x": '
    + "[" * 20_000
    + "]" * 20_000
    + "}",
    "not UTF-8": b'{"user": "u\xff", "item": "i", "rating": 1}',
    "duplicate key": '{"user": "u", "item": "i", "rating": 1, "rating": 5}',
    "text in a number column": row(3, age="old"),
    "number out of range": '{"user": "u", "item": "i", "rating": 1e999}',
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_line_is_a_bad_row(tmp_path, case):
    lines = [row(i, age=30 + i) for i in range(5)] + [CASES[case]] + [row(9, age=1)]
    write(tmp_path / "d.jsonl", lines)
    r = run(tmp_path / "d.jsonl", tmp_path / "out")
    assert (r.summary["rows_learnt"], r.summary["rows_quarantined"]) == (6, 1)
    assert [q["row"] for q in quarantined(tmp_path / "out")] == [6]
    with pytest.raises(DataError, match=r"d.jsonl, row 6"):
        run(tmp_path / "d.jsonl", tmp_path / "out2", "fail")


def test_types_that_change_after_the_first_block(tmp_path):
    # Integers, then a float far down; a column empty at first, then numbers, then text;
    # numbers in a text column: all read (or bad rows), whatever block they fall in.
    lines = [row(i, age=None, tag=None) for i in range(300)]
    lines += [row(300, age=31.5, tag=7), row(301, age=2, tag="x"), row(302, age="?", tag=True)]
    lines.append(json.dumps({"user": "u", "item": "i", "rating": 2.5, "age": 3}))
    write(tmp_path / "d.jsonl", lines)
    src = source(tmp_path / "d.jsonl", block_size=4_096)
    src.column_types = {"rating": pa.float64(), "age": pa.float64()}
    bad = []
    src.on_bad_row = bad.append
    table = pa.Table.from_batches([b for b, _ in src.batches()])
    assert table.num_rows == 303 and [(b.row, b.column) for b in bad] == [(303, "age")]
    assert table.column("rating").to_pylist()[-1] == 2.5
    assert table.column("tag").to_pylist()[300:302] == ["7", "x"]
