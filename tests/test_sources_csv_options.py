"""CSV options `skip_lines` and `trim_whitespace`, on small generated files."""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from source_helpers import read_all, source

from streamfm.config import CsvOptions
from streamfm.errors import DataError
from streamfm.sources import Position
from streamfm.sources.csv import _TextFilter

ROOT = Path(__file__).resolve().parent.parent


def filtered(text: bytes, skip=0, trim=True, delim=",", quote='"', read_size=None) -> bytes:
    f = _TextFilter(io.BytesIO(text), skip, trim, delim, quote)
    if read_size is None:
        return f.read()
    out = b""
    while chunk := f.read(read_size):
        out += chunk
    return out


# -- trim_whitespace ------------------------------------------------------------------------------

# Like UCI Adult: ", " between fields, "?" for missing, a label with a trailing dot.
ADULT_LIKE = (
    "39, State-gov, 77516, Never-married, <=50K.\n"
    "50, ?, 83311, Married-civ-spouse, >50K.\n"
    " 38 ,\tPrivate\t, 215646 , ? , >50K.  \n"
)


def test_trim_whitespace_values_nulls_and_types(tmp_path):
    p = tmp_path / "a.test"
    p.write_text(ADULT_LIKE)
    names = ["age", "workclass", "fnlwgt", "marital", "income"]
    opts = CsvOptions(header=False, column_names=names, trim_whitespace=True)
    table, positions = read_all(source(p, format="csv", csv=opts))
    assert table.schema == pa.schema(
        [
            ("age", pa.int64()),
            ("workclass", pa.string()),
            ("fnlwgt", pa.int64()),
            ("marital", pa.string()),
            ("income", pa.string()),
        ]
    )
    assert table.to_pydict() == {
        "age": [39, 50, 38],
        "workclass": ["State-gov", None, "Private"],
        "fnlwgt": [77516, 83311, 215646],
        "marital": ["Never-married", "Married-civ-spouse", None],
        "income": ["<=50K.", ">50K.", ">50K."],
    }
    assert positions[-1] == Position(str(p), 0, 3)
    # Off (the default): the blanks stay and " ?" is a value, not missing.
    table, _ = read_all(
        source(p, format="csv", csv=opts.model_copy(update={"trim_whitespace": False}))
    )
    assert table.column("workclass").to_pylist() == [" State-gov", " ?", "\tPrivate\t"]


