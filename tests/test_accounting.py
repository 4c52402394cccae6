"""One numbering of rows everywhere (the physical line of a text file, header and blank lines
counted; the row number of a Parquet file) and rows read = learnt + skipped + quarantined."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfm.errors import DataError
from streamfm.spec import parse_spec
from streamfm.training.loop import train

# line: 1 header, 2 good, 3 blank, 4 ragged, 5 bad target, 6-7 a quoted value over two lines,
# 8 bad target, 9 good, 10 text in a numeric column.
CSV = (
    "user,item,rating,age\n"
    "u1,i1,4,30\n"
    "\n"
    "u2,i2,5\n"
    "u3,i3,,31\n"
    'u4,"i4\nsecond line",3,32\n'
    "u5,i5,x,33\n"
    "u6,i6,2,34\n"
    "u7,i7,1,old\n"
)
CSV_BAD = [(4, None), (5, "rating"), (8, "rating"), (10, "age")]

JSONL = (
    '{"user": "u1", "item": "i1", "rating": 4, "age": 30}\n'
    "\n"
    "not json\n"
    '{"user": "u3", "item": "i3", "rating": null, "age": 31}\n'
    '{"user": "u4", "item": "i4", "rating": 3, "age": 32}\n'
    "\n"
    '{"user": "u5", "item": "i5", "rating": 5, "age": "old"}\n'
    '{"user": "u6", "item": "i6", "rating": 2, "age": 34}\n'
)
JSONL_BAD = [(3, None), (4, "rating"), (7, "age")]

LIBFM = "1 0:1 1:1\n# a comment\n\n2 0:x\nnan 1:1\n3 2:1\n"
LIBFM_BAD = [(4, None), (5, None)]


def spec_for(path, out, policy="quarantine", epochs=1, **extra) -> dict:
    features = (
        [{"type": "libfm"}]
        if str(path).endswith(".libfm")
        else [{"type": "mf"}, {"type": "numeric", "columns": ["age"]}]
    )
    return {
        "source": {"path": str(path), "on_bad_rows": policy, "batch_size": 2},
        **({} if str(path).endswith(".libfm") else {"target": "rating"}),
        "features": features,
        "learner": {"epochs": epochs},
        "cache": {"enabled": False},
        "output": {"dir": str(out)},
        **extra,
    }


def quarantined(out) -> list[tuple[int, str | None]]:
    lines = (out / "quarantine.jsonl").read_text().splitlines()
    return [(r["row"], r["column"]) for r in map(json.loads, lines)]


@pytest.mark.parametrize(
    ("name", "text", "bad", "good"),
    [
        ("d.csv", CSV, CSV_BAD, 3),
        ("d.jsonl", JSONL, JSONL_BAD, 3),
        ("d.libfm", LIBFM, LIBFM_BAD, 2),
    ],
)
def test_bad_rows_are_numbered_by_their_physical_line(tmp_path, name, text, bad, good):
    (tmp_path / name).write_text(text)
    r = train(parse_spec(spec_for(tmp_path / name, tmp_path / "out")))
    got = quarantined(tmp_path / "out")
    assert [row for row, _ in got] == [row for row, _ in bad]
    assert [c for _, c in got if c is not None] == [c for _, c in bad if c is not None]
    s = r.summary
    assert s["rows_learnt"] == good
    assert s["rows_read"] == s["rows_learnt"] + s["rows_skipped"] + s["rows_quarantined"]


def test_fail_names_the_same_line_as_quarantine(tmp_path):
    (tmp_path / "d.csv").write_text(CSV.replace("u2,i2,5\n", "u2,i2,5,0\n"))
    with pytest.raises(DataError, match=r"d.csv, row 5, column 'rating'"):
        train(parse_spec(spec_for(tmp_path / "d.csv", tmp_path / "out", "fail")))


def test_parquet_rows_are_numbered_from_one(tmp_path):
    table = pa.table({"user": ["a", "b", "c"], "item": ["x", "y", "z"], "rating": [1.0, None, 2.0]})
    table = table.append_column("age", pa.array([1.0, 2.0, 3.0]))
    pq.write_table(table, tmp_path / "d.parquet")
    train(parse_spec(spec_for(tmp_path / "d.parquet", tmp_path / "out")))
    assert quarantined(tmp_path / "out") == [(2, "rating")]


def test_later_epochs_do_not_count_bad_rows_again(tmp_path):
    (tmp_path / "d.csv").write_text(CSV)
    r = train(parse_spec(spec_for(tmp_path / "d.csv", tmp_path / "out", epochs=3)))
    s = r.summary
    assert (s["rows_read"], s["rows_quarantined"], s["rows_learnt"]) == (7, 4, 9)
    assert len(quarantined(tmp_path / "out")) == 4


def test_line_numbers_after_a_resume_in_the_middle_of_a_file(tmp_path):
    lines = [json.dumps({"user": f"u{i}", "item": "i", "rating": 1, "age": 3}) for i in range(40)]
    lines[30] = json.dumps({"user": "u", "item": "i", "rating": None, "age": 3})
    (tmp_path / "d.jsonl").write_text("\n".join(["", *lines]) + "\n")  # line 1 is blank
    spec = spec_for(tmp_path / "d.jsonl", tmp_path / "out", checkpoint={"every_rows": 10})
    spec["source"]["batch_size"] = 5
    import streamfm.training.loop as loop

    real = loop.Trainer.write_checkpoint
    calls = {"n": 0}

    def stop_after_two(self):
        path = real(self)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a kill after 20 rows
        return path

    loop.Trainer.write_checkpoint = stop_after_two
    try:
        with pytest.raises(KeyboardInterrupt):
            train(parse_spec(spec))
    finally:
        loop.Trainer.write_checkpoint = real
    train(parse_spec(spec), resume=True)
    assert quarantined(tmp_path / "out") == [(32, "rating")]


@pytest.mark.parametrize("policy", ["skip", "quarantine"])
@pytest.mark.parametrize("cache", [True, False])
def test_a_file_whose_only_row_is_bad_with_a_standardised_feature(tmp_path, policy, cache):
    # Every row of a batch is bad: the builders get a zero-row batch, in every epoch.
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("user,item,age,rating\nu1,i1,30,4\nu2,i2,31,5\n")
    (data / "b.csv").write_text("user,item,age,rating\nu3,i3,40,\n")
    spec = {
        "source": {"path": str(data), "on_bad_rows": policy},
        "target": "rating",
        "features": [
            {"type": "mf"},
            {"type": "numeric", "columns": ["age"], "transform": "standardize"},
        ],
        "learner": {"epochs": 2},
        "cache": {"enabled": cache},
        "output": {"dir": str(tmp_path / "out")},
    }
    s = train(parse_spec(spec)).summary
    assert (
        s["rows_read"],
        s["rows_learnt"],
        s[f"rows_{policy}ped" if policy == "skip" else "rows_quarantined"],
    ) == (3, 4, 1)
    if policy == "quarantine":
        assert quarantined(tmp_path / "out") == [(2, "rating")]
