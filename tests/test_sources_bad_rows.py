"""Bad rows in the readers: DataError without a callback; with `Reader.on_bad_row`, each bad row
reported once (as a BadRow) and skipped, and resume exact after skipped rows."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from source_helpers import batches, source

import streamfm.sources.libfm as libfm
from streamfm.config import CsvOptions
from streamfm.errors import DataError
from streamfm.sources import BadRow, Position

ROOT = Path(__file__).resolve().parent.parent


def ids(batch: pa.RecordBatch, fmt: str) -> list[int]:
    """The first column (label, id): the good rows' numbers."""
    return [int(x) for x in batch.column(0).to_pylist()]


def run(src, fmt: str, start: Position | None = None):
    """(row ids, BadRows, positions, [(rows, bad rows) delivered when each position came])."""
    bad: list[BadRow] = []
    src.on_bad_row = bad.append
    rows, positions, seen = [], [], []
    for batch, pos in batches(src, start=start):
        assert 0 < batch.num_rows <= src.batch_size
        rows.extend(ids(batch, fmt))
        positions.append(pos)
        seen.append((len(rows), len(bad)))
    return rows, bad, positions, seen


def check(src, fmt: str, want_rows: list[int], want_bad: list[tuple]) -> None:
    """One read gives the good rows and the bad ones (path, row, reason part, text), in order;
    resuming at every position gives the rest of both: each bad row is reported before exactly
    the positions that are past it."""
    rows, bad, positions, seen = run(src, fmt)
    assert rows == want_rows
    assert [(b.path, b.row, b.text) for b in bad] == [(p, r, t) for p, r, _, t in want_bad]
    for b, (_, _, reason, _) in zip(bad, want_bad, strict=True):
        assert reason in b.reason, (b, reason)
        assert b.column is None
    assert positions
    for pos, (n_rows, n_bad) in zip(positions, seen, strict=True):
        pos = Position.from_dict(json.loads(json.dumps(pos.to_dict())))
        rest, rest_bad, _, _ = run(src, fmt, start=pos)
        assert rest == rows[n_rows:], pos
        assert rest_bad == bad[n_bad:], pos


def test_bad_row_api():
    b = BadRow("a.csv", 3, "expected 2 columns, got 1", "x")
    assert (b.path, b.row, b.reason, b.text, b.column) == ("a.csv", 3, b.reason, "x", None)
    with pytest.raises(AttributeError):
        b.row = 4  # frozen
    src = source(ROOT / "pyproject.toml", format="csv")
    assert src.on_bad_row is None


# -- libFM -----------------------------------------------------------------------------------------

# (line, token, part of the reason)
LIBFM_BAD = [
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
    ("1 2:1 1:1e # c", "1:1e", "not a number"),
]


