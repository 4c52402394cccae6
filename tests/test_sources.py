"""Tests of streamfm.sources: the chunked readers of Parquet, CSV, libFM text and JSON lines."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from source_helpers import batches, read_all, resume_state, source

from streamfm.config import CsvOptions, SourceConfig
from streamfm.errors import DataError, SpecError
from streamfm.sources import Position, SourceStream, infer_format, open_source

ROOT = Path(__file__).resolve().parent.parent


# -- format inference and paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("a.parquet", "parquet"),
        ("a.PQ", "parquet"),
        ("a.csv", "csv"),
        ("a.tsv.gz", "csv"),
        ("a.txt", "csv"),
        ("a.libfm", "libfm"),
        ("a.libsvm.bz2", "libfm"),
        ("a.svm.zst", "libfm"),
        ("dir.v1/a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json.gz", "jsonl"),
    ],
)
def test_infer_format(name, fmt):
    assert infer_format(name) == fmt


@pytest.mark.parametrize("name", ["a.xlsx", "noext", "a.parquet.gz", "a.gz"])
def test_infer_format_unknown(name):
    with pytest.raises(SpecError, match="libfm") as e:
        infer_format(name)
    assert name in str(e.value)


def test_stdin_needs_format():
    with pytest.raises(SpecError, match="source.format"):
        open_source(SourceConfig(path="-"))
    with pytest.raises(SpecError, match="parquet"):
        open_source(SourceConfig(path="-", format="parquet"))
    with pytest.raises(SpecError, match="standard input"):
        open_source(SourceConfig(path=["-", "a.csv"], format="csv"))


def test_no_files(tmp_path):
    with pytest.raises(DataError, match="no files match") as e:
        open_source(SourceConfig(path=str(tmp_path / "*.csv")))
    assert "*.csv" in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        open_source(SourceConfig(path=str(tmp_path / "missing.csv")))
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="no libfm files"):
        open_source(SourceConfig(path=str(tmp_path), format="libfm"))


def test_folder_and_glob_order(tmp_path):
    for name in ["b/2.csv", "a/10.csv", "a/9.csv", "c.csv", "b/1.csv", "a/notes.md", ".hidden.csv"]:
        p = tmp_path / "data" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"name\n{name}\n")
    (tmp_path / "data" / "_tmp").mkdir()
    (tmp_path / "data" / "_tmp" / "x.csv").write_text("name\nx\n")
    expected = ["a/10.csv", "a/9.csv", "b/1.csv", "b/2.csv", "c.csv"]
    src = open_source(SourceConfig(path=str(tmp_path / "data")))
    assert src.format == "csv"
    assert src.files == [str(tmp_path / "data" / n) for n in expected]
    table, _ = read_all(src)
    assert table.column("name").to_pylist() == expected

    src = open_source(SourceConfig(path=str(tmp_path / "data" / "[ab]" / "*.csv")))
    assert [os.path.relpath(f, tmp_path / "data") for f in src.files] == expected[:4]
    # A glob takes whatever it matches (but, like the shell, no dot-files).
    src = open_source(SourceConfig(path=str(tmp_path / "data" / "**" / "*.csv")))
    assert len(src.files) == 6
    # A list keeps its order; each entry is sorted; duplicates are read once.
    src = open_source(
        SourceConfig(path=["data/c.csv", "data/b/*.csv", "data/c.csv"]), base_dir=tmp_path
    )
    assert [os.path.relpath(f, tmp_path / "data") for f in src.files] == [
        "c.csv",
        "b/1.csv",
        "b/2.csv",
    ]
    assert src.total_rows() is None


def test_mixed_formats_need_format(tmp_path):
    (tmp_path / "a.csv").write_text("a\n1\n")
    (tmp_path / "b.libfm").write_text("1 1:1\n")
    with pytest.raises(SpecError, match="several formats"):
        open_source(SourceConfig(path=str(tmp_path)))
    assert open_source(SourceConfig(path=str(tmp_path), format="libfm")).files == [
        str(tmp_path / "b.libfm")
    ]


def test_relative_paths_use_base_dir(tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text("a\n1\n")
    src = open_source(SourceConfig(path="d.csv"), base_dir=tmp_path)
    assert src.files == [str(tmp_path / "d.csv")]
    monkeypatch.chdir(tmp_path)
    assert open_source(SourceConfig(path="d.csv")).files == [str(tmp_path / "d.csv")]


def test_position_roundtrip():
    p = Position("/x/y.csv", 123, 45)
    d = json.loads(json.dumps(p.to_dict()))
    assert Position.from_dict(d) == p
    # Positions written before 0.2 also held the index of the file in the source.
    assert Position.from_dict({"file_index": 2, **d}) == p


# -- CSV -------------------------------------------------------------------------------------------

CSV_TEXT = (
    "user,item,rating,comment\n"
    'u1,i1,4.5,"plain"\n'
    'u2,i2,NA,"with, comma"\n'
    "\n"
    'u3,i3,3,"multi\nline"\n'
    'u4,,?,"say ""hi"""\n'
    "u5,i5,1,\n"
)


