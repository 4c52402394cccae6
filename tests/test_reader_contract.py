"""The contract every Reader keeps, run over each format (text formats also gzipped), on small
synthetic files: resuming at any Position yielded gives exactly the rest, for one file (the
reader) and across files (the stream); with `on_bad_row`, every bad row is reported once, at its
physical line, and a resume reports each later bad row again and no earlier one."""

from __future__ import annotations

import copy
import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from source_helpers import read_all, source

from streamfm.sources import BadRow, Position, SourceStream

KINDS = ["parquet", "csv", "csv.gz", "libfm", "libfm.gz", "jsonl", "jsonl.gz"]
TEXT_KINDS = [k for k in KINDS if k != "parquet"]


def write(folder: Path, name: str, kind: str, seed: int, n: int = 60, bad: bool = True):
    """A file of `n` data rows (ids `seed * 1000 + i`), some of them bad when `bad` (text
    formats only): (path, ids of the good rows, [(line, text)] of the bad ones)."""
    rng = random.Random(seed)
    path = folder / f"{name}.{kind}"
    base = seed * 1000
    if kind == "parquet":
        ids = list(range(base, base + n))
        table = pa.table({"id": ids, "x": [i / 2 for i in ids]})
        pq.write_table(table, path, row_group_size=rng.choice([1, 7, 100]))
        return path, ids, []
    fmt = kind.split(".")[0]
    lines: list[str] = ["id,name,score"] if fmt == "csv" else []
    line = len(lines) + 1  # physical line of the next record
    ids, bad_rows = [], []
    bad_at = {0, n - 1, 5, 6} | {rng.randrange(n) for _ in range(n // 6)} if bad else set()
    for k in range(n):
        i = base + k
        if rng.random() < 0.1:  # blank lines (and libFM comments) are not rows
            lines.append("# only a comment" if fmt == "libfm" else "")
            line += 1
        if k in bad_at:
            text = rng.choice(
                {
                    "csv": [f"{i},short", f'{i},"a, b",1,extra', f'"two\nlines",{i}'],
                    "libfm": [f"{i} 1:x", f"{i} oops", f"x{i} 1:1"],
                    "jsonl": ['{"id": ' + str(i), f"[{i}]", "{oops}"],
                }[fmt]
            )
            bad_rows.append((line, text))
        else:
            text = {
                "csv": f"{i},n{i},{i % 5}" if k % 4 else f'{i},"multi\nline, ""q""",{i % 5}',
                "libfm": f"{i} {i % 7}:1 {10 + i % 3}:0.5",
                "jsonl": json.dumps({"id": i, "x": i / 2}),
            }[fmt]
            ids.append(i)
        lines.append(text)
        line += 1 + text.count("\n")
    data = ("\n".join(lines) + ("\n" if seed % 2 else "")).encode()
    path.write_bytes(gzip.compress(data) if kind.endswith(".gz") else data)
    return path, ids, bad_rows


def ids_of(batches) -> list[int]:
    return [int(v) for b in batches for v in b.column(0).to_pylist()]


def roundtrip(pos: Position) -> Position:
    return Position.from_dict(json.loads(json.dumps(pos.to_dict())))


def read(reader, path, start=None):
    """(batches, positions, bad rows reported, [bad rows reported when each position came])."""
    bad: list[BadRow] = []
    reader.on_bad_row = bad.append
    batches, positions, seen = [], [], []
    for batch, pos in reader.read(str(path), start=start):
        assert 0 < batch.num_rows <= reader.batch_size
        batches.append(batch)
        positions.append(pos)
        seen.append(len(bad))
    return batches, positions, bad, seen


# -- one file: the reader --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
@pytest.mark.parametrize("block_size", [64, 1 << 20])
def test_resume_at_every_position_gives_the_rest(tmp_path, kind, batch_size, block_size):
    path, ids, _ = write(tmp_path, "d", kind, seed=1, bad=False)
    reader = source(path, block_size, batch_size=batch_size).reader
    batches, positions, _, _ = read(reader, path)
    full = pa.Table.from_batches(batches)
    assert ids_of(batches) == ids
    assert [p.path for p in positions] == [str(path)] * len(positions)
    done = 0
    for batch, pos in zip(batches, positions, strict=True):
        done += batch.num_rows
        assert pos.row == done
        rest, rest_positions, _, _ = read(reader, path, start=roundtrip(pos))
        if done == full.num_rows:
            assert rest == []
        else:
            assert pa.Table.from_batches(rest).equals(full.slice(done)), pos
            assert rest_positions == positions[len(positions) - len(rest_positions) :]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
@pytest.mark.parametrize("block_size", [64, 1 << 20])
def test_bad_rows_reported_once_and_again_after_a_resume(tmp_path, kind, batch_size, block_size):
    path, ids, want_bad = write(tmp_path, "d", kind, seed=2)
    reader = source(path, block_size, batch_size=batch_size).reader
    batches, positions, bad, seen = read(reader, path)
    assert ids_of(batches) == ids
    assert [(b.path, b.row, b.text) for b in bad] == [(str(path), r, t) for r, t in want_bad]
    # Every data row written is either yielded or reported.
    assert sum(b.num_rows for b in batches) + len(bad) == len(ids) + len(want_bad)
    done = 0
    for batch, pos, n_bad in zip(batches, positions, seen, strict=True):
        done += batch.num_rows
        rest, _, rest_bad, _ = read(reader, path, start=roundtrip(pos))
        assert ids_of(rest) == ids[done:], pos
        assert rest_bad == bad[n_bad:], pos


# -- several files: the stream ---------------------------------------------------------------------


def folder_of(tmp_path: Path, kind: str, bad: bool) -> tuple[Path, list[int], list[tuple]]:
    """Three files (the second small) in a folder: (folder, good ids, (path, line, text) bad)."""
    d = tmp_path / "data"
    d.mkdir()
    ids, bad_rows = [], []
    for seed, (name, n) in enumerate([("a", 40), ("b", 6), ("c", 40)], start=3):
        path, good, wrong = write(d, name, kind, seed, n=n, bad=bad)
        ids += good
        bad_rows += [(str(path), r, t) for r, t in wrong]
    return d, ids, bad_rows


def stream_read(src, state):
    """Run a stream over Source `src` from `state` (changed in place): (batches, bad rows, and
    after each batch a copy of the state, as a checkpoint holds it, and the bad rows so far)."""
    bad: list[BadRow] = []
    stream = SourceStream(src.config, on_bad_row=bad.append, reader=src.reader)
    batches, checkpoints = [], []
    for batch, _pos in stream.batches(state):
        assert 0 < batch.num_rows <= src.batch_size
        batches.append(batch)
        checkpoints.append((json.loads(json.dumps(state)), len(bad)))
    return batches, bad, checkpoints


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_stream_resumes_across_files(tmp_path, kind, batch_size):
    d, ids, _ = folder_of(tmp_path, kind, bad=False)
    src = source(d, 64, batch_size=batch_size)
    table, _ = read_all(src)
    state = {"done": [], "current": None}
    batches, _, checkpoints = stream_read(src, state)
    full = pa.Table.from_batches(batches)
    assert full.equals(table) and ids_of(batches) == ids
    assert state == {"done": src.files, "current": None}
    done = 0
    for batch, (saved, _) in zip(batches, checkpoints, strict=True):
        done += batch.num_rows
        rest, _, _ = stream_read(src, copy.deepcopy(saved))
        if done == full.num_rows:
            assert rest == []
        else:
            assert pa.Table.from_batches(rest).equals(full.slice(done)), saved


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_stream_reports_bad_rows_once_and_again_after_a_resume(tmp_path, kind, batch_size):
    d, ids, want_bad = folder_of(tmp_path, kind, bad=True)
    src = source(d, 64, batch_size=batch_size)
    batches, bad, checkpoints = stream_read(src, {"done": [], "current": None})
    assert ids_of(batches) == ids
    assert [(b.path, b.row, b.text) for b in bad] == want_bad
    assert sum(b.num_rows for b in batches) + len(bad) == len(ids) + len(want_bad)
    done = 0
    for batch, (saved, n_bad) in zip(batches, checkpoints, strict=True):
        done += batch.num_rows
        rest, rest_bad, _ = stream_read(src, copy.deepcopy(saved))
        assert ids_of(rest) == ids[done:], saved
        assert rest_bad == bad[n_bad:], saved