def libfm_case(path: Path, seed: int, n: int = 300, eol: str = "\n", final_eol: bool = True):
    """A libFM file whose good rows have their line's index as label; (rows, expected bad)."""
    rng = random.Random(seed)
    lines, rows, bad = [], [], []
    # Bad lines first, at a block end, in a row, and last.
    at_bad = {0, 1, 5, 6, 7, n - 1} | {rng.randrange(n) for _ in range(n // 8)}
    for i in range(n):
        if i in at_bad:
            line, token, reason = LIBFM_BAD[rng.randrange(len(LIBFM_BAD))]
            lines.append(line)
            bad.append((str(path), i + 1, reason, line))
        elif rng.random() < 0.1:
            lines.append(rng.choice(["", "  ", "# comment 1:x"]))
        else:
            lines.append(f"{i} {i % 7}:1 qid:{i % 3} {10 + i % 5}:0.5" + rng.choice(["", " # c"]))
            rows.append(i)
    text = eol.join(lines) + (eol if final_eol else "")
    path.write_bytes(text.encode())
    return rows, bad


@pytest.mark.parametrize("seed, eol, final_eol", [(0, "\n", True), (1, "\r\n", False)])
@pytest.mark.parametrize("block_size", [64, 300, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_libfm_bad_lines(tmp_path, seed, eol, final_eol, block_size, batch_size):
    p = tmp_path / "d.libfm"
    rows, bad = libfm_case(p, seed, eol=eol, final_eol=final_eol)
    check(source(p, block_size, batch_size=batch_size), "libfm", rows, bad)


def test_libfm_bad_line_reasons(tmp_path):
    p = tmp_path / "d.libfm"
    p.write_text("".join(f"{line}\n1 1:1\n" for line, _, _ in LIBFM_BAD))
    src = source(p)
    rows, bad, _, _ = run(src, "libfm")
    assert rows == [1] * len(LIBFM_BAD)
    assert len(bad) == len(LIBFM_BAD)
    for b, (line, token, reason), k in zip(bad, LIBFM_BAD, range(len(LIBFM_BAD)), strict=True):
        assert (b.path, b.row, b.text) == (str(p), 2 * k + 1, line)
        assert b.reason.startswith(f"malformed token '{token}': ") and reason in b.reason


@pytest.mark.parametrize("max_bad", [1, 2])
def test_libfm_many_bad_lines_in_a_block(tmp_path, monkeypatch, max_bad):
    # The parser stops after `_MAX_BAD` bad lines; the rest of the block is parsed again.
    monkeypatch.setattr(libfm, "_MAX_BAD", max_bad)
    p = tmp_path / "d.libfm"
    lines = [f"{i} 1:1" if i % 3 == 0 else f"{i} oops{i}" for i in range(60)]
    p.write_text("\n".join(lines) + "\n")
    want_bad = [(str(p), i + 1, "missing ':'", lines[i]) for i in range(60) if i % 3]
    for block_size in (50, 1 << 20):
        src = source(p, block_size, batch_size=4)
        check(src, "libfm", list(range(0, 60, 3)), want_bad)


def test_libfm_without_callback_raises(tmp_path):
    p = tmp_path / "d.libfm"
    rows, bad = libfm_case(p, 3, n=200)
    first = bad[0]
    with pytest.raises(DataError) as e:
        list(source(p, 64).batches())
    assert (e.value.path, e.value.row) == (str(p), first[1])
    assert first[2] in str(e.value) and f"row {first[1]}" in str(e.value)
    # A bad line in a later block, after a resume (line numbers counted from the file start).
    p.write_text("".join(f"{i} 1:1\n" for i in range(50)) + "7 1:1 2:z\n")
    src = source(p, 64, batch_size=5)
    positions = []
    with pytest.raises(DataError) as e:
        for _, pos in src.batches():
            positions.append(pos)
    assert e.value.row == 51 and "not a number" in str(e.value)
    with pytest.raises(DataError) as e:
        list(batches(src, start=positions[3]))
    assert e.value.row == 51


def test_libfm_long_bad_line_text_is_cut(tmp_path):
    p = tmp_path / "d.libfm"
    long = "1 " + " ".join(f"{k}:1" for k in range(1000)) + " 5:x"
    p.write_text(f"0 1:1\n{long}\n2 1:1\n")
    rows, bad, _, _ = run(source(p), "libfm")
    assert rows == [0, 2]
    assert len(bad) == 1 and bad[0].row == 2
    assert bad[0].text.startswith("1 0:1 1:1") and len(bad[0].text) <= 1003
    assert "'5:x'" in bad[0].reason


def test_libfm_bad_rows_across_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    rows1, bad1 = libfm_case(d / "a.libfm", 4, n=80)
    (d / "b.libfm").write_text("x\ny 1:1\n")  # nothing but bad lines
    rows3, bad3 = libfm_case(d / "c.libfm", 5, n=80)
    bad2 = [(str(d / "b.libfm"), 1, "label", "x"), (str(d / "b.libfm"), 2, "label", "y 1:1")]
    src = source(d, 100, batch_size=6)
    rows, bad, positions, _ = run(src, "libfm")
    assert rows == rows1 + rows3
    assert [(b.path, b.row) for b in bad] == [(p, r) for p, r, _, _ in bad1 + bad2 + bad3]
    # Resuming in the third file reports the bad lines of that file after the position only.
    check(src, "libfm", rows1 + rows3, bad1 + bad2 + bad3)


# -- CSV -------------------------------------------------------------------------------------------


def csv_case(path: Path, seed: int, opts: CsvOptions, n: int = 120, eol: str = "\n"):
    """A CSV file of columns id, name, score; good rows have their index as id."""
    rng = random.Random(seed)
    records: list[str] = []
    rows, bad = [], []
    line = 1
    if opts.skip_lines:
        records += ["# a title, with, commas", "another, junk line"][: opts.skip_lines]
        line += opts.skip_lines
    if opts.header:
        records.append("id,name,score")
        line += 1
    for i in range(n):
        r = rng.random()
        if (i in (0, 1) and opts.header) or i == n - 1 or r < 0.12:
            text, fields = rng.choice(
                [(f"{i},short", 2), (f'{i},"a, b",1,extra', 4), (f'"multi\nline",{i}', 2), (" ", 1)]
            )
            bad.append((str(path), line, f"expected 3 columns, got {fields}", text))
        elif r < 0.2:
            text = f'{i},"quoted\nnewline, ""and"" quotes",{i % 3}'
            rows.append(i)
        elif r < 0.25:
            records.append("")
            line += 1
            continue
        else:
            text = f"{i},n{i},{i % 5}"
            rows.append(i)
        records.append(text)
        line += 1 + text.count("\n")
    if not opts.header and opts.column_names is None:
        # The first record sets the number of columns.
        records.insert(0, "-1,first,0")
        rows.insert(0, -1)
        bad = [(p, r + 1, reason, t) for p, r, reason, t in bad]
    path.write_bytes(eol.join(records).encode() + (eol.encode() if seed % 2 else b""))
    return rows, bad


CSV_OPTS = {
    "header": CsvOptions(column_types={"id": "int64"}),
    "names": CsvOptions(header=False, column_names=["id", "name", "score"]),
    "no-names": CsvOptions(header=False, column_names=None),
    "skip-lines": CsvOptions(skip_lines=2),
}


@pytest.mark.parametrize("opts", list(CSV_OPTS))
@pytest.mark.parametrize("seed, eol", [(0, "\n"), (1, "\r\n")])
@pytest.mark.parametrize("block_size", [64, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 5, 1000])
def test_csv_ragged_records(tmp_path, opts, seed, eol, block_size, batch_size):
    p = tmp_path / "d.csv"
    options = CSV_OPTS[opts]
    rows, bad = csv_case(p, seed, options, eol=eol)
    check(source(p, block_size, batch_size=batch_size, csv=options), "csv", rows, bad)


def test_csv_positions_count_good_rows_and_skipped_records(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,v\n1,a\n2\n3,c,x\n4,d\n5\n")
    src = source(p, batch_size=1)
    rows, bad, positions, seen = run(src, "csv")
    assert rows == [1, 4]
    assert [(b.row, b.text) for b in bad] == [(3, "2"), (4, "3,c,x"), (6, "5")]
    assert [b.reason for b in bad] == [
        "expected 2 columns, got 1",
        "expected 2 columns, got 3",
        "expected 2 columns, got 1",
    ]
    # Row 1 came before its following bad records were reported; row 4 came after the last one.
    assert [(pos.row, pos.offset) for pos in positions] == [(1, 0), (2, 0)]
    assert seen == [(1, 0), (2, 2)]
    # The last batch, yielded once the file ended, is past the record reported last.
    src = source(p, batch_size=3)
    _, _, positions, seen = run(src, "csv")
    assert [(pos.row, pos.offset) for pos in positions] == [(2, 1)]
    assert seen == [(2, 3)]
    assert run(src, "csv", start=positions[0])[:2] == ([], [])


def test_csv_without_callback_raises(tmp_path):
    p = tmp_path / "d.csv"
    rows, bad = csv_case(p, 2, CSV_OPTS["header"])
    with pytest.raises(DataError) as e:
        list(source(p, 64).batches())
    assert (e.value.path, e.value.row) == (str(p), bad[0][1])
    assert bad[0][2] in str(e.value)


def test_csv_conversion_error_is_not_skipped(tmp_path):
    # A value that does not fit its column's type cannot be skipped by pyarrow: still an error,
    # located after the skipped records.
    p = tmp_path / "d.csv"
    p.write_text("id,v\n1,2\n2\n3,4,5\n4,x\n")
    src = source(p, csv=CsvOptions(column_types={"v": "int64"}))
    src.on_bad_row = [].append
    with pytest.raises(DataError) as e:
        list(src.batches())
    assert (e.value.path, e.value.row, e.value.column, e.value.value) == (str(p), 5, "v", "x")


def test_csv_schema_ignores_bad_records_with_callback(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,v\n1\n2,3\n")
    src = source(p)
    with pytest.raises(DataError):
        src.schema()
    src = source(p)
    src.on_bad_row = [].append
    assert src.schema().names == ["id", "v"]


# -- JSON lines ------------------------------------------------------------------------------------

JSON_BAD = [
    ('{"id": 1, "x": ', "invalid JSON"),
    ('{"id": 1 "x": 2}', "invalid JSON"),
    ('{"id": 1}{"id": 2}', "invalid JSON: Extra data"),
    ("[1, 2]", "not a JSON object but an array"),
    ("3", "not a JSON object but a number"),
    ('"s"', "not a JSON object but a string"),
    ("null", "not a JSON object but null"),
    ("true", "not a JSON object but a boolean"),
    ("{oops}", "invalid JSON"),
]


def jsonl_case(path: Path, seed: int, n: int = 150):
    rng = random.Random(seed)
    lines, rows, bad = [], [], []
    for i in range(n):
        r = rng.random()
        if i in (0, 4, n - 1) or r < 0.15:
            text, reason = JSON_BAD[rng.randrange(len(JSON_BAD))]
            bad.append((str(path), len(lines) + 1, reason, text))
        elif r < 0.2:
            text = rng.choice(["", "  ", "\t"])
        else:
            text = json.dumps({"id": i, "x": i / 2, "tags": [i, i + 1][: 1 + i % 2]})
            rows.append(i)
        lines.append(text)
    path.write_text("\n".join(lines) + "\n" * (seed % 2))
    return rows, bad


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("block_size", [64, 500, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 6, 1000])
def test_jsonl_bad_lines(tmp_path, seed, block_size, batch_size):
    p = tmp_path / "d.jsonl"
    rows, bad = jsonl_case(p, seed)
    src = source(p, block_size, batch_size=batch_size)
    check(src, "jsonl", rows, bad)
    table = pa.Table.from_batches([b for b, _ in src.batches()])
    assert table.schema.names == ["id", "x", "tags"]
    assert table.column("x").to_pylist() == [i / 2 for i in rows]


def test_jsonl_without_callback_raises(tmp_path):
    p = tmp_path / "d.jsonl"
    for text, reason in JSON_BAD:
        p.write_text('{"id": 1}\n\n' + text + '\n{"id": 2}\n')
        with pytest.raises(DataError) as e:
            list(source(p).batches())
        assert (e.value.path, e.value.row) == (str(p), 3), text
        assert reason in str(e.value)
    # In a later block, after a resume.
    p.write_text("".join(f'{{"id": {i}}}\n' for i in range(40)) + "[7]\n")
    src = source(p, 64, batch_size=3)
    positions = []
    with pytest.raises(DataError) as e:
        for _, pos in src.batches():
            positions.append(pos)
    assert e.value.row == 41 and "not a JSON object" in str(e.value)
    with pytest.raises(DataError) as e:
        list(batches(src, start=positions[5]))
    assert e.value.row == 41


def test_jsonl_wrong_type_is_a_bad_row(tmp_path):
    # A valid object whose value does not fit the column's type: a bad row naming the column
    # (an error without a callback), not an error of the whole file.
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": 1}\n[1]\n{"id": "x"}\n')
    src = source(p)
    with pytest.raises(DataError) as e:
        list(src.batches())
    assert (e.value.row, e.value.column) == (2, None)  # the array line comes first
    reported = []
    src.on_bad_row = reported.append
    rows = [r for batch, _ in src.batches() for r in batch.column("id").to_pylist()]
    assert rows == [1]
    assert [(b.row, b.column) for b in reported] == [(2, None), (3, "id")]


@pytest.mark.parametrize("fmt", ["csv", "libfm", "jsonl"])
def test_bad_rows_in_compressed_files(tmp_path, fmt):
    # No seeking: resume reads up to its position, the CSV scanner reads the file again.
    p = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        rows, bad = csv_case(p, 3, CSV_OPTS["header"], n=80)
    elif fmt == "libfm":
        rows, bad = libfm_case(p, 3, n=80)
    else:
        rows, bad = jsonl_case(p, 3, n=80)
    gz = tmp_path / f"d.{fmt}.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    bad = [(str(gz), r, reason, t) for _, r, reason, t in bad]
    check(source(gz, 100, batch_size=6), fmt, rows, bad)


# -- Parquet ---------------------------------------------------------------------------------------


def test_parquet_has_no_bad_rows(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": list(range(10))}), p, row_group_size=3)
    check(source(p, batch_size=4), "parquet", list(range(10)), [])


# -- standard input --------------------------------------------------------------------------------

STDIN_SCRIPT = """
import json, sys
from streamfm.config import SourceConfig
from streamfm.sources import Position, open_source
fmt, block, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = open_source(SourceConfig(path="-", format=fmt, batch_size=batch))
src.reader.block_size = block
bad = []
src.on_bad_row = lambda b: bad.append([b.path, b.row, b.reason, b.text])
start = Position.from_dict(json.loads(sys.argv[4])) if len(sys.argv) > 4 else None
out = {"rows": [], "bad": bad, "positions": [], "seen": []}
for batch, pos in src.batches() if start is None else src.reader.read("-", start=start):
    out["rows"].extend(batch.column(0).to_pylist())
    out["positions"].append(pos.to_dict())
    out["seen"].append([len(out["rows"]), len(bad)])
print(json.dumps(out))
"""


@pytest.mark.parametrize("fmt", ["csv", "libfm", "jsonl"])
def test_stdin_bad_rows(tmp_path, fmt):
    p = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        rows, bad = csv_case(p, 1, CsvOptions(), n=60)
    elif fmt == "libfm":
        rows, bad = libfm_case(p, 1, n=60)
    else:
        rows, bad = jsonl_case(p, 1, n=60)
    data = p.read_bytes()

    def stdin(*args):
        out = subprocess.run(
            [sys.executable, "-c", STDIN_SCRIPT, fmt, "100", "4", *args],
            input=data,
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        return json.loads(out.stdout.decode().splitlines()[-1])

    full = stdin()
    assert [int(r) for r in full["rows"]] == rows
    assert [(b[0], b[1], b[3]) for b in full["bad"]] == [("-", r, t) for _, r, _, t in bad]
    for pos, (n_rows, n_bad) in list(zip(full["positions"], full["seen"], strict=True))[::3]:
        rest = stdin(json.dumps(pos))
        assert rest["rows"] == full["rows"][n_rows:]
        assert rest["bad"] == full["bad"][n_bad:]