def test_trim_whitespace_header_quotes_and_inner_blanks(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(
        ' user , "the item" ,rating\n'
        ' u 1 ,  " a, b " , 4.5\n'
        'u2,"say ""hi"" "  ,  ?  \n'
        "\n"
        "   \n"  # blank once trimmed: ignored like an empty line
        'u3 , "multi\n line ",1\n'
    )
    table, _ = read_all(source(p, csv=CsvOptions(trim_whitespace=True)))
    assert table.column_names == ["user", "the item", "rating"]
    assert table.to_pydict() == {
        "user": ["u 1", "u2", "u3"],
        "the item": [" a, b ", 'say "hi" ', "multi\n line "],
        "rating": [4.5, None, 1.0],
    }


def test_trim_numeric_column_with_padded_missing_stays_numeric(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a, b\n1, 2.5\n2, ?\n3, NA\n")
    table, _ = read_all(source(p, csv=CsvOptions(trim_whitespace=True)))
    assert table.schema == pa.schema([("a", pa.int64()), ("b", pa.float64())])
    assert table.column("b").to_pylist() == [2.5, None, None]


def test_trim_with_tab_delimiter_keeps_tabs_as_separators(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text("a\t b \n x y \t \n")
    table, _ = read_all(source(p, csv=CsvOptions(trim_whitespace=True)))
    assert table.to_pydict() == {"a": ["x y"], "b": [None]}


def test_trim_with_quoting_off(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text('a,b\n " x , "y" \n')
    table, _ = read_all(source(p, csv=CsvOptions(trim_whitespace=True, quote_char=None)))
    assert table.to_pydict() == {"a": ['" x'], "b": ['"y"']}


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 64])
def test_filter_is_independent_of_read_sizes(read_size):
    rng = random.Random(read_size)
    text = b"".join(
        b" " * rng.randrange(3)
        + rng.choice([b"x", b"a b", b'"q , ""q"" "', b"", b"\t"])
        + b" " * rng.randrange(3)
        + rng.choice([b",", b"\n", b"\r\n", b" ,\t"])
        for _ in range(300)
    )
    whole = filtered(text, skip=2)
    assert filtered(text, skip=2, read_size=read_size) == whole
    assert whole.count(b"\n") == text.count(b"\n") - 2  # newlines are never removed


# -- skip_lines -----------------------------------------------------------------------------------


def test_skip_lines_before_header(tmp_path):
    p = tmp_path / "r.csv"
    # The skipped lines are not parsed: a stray quote or a different width does not matter.
    p.write_text('|1x3 Cross validator\n\n"unclosed, quote\nuser,rating\nu1,4\nu2,5\n')
    table, positions = read_all(source(p, csv=CsvOptions(skip_lines=3)))
    assert table.to_pydict() == {"user": ["u1", "u2"], "rating": [4, 5]}
    assert positions[-1].row == 2
    assert source(p, csv=CsvOptions(skip_lines=3)).schema().names == ["user", "rating"]


def test_skip_lines_without_header_applies_to_every_file(tmp_path):
    for name, rows in [("1.csv", "1,a\n2,b\n"), ("2.csv", "3,c\n")]:
        (tmp_path / name).write_text("|1x3 Cross validator\n" + rows)
    opts = CsvOptions(header=False, column_names=["n", "s"], skip_lines=1)
    table, positions = read_all(source(tmp_path, csv=opts))
    assert table.to_pydict() == {"n": [1, 2, 3], "s": ["a", "b", "c"]}
    assert [p.row for p in positions] == [2, 1]


def test_skip_lines_past_the_end_reads_nothing(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a\n1\n")
    table, positions = read_all(source(p, csv=CsvOptions(skip_lines=5)))
    assert table is None and positions == []


def test_skip_lines_and_trim_on_gzip(tmp_path):
    p = tmp_path / "r.csv.gz"
    p.write_bytes(gzip.compress(b"junk\n a , b \n 1 , x \n"))
    table, _ = read_all(source(p, csv=CsvOptions(skip_lines=1, trim_whitespace=True)))
    assert table.to_pydict() == {"a": [1], "b": ["x"]}


def test_skip_lines_must_not_be_negative():
    with pytest.raises(ValidationError):
        CsvOptions(skip_lines=-1)


def test_error_lines_count_the_skipped_lines(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("title\n\n a , b \n 1 , 2 \n 3 \n 4 , 5 \n")
    with pytest.raises(DataError) as e:
        read_all(source(p, csv=CsvOptions(skip_lines=2, trim_whitespace=True)))
    assert e.value.row == 5 and "expected 2 columns, got 1" in str(e.value)
    assert e.value.value == "3"


def test_type_error_lines_count_the_skipped_lines(tmp_path):
    p = tmp_path / "r.csv"
    lines = ["# exported 2026-11-21", "user, n"] + [f"u{i}, {i}" for i in range(400)] + ["u, 2.5"]
    p.write_text("\n".join(lines) + "\n")
    src = source(p, block_size=256, csv=CsvOptions(skip_lines=1, trim_whitespace=True))
    with pytest.raises(DataError) as e:
        read_all(src)
    assert (e.value.row, e.value.column, e.value.value) == (403, "n", "2.5")


# -- resume and standard input --------------------------------------------------------------------


def random_padded_csv(rng: random.Random, n: int) -> tuple[str, list[dict]]:
    """A file with two junk lines, a padded header and `n` padded rows, and the rows expected."""

    def pad(s: str) -> str:
        return rng.choice(["", " ", "  ", "\t", " \t "]) + s + rng.choice(["", " ", "\t  "])

    out = ['|junk, "with a quote', "", pad("k") + "," + pad("v") + "," + pad("x")]
    rows = []
    for i in range(n):
        v = rng.choice(["a", "b c", "?", None])
        if v is None:  # a quoted value keeps its blanks, commas and newlines
            v = rng.choice([" q ", "q,r", "l1\nl2 ", ""])
            cell = '"' + v + '"'
            v = v or None  # "" is a null value, quoted or not
        else:
            cell = v
            v = None if v == "?" else v
        x = rng.choice(["1", "2.5", "?"])
        out.append(pad(f"k{i}") + "," + pad(cell) + "," + pad(x))
        if rng.random() < 0.1:
            out.append(rng.choice(["", "   "]))
        rows.append({"k": f"k{i}", "v": v, "x": None if x == "?" else float(x)})
    return "\n".join(out) + rng.choice(["", "\n"]), rows


@pytest.mark.parametrize("seed", range(3))
def test_random_padded_files_and_resume_from_every_position(tmp_path, seed):
    rng = random.Random(seed)
    expected = []
    for f in range(3):
        text, rows = random_padded_csv(rng, 40)
        (tmp_path / f"{f}.csv").write_bytes(text.encode())
        expected += rows
    opts = CsvOptions(skip_lines=2, trim_whitespace=True, column_types={"x": "float64"})
    src = source(tmp_path, batch_size=7, block_size=64, csv=opts)
    rows, ends = [], []
    for batch, pos in src.batches():
        rows += batch.to_pylist()
        ends.append((len(rows), pos))
    assert rows == expected
    for done, pos in ends:
        rest, _ = read_all(src, start=Position.from_dict(json.loads(json.dumps(pos.to_dict()))))
        if done == len(expected):
            assert rest is None
        else:
            assert rest.to_pylist() == expected[done:], pos


STDIN_SCRIPT = """
import json, sys
from streamfm.config import CsvOptions, SourceConfig
from streamfm.sources import Position, open_source
opts = CsvOptions(skip_lines=1, trim_whitespace=True)
src = open_source(SourceConfig(path="-", format="csv", batch_size=2, csv=opts))
if sys.argv[1] == "peek":
    print(json.dumps(src.schema().names))
start = Position.from_dict(json.loads(sys.argv[2])) if len(sys.argv) > 2 else None
pairs = src.batches() if start is None else src.reader.read("-", start=start)
rows = [r for batch, _ in pairs for r in batch.to_pylist()]
print(json.dumps(rows))
"""


@pytest.mark.parametrize(
    "args", [["peek"], ["no"], ["no", '{"file_index": 0, "path": "-", "offset": 0, "row": 2}']]
)
def test_stdin(args):
    data = b"junk line\n a , b \n 1 , x \n 2 , ? \n 3 , z z \n"
    out = subprocess.run(
        [sys.executable, "-c", STDIN_SCRIPT, *args],
        input=data,
        capture_output=True,
        check=True,
        cwd=ROOT,
    ).stdout.decode()
    lines = out.splitlines()
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": None}, {"a": 3, "b": "z z"}]
    if args[0] == "peek":
        assert json.loads(lines[0]) == ["a", "b"]
    assert json.loads(lines[-1]) == (rows[2:] if len(args) > 1 else rows)