def test_csv_quotes_and_nulls(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(CSV_TEXT)
    src = source(p)
    table, positions = read_all(src)
    assert table.column_names == ["user", "item", "rating", "comment"]
    assert table.column("user").to_pylist() == ["u1", "u2", "u3", "u4", "u5"]
    assert table.column("item").to_pylist() == ["i1", "i2", "i3", None, "i5"]
    assert table.column("rating").type == pa.float64()
    assert table.column("rating").to_pylist() == [4.5, None, 3.0, None, 1.0]
    assert table.column("comment").to_pylist() == [
        "plain",
        "with, comma",
        "multi\nline",
        'say "hi"',
        None,
    ]
    assert positions[-1] == Position(str(p), 0, 5)
    assert src.schema().names == table.column_names


def test_csv_no_header_column_names_and_types(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("1;10;0.5\n2;20;1.5\n")
    src = source(
        p,
        csv=CsvOptions(
            header=False,
            delimiter=";",
            column_names=["u", "i", "y"],
            column_types={"u": "string", "y": "float32"},
        ),
    )
    table, _ = read_all(src)
    assert table.schema == pa.schema([("u", pa.string()), ("i", pa.int64()), ("y", pa.float32())])
    assert table.column("u").to_pylist() == ["1", "2"]
    # Without names, pyarrow's f0, f1, ... are used.
    table, _ = read_all(source(p, csv=CsvOptions(header=False, delimiter=";")))
    assert table.column_names == ["f0", "f1", "f2"]
    # Names replacing a header.
    p.write_text("a,b\n1,2\n")
    table, _ = read_all(source(p, csv=CsvOptions(column_names=["x", "y"])))
    assert table.to_pydict() == {"x": [1], "y": [2]}


def test_csv_bad_column_type_is_spec_error(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a\n1\n")
    with pytest.raises(SpecError, match="column_types.a"):
        source(p, csv=CsvOptions(column_types={"a": "integer-ish"}))


def test_tsv_and_quoting_off(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text('a\tb\n1\t"x,y\n2\tz\n')
    table, _ = read_all(source(p, csv=CsvOptions(quote_char=None)))
    assert table.to_pydict() == {"a": [1, 2], "b": ['"x,y', "z"]}
    # An explicit delimiter wins over the .tsv extension.
    p.write_text("a|b\n1|2\n")
    table, _ = read_all(source(p, csv=CsvOptions(delimiter="|")))
    assert table.to_pydict() == {"a": [1], "b": [2]}


def test_csv_projection(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(CSV_TEXT)
    table, _ = read_all(source(p), columns=["rating", "user"])
    assert table.column_names == ["rating", "user"]
    assert table.num_rows == 5


def test_csv_ragged_line(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text('a,b,c\n1,2,3\n\n"x\ny",5,6\n7,8\n9,9,9\n')
    with pytest.raises(DataError) as e:
        read_all(source(p))
    err = e.value
    assert err.path == str(p)
    assert err.row == 6
    assert "expected 3 columns, got 2" in str(err)
    assert err.value == "7,8"


def test_csv_type_change_in_later_block(tmp_path):
    p = tmp_path / "r.csv"
    lines = ["user,rating"] + [f"u{i},{i % 5}" for i in range(2000)] + ["u9,3.5", "u10,1"]
    p.write_text("\n".join(lines) + "\n")
    src = source(p, batch_size=100, block_size=1024)
    with pytest.raises(DataError) as e:
        read_all(src)
    err = e.value
    assert (err.path, err.row, err.column, err.value) == (str(p), 2002, "rating", "3.5")
    assert "column_types" in str(err) and "float64" in str(err)
    # The advice works.
    src = source(
        p, batch_size=100, block_size=1024, csv=CsvOptions(column_types={"rating": "float64"})
    )
    assert read_all(src)[0].num_rows == 2002


def test_csv_types_stay_stable_across_files(tmp_path):
    (tmp_path / "1.csv").write_text("a,b\n1,x\n")
    (tmp_path / "2.csv").write_text("a,b\n2,\n")  # b would be inferred as null on its own
    (tmp_path / "3.csv").write_text("a,b\n3.5,y\n")
    src = source(tmp_path / "[12].csv")
    table, _ = read_all(src)
    assert table.schema == pa.schema([("a", pa.int64()), ("b", pa.string())])
    with pytest.raises(DataError) as e:
        read_all(source(tmp_path))
    assert e.value.path == str(tmp_path / "3.csv") and e.value.column == "a" and e.value.row == 2


def test_csv_gzip(tmp_path):
    p = tmp_path / "r.csv.gz"
    p.write_bytes(gzip.compress(CSV_TEXT.encode()))
    table, _ = read_all(source(p))
    assert table.num_rows == 5


def test_empty_csv_files(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("x\n")
    (tmp_path / "c.csv").write_text("x\n1\n")
    table, positions = read_all(source(tmp_path))
    assert table.to_pydict() == {"x": [1]}
    assert positions == [Position(str(tmp_path / "c.csv"), 0, 1)]


# -- libFM -----------------------------------------------------------------------------------------


def ref_libfm(text: bytes) -> list[tuple[float, list[int], list[float], int]]:
    """Slow, obviously-correct parser of libFM text."""
    rows = []
    for line in text.split(b"\n"):
        tokens = line.split(b"#")[0].split()
        if not tokens:
            continue
        qid, idx, val = -1, [], []
        for t in tokens[1:]:
            k, v = t.split(b":")
            if k == b"qid":
                qid = int(v)
            else:
                idx.append(int(k))
                val.append(float(v))
        rows.append((float(tokens[0]), idx, val, qid))
    return rows


def check_libfm(table: pa.Table, rows) -> None:
    assert table.num_rows == len(rows)
    labels = table.column("label").to_numpy()
    np.testing.assert_allclose(labels, [r[0] for r in rows], rtol=1e-12, atol=0)
    assert table.column("qid").to_pylist() == [r[3] for r in rows]
    assert table.column("idx").to_pylist() == [r[1] for r in rows]
    got = np.concatenate(
        [np.asarray(v, np.float32) for v in table.column("val").to_pylist()] or [[]]
    )
    with np.errstate(over="ignore"):  # huge values become inf in float32, as in the reader
        want = np.asarray([x for r in rows for x in r[2]], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=2**-23, atol=0)


LIBFM_TEXT = (
    b"# a comment line\n"
    b"1 3:1 10:0.5\n"
    b"\n"
    b"-1 qid:7 2:1e-3 4:-2.5E+2   \t\n"
    b"+1 5:1 # trailing comment\r\n"
    b"3.5\n"
    b"  \t \n"
    b"1e-3 0:.5 1:5.\r\n"
    b"-0.25 100000000000:1"
)


def test_libfm_features(tmp_path):
    p = tmp_path / "t.libfm"
    p.write_bytes(LIBFM_TEXT)
    src = source(p, batch_size=2)
    assert src.schema().names == ["label", "idx", "val", "qid"]
    table, positions = read_all(src)
    assert table.schema == src.schema()
    assert table.column("label").to_pylist() == [1.0, -1.0, 1.0, 3.5, 1e-3, -0.25]
    assert table.column("idx").to_pylist() == [[3, 10], [2, 4], [5], [], [0, 1], [100000000000]]
    assert table.column("val").to_pylist() == [
        [1, 0.5],
        [np.float32(1e-3), -250],
        [1],
        [],
        [0.5, 5],
        [1],
    ]
    assert table.column("qid").to_pylist() == [-1, 7, -1, -1, -1, -1]
    assert positions[-1] == Position(str(p), len(LIBFM_TEXT), 6)
    check_libfm(table, ref_libfm(LIBFM_TEXT))


def random_number(rng: random.Random) -> str:
    x = rng.uniform(-1, 1) * 10 ** rng.randint(-12, 12)
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randint(-5, 5))
    if kind == 1:
        return repr(x)
    if kind == 2:
        return f"{x:.6e}"
    if kind == 3:
        return f"{x:.3E}".replace("E", "e+" if "E-" not in f"{x:.3E}" else "e").replace("e++", "e+")
    if kind == 4:
        return f"{abs(x):.4f}"
    if kind == 5:
        return "+" + f"{abs(x):.2f}"
    if kind == 6:
        return f"{rng.randint(0, 99)}." if rng.random() < 0.5 else f".{rng.randint(0, 999):03d}"
    if kind == 7:
        return repr(rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300))
    return "0." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))


def random_libfm(rng: random.Random, n_lines: int) -> bytes:
    lines = []
    for _ in range(n_lines):
        r = rng.random()
        if r < 0.05:
            lines.append(rng.choice(["", "  ", "\t", "# only a comment"]))
            continue
        toks = [random_number(rng)]
        if rng.random() < 0.1:
            toks.append(f"qid:{rng.randint(0, 10**6)}")
        for _ in range(rng.randint(0, 8)):
            toks.append(f"{rng.randint(0, 10 ** rng.randint(1, 15))}:{random_number(rng)}")
        sep = rng.choice([" ", " ", "\t", "  "])
        line = sep.join(toks)
        if rng.random() < 0.1:
            line += rng.choice([" ", "\t", " # c:1 x"])
        if rng.random() < 0.1:
            line += "\r"
        lines.append(line)
    text = "\n".join(lines)
    if rng.random() < 0.5:
        text += "\n"
    return text.encode()


@pytest.mark.parametrize("seed", range(4))
def test_libfm_matches_reference_parser(tmp_path, seed):
    rng = random.Random(seed)
    text = random_libfm(rng, 3000)
    p = tmp_path / "r.libfm"
    p.write_bytes(text)
    for block in (64, 1000, 1 << 20):
        src = source(p, batch_size=rng.choice([1, 7, 512, 65536]), block_size=block)
        table, _ = read_all(src)
        check_libfm(table, ref_libfm(text))


def test_libfm_exact_float_values(tmp_path):
    values = [
        "0.1",
        "1e-3",
        "123456.789",
        "1.7976931348623157e308",
        "5e-324",
        "2.2250738585072014e-308",
        "9007199254740993",
        "0.30000000000000004",
        "1e23",
        "-0",
        "123456789012345678901234567890",
    ]
    p = tmp_path / "v.libfm"
    p.write_text("".join(f"{v} 1:{v}\n" for v in values))
    table, _ = read_all(source(p))
    labels = table.column("label").to_numpy()
    want = np.array([float(v) for v in values])
    np.testing.assert_allclose(labels[want != 5e-324], want[want != 5e-324], rtol=1e-15)
    got = np.array([v[0] for v in table.column("val").to_pylist()], dtype=np.float32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize(
    "line, token, reason",
    [
        ("1 3:x", "3:x", "not a number"),
        ("1 3", "3", "missing ':'"),
        ("1 -3:1", "-3:1", "negative feature index"),
        ("1 a:1", "a:1", "not a non-negative integer"),
        ("1 :1", ":1", "missing feature index"),
        ("1 3:", "3:", "missing value"),
        ("1 3:1:2", "3:1:2", "not a number"),
        ("x 1:1", "x", "label is not a number"),
        ("3:1 4:1", "3:1", "missing label"),
        ("1.5.2 1:1", "1.5.2", "label is not a number"),
        ("1 qid:a 1:1", "qid:a", "qid"),
        ("1 1e:1", "1e:1", "not a non-negative integer"),
        ("1 1:1e", "1:1e", "not a number"),
    ],
)
def test_libfm_malformed_token(tmp_path, line, token, reason):
    p = tmp_path / "bad.libfm"
    p.write_text(f"1 1:1\n\n# comment\r\n-1 2:1\n{line}\n1 1:1\n")
    with pytest.raises(DataError, match=reason) as e:
        read_all(source(p))
    assert (e.value.path, e.value.row, e.value.value) == (str(p), 5, token)
    assert str(p) in str(e.value) and "row 5" in str(e.value)


def test_libfm_error_line_after_resume(tmp_path):
    p = tmp_path / "bad.libfm"
    lines = [f"1 {i}:1" if i % 3 else "" for i in range(200)] + ["1 oops"]
    p.write_text("\n".join(lines) + "\n")
    src = source(p, batch_size=10, block_size=100)
    seen = []
    with pytest.raises(DataError) as e:
        for _, pos in src.batches():
            seen.append(pos)
    assert e.value.row == 201
    assert len(seen) > 3
    with pytest.raises(DataError) as e:
        list(batches(src, start=seen[3]))
    assert e.value.row == 201


def test_libfm_gzip_and_projection(tmp_path):
    p = tmp_path / "t.libsvm.gz"
    p.write_bytes(gzip.compress(LIBFM_TEXT))
    table, _ = read_all(source(p, block_size=16), columns=["idx", "label"])
    assert table.column_names == ["idx", "label"]
    assert table.column("label").to_pylist() == [1.0, -1.0, 1.0, 3.5, 1e-3, -0.25]


# -- Parquet and JSON lines ------------------------------------------------------------------------


def write_parquet(path: Path, start: int, n: int, group: int) -> None:
    t = pa.table(
        {
            "user": np.arange(start, start + n, dtype=np.int32),
            "y": np.arange(start, start + n, dtype=np.float32) / 2,
        }
    )
    pq.write_table(t, path, row_group_size=group)


def test_parquet_row_groups(tmp_path):
    write_parquet(tmp_path / "a.parquet", 0, 23, 5)
    write_parquet(tmp_path / "b.pq", 23, 10, 4)
    src = source(tmp_path, batch_size=7)
    assert src.format == "parquet" and src.total_rows() == 33
    table, positions = read_all(src)
    assert table.column("user").to_pylist() == list(range(33))
    assert [b for b in [p.row for p in positions]] == [7, 14, 21, 23, 7, 10]
    # offset = row group holding the next row
    assert [p.offset for p in positions] == [1, 2, 4, 5, 1, 3]
    table, _ = read_all(src, columns=["y"])
    assert table.column_names == ["y"]


JSONL_TEXT = (
    b'{"user": "a", "n": 1, "tags": [1, 2]}\n'
    b"\n"
    b'{"user": "b", "n": 2, "extra": true}\r\n'
    b"   \n"
    b'{"n": 3, "tags": []}\n'
    b'{"user": "d", "n": 4}'
)


def test_jsonl(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_bytes(JSONL_TEXT)
    src = source(p, batch_size=2, block_size=50)
    assert src.schema().names == ["user", "n", "tags"]
    table, positions = read_all(src)
    assert table.column("user").to_pylist() == ["a", "b", None, "d"]
    assert table.column("n").to_pylist() == [1, 2, 3, 4]
    assert table.column("tags").to_pylist() == [[1, 2], None, [], None]
    assert positions[-1] == Position(str(p), len(JSONL_TEXT), 4)
    table, _ = read_all(src, columns=["n"])
    assert table.column_names == ["n"]


def test_jsonl_errors(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"n": 1}\n\n{"n": 2}\n{"n": \n')
    with pytest.raises(DataError, match="invalid JSON") as e:
        read_all(source(p))
    assert (e.value.path, e.value.row) == (str(p), 4)
    p.write_text('{"n": 1}\n' * 100 + '{"n": "x"}\n')
    with pytest.raises(DataError) as e:
        read_all(source(p, block_size=64))
    assert (e.value.row, e.value.column) == (101, "n")
    p.write_text('{"n": 1}\n')
    (tmp_path / "f.jsonl").write_text('{"m": 1}\n')
    with pytest.raises(DataError) as e:
        read_all(source(tmp_path, block_size=64), columns=["n"])
    assert (e.value.path, e.value.column) == (str(tmp_path / "f.jsonl"), "n")


# -- missing columns -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "libfm"])
def test_missing_column(tmp_path, fmt):
    p = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        p.write_text("a,b\n1,2\n")
        have = "a, b"
    elif fmt == "parquet":
        pq.write_table(pa.table({"a": [1], "b": [2]}), p)
        have = "a, b"
    elif fmt == "jsonl":
        p.write_text('{"a": 1, "b": 2}\n')
        have = "a, b"
    else:
        p.write_text("1 1:1\n")
        have = "label, idx, val, qid"
    with pytest.raises(DataError) as e:
        read_all(source(p), columns=["zz"])
    err = e.value
    assert err.path == str(p) and err.column == "zz" and have in str(err)


# -- resume ----------------------------------------------------------------------------------------


def make_dataset(tmp_path: Path, fmt: str) -> Path:
    d = tmp_path / fmt
    d.mkdir()
    rng = random.Random(1)
    if fmt == "parquet":
        write_parquet(d / "p1.parquet", 0, 37, 8)
        write_parquet(d / "p2.parquet", 37, 3, 2)
        write_parquet(d / "p3.parquet", 40, 12, 12)
    elif fmt == "csv":
        (d / "c1.csv").write_text(CSV_TEXT)
        (d / "c2.csv").write_text(
            "user,item,rating,comment\n"
            + "".join(
                f'u{i},i{i},{i % 5},"c{i}{"," if i % 3 else ""}{chr(10) if i % 7 == 0 else ""}"\n'
                + ("\n" if i % 11 == 0 else "")
                for i in range(60)
            )
        )
        (d / "c3.csv").write_bytes(b"user,item,rating,comment\r\nu,i,1,x\r\nv,j,2,y")
    elif fmt == "libfm":
        (d / "l1.libfm").write_bytes(LIBFM_TEXT)
        (d / "l2.libfm").write_bytes(random_libfm(rng, 80))
        (d / "l3.libfm").write_bytes(b"\n\n# nothing but comments\n")
        (d / "l4.libfm").write_bytes(b"1 1:1\n")
    else:
        (d / "j1.jsonl").write_bytes(JSONL_TEXT)
        (d / "j2.jsonl").write_text(
            "".join(f'{{"user": "u{i}", "n": {i}}}\n' + "\n" * (i % 4 == 0) for i in range(50))
        )
    return d


def by_file(pairs) -> dict[str, pa.Table]:
    """The batches of (batch, Position) pairs as one table per file (types may differ by file)."""
    parts: dict[str, list[pa.RecordBatch]] = {}
    for batch, pos in pairs:
        parts.setdefault(pos.path, []).append(batch)
    return {path: pa.Table.from_batches(b) for path, b in parts.items()}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "libfm", "jsonl"])
@pytest.mark.parametrize("batch_size", [1, 3, 16, 1000])
def test_resume_from_every_position(tmp_path, fmt, batch_size):
    d = make_dataset(tmp_path, fmt)
    src = source(d, batch_size=batch_size, block_size=64)
    table, _ = read_all(src)
    assert table.num_rows > 50
    # The training stream reads each file with its own types: compare file by file.
    stream = SourceStream(src.config, reader=src.reader)
    batches, positions = [], []
    for batch, pos in stream.batches({"done": [], "current": None}):
        assert 0 < batch.num_rows <= batch_size
        batches.append(batch)
        positions.append(pos)
    full = by_file(zip(batches, positions, strict=True))
    assert sum(t.num_rows for t in full.values()) == table.num_rows
    assert len(set(p.path for p in positions)) == len(src.files) - (fmt == "libfm")
    rows_of: dict[str, int] = {}
    for k, pos in enumerate(positions):
        done = rows_of[pos.path] = rows_of.get(pos.path, 0) + batches[k].num_rows
        assert pos.row == done
        pos = Position.from_dict(json.loads(json.dumps(pos.to_dict())))
        rest = by_file(stream.batches(resume_state(src.files, pos)))
        later = src.files[src.files.index(pos.path) + 1 :]
        want = {f: full[f] for f in later if f in full}
        if done < full[pos.path].num_rows:
            want[pos.path] = full[pos.path].slice(done)
        assert rest.keys() == want.keys(), (k, pos)
        for f, t in want.items():
            assert rest[f].equals(t), (k, pos, f)
        # The one-file reader resumes alike.
        one = [b for b, _ in src.reader.read(pos.path, start=pos)]
        if pos.path in want:
            assert pa.Table.from_batches(one).equals(want[pos.path]), (k, pos)
        else:
            assert one == []


def test_resume_checks_its_file(tmp_path):
    d = make_dataset(tmp_path, "libfm")
    src = source(d)
    state = {"done": [], "current": Position("/elsewhere/other.libfm", 0, 0).to_dict()}
    with pytest.raises(DataError, match="no longer part of the source"):
        list(SourceStream(src.config).batches(state))
    with pytest.raises(DataError, match="another file") as e:
        list(src.reader.read(src.files[0], start=Position("/elsewhere/other.libfm", 0, 0)))
    assert e.value.path == src.files[0] and "/elsewhere/other.libfm" in str(e.value)
    # The data moved along with its checkpoint: same file name.
    pos = Position("/old/place/l2.libfm", 0, 0)
    assert next(src.reader.read(str(d / "l2.libfm"), start=pos))[1].path == str(d / "l2.libfm")


# -- standard input --------------------------------------------------------------------------------

STDIN_SCRIPT = """
import json, sys
from streamfm.config import SourceConfig
from streamfm.sources import Position, open_source
src = open_source(SourceConfig(path="-", format=sys.argv[1], batch_size=2))
if sys.argv[2] == "peek":
    print(json.dumps(src.schema().names))
start = Position.from_dict(json.loads(sys.argv[3])) if len(sys.argv) > 3 else None
rows, positions = [], []
for batch, pos in src.batches() if start is None else src.reader.read("-", start=start):
    rows.extend(batch.to_pylist())
    positions.append(pos.to_dict())
print(json.dumps({"rows": rows, "last": positions[-1], "positions": positions}))
"""


@pytest.mark.parametrize("peek", ["peek", "no"])
@pytest.mark.parametrize(
    "fmt, data, rows",
    [
        ("csv", CSV_TEXT.encode(), 5),
        ("libfm", LIBFM_TEXT, 6),
        ("jsonl", JSONL_TEXT, 4),
    ],
)
def test_stdin(fmt, data, rows, peek):
    out = (
        subprocess.run(
            [sys.executable, "-c", STDIN_SCRIPT, fmt, peek],
            input=data,
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        .stdout.decode()
        .splitlines()
    )
    result = json.loads(out[-1])
    assert len(result["rows"]) == rows
    assert result["last"]["path"] == "-" and result["last"]["row"] == rows
    if peek == "peek":
        assert json.loads(out[0]) == list(result["rows"][0])
    if fmt == "libfm":
        assert [r["label"] for r in result["rows"]] == [1.0, -1.0, 1.0, 3.5, 1e-3, -0.25]
        assert result["last"]["offset"] == len(data)


@pytest.mark.parametrize(
    "fmt, data", [("csv", CSV_TEXT.encode()), ("libfm", LIBFM_TEXT), ("jsonl", JSONL_TEXT)]
)
def test_stdin_resume(fmt, data):
    def run(*args):
        out = subprocess.run(
            [sys.executable, "-c", STDIN_SCRIPT, fmt, "no", *args],
            input=data,
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        return json.loads(out.stdout.decode().splitlines()[-1])

    full = run()
    for k, pos in enumerate(full["positions"][:-1]):
        rest = run(json.dumps(pos))
        assert rest["rows"] == full["rows"][2 * (k + 1) :]
        assert rest["last"] == full["last"]
