"""Files written in place (not renamed into place): follow mode reads a file only once it looks
complete, and a file that changes after (or while) it was learnt is an error naming it, never
rows lost in silence."""

import os
import time

import pytest

from streamfm.config import SourceConfig
from streamfm.errors import DataError
from streamfm.sources import SourceStream
from streamfm.spec import parse_spec
from streamfm.training.loop import train

HEADER = "user,item,rating\n"


def rows(n: int, start: int = 0) -> str:
    return "".join(f"u{i},i{i % 4},{1 + i % 5}\n" for i in range(start, start + n))


def test_follow_waits_until_a_file_stops_changing(tmp_path):
    stream = SourceStream(
        SourceConfig(path=str(tmp_path), format="csv", follow=True, poll_seconds=60)
    )
    old = tmp_path / "old.csv"
    old.write_text(HEADER + rows(3))
    an_hour_ago = time.time() - 3_600
    os.utime(old, (an_hour_ago, an_hour_ago))
    growing = tmp_path / "growing.csv"
    growing.write_text(HEADER + rows(2))
    files = [str(old), str(growing)]
    assert stream._ready(files) == [str(old)]  # quiet for an hour; the other just written
    with open(growing, "a") as f:
        f.write(rows(5, 2))  # the producer is still at it
    assert stream._ready(files) == [str(old)]
    assert stream._ready(files) == files  # unchanged since the last look: complete


def folder_spec(folder, out) -> dict:
    return {
        "source": {"path": str(folder), "format": "csv", "batch_size": 4},
        "target": "rating",
        "features": [{"type": "mf"}],
        "learner": {"epochs": 1},
        "output": {"dir": str(out)},
    }


def test_a_file_that_grows_after_it_was_learnt_is_an_error_naming_it(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text(HEADER + rows(10))
    spec = folder_spec(inbox, tmp_path / "out")
    assert train(parse_spec(spec)).summary["rows_learnt"] == 10
    with open(inbox / "a.csv", "a") as f:
        f.write(rows(90, 10))  # the rest of a file written in place
    (inbox / "b.csv").write_text(HEADER + rows(5, 100))
    with pytest.raises(DataError, match=r"a.csv: the file changed after it was learnt"):
        train(parse_spec(spec), resume=True)


def test_a_file_that_changes_while_it_is_read_is_an_error(tmp_path, monkeypatch):
    from streamfm.sources.csv import CsvReader

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text(HEADER + rows(12))
    real = CsvReader.read

    def appended_while_read(self, path, *args, **kwargs):
        for i, item in enumerate(real(self, path, *args, **kwargs)):
            if i == 0:
                with open(path, "a") as f:
                    f.write(rows(3, 12))
            yield item

    monkeypatch.setattr(CsvReader, "read", appended_while_read)
    with pytest.raises(DataError, match=r"a.csv: the file changed while it was read"):
        train(parse_spec(folder_spec(inbox, tmp_path / "out")))
