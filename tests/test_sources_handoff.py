"""Python objects handed to pyarrow's CSV reader: a clean exit while its threads still read."""

import io
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from streamfm.sources import _handoff

ROOT = Path(__file__).resolve().parents[1]

# A reader dropped after its first batch while pyarrow's read-ahead is inside a slow read of the
# Python stream: the process ends before that read returns. Given the stream directly,
# pyarrow's thread frees it during finalization and the process aborts (exit 134).
EXIT_SCRIPT = """
import io, sys, time
import pyarrow.csv as pacsv
from streamfm.sources._handoff import open_csv

class Slow(io.RawIOBase):
    def __init__(self, data):
        self.data, self.calls = io.BytesIO(data), 0
    def readable(self):
        return True
    def read(self, n=-1):
        self.calls += 1
        if self.calls == 3:
            time.sleep(0.3)
        return self.data.read(n)

data = b"a,b\\n" + b"".join(b"%d,x%d\\n" % (i, i) for i in range(2000))
opts = (pacsv.ReadOptions(block_size=1000), pacsv.ParseOptions(), pacsv.ConvertOptions())
read = open_csv if sys.argv[1] == "ours" else pacsv.open_csv
reader = read(Slow(data), *opts)
print(reader.read_next_batch().num_rows)
del reader
"""


def _exit_run(which: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, which], capture_output=True, cwd=ROOT, timeout=120
    )


def test_process_exits_cleanly_while_pyarrow_still_reads_the_stream():
    out = _exit_run("ours")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == ["135"]
    assert out.stderr == b""


def test_the_exit_script_does_abort_when_pyarrow_gets_the_stream_itself():
    # Guards the test above: without the proxies its script crashes.
    out = _exit_run("pyarrow")
    if out.returncode == 0:
        pytest.skip("pyarrow's read-ahead finished before the exit (timing)")
    assert out.returncode in (-6, 134), out.stderr.decode()


@pytest.mark.parametrize("encoding", ["latin-1", "gb18030", "euc-jp"])
def test_transcoding_matches_pyarrows(encoding):
    words = {"latin-1": "café,naïve,Ærø", "gb18030": "北京,上海,广州", "euc-jp": "東京,大阪,名古屋"}
    text = "id,name\n" + "".join(
        f"{i},{w}{i}\n" for i in range(300) for w in words[encoding].split(",")
    )
    data = text.encode(encoding)
    po, co = pacsv.ParseOptions(), pacsv.ConvertOptions()
    for block in (97, 1000, 1 << 20):  # reads that end inside a character, and one read
        ro = pacsv.ReadOptions(block_size=block, encoding=encoding)
        expected = pacsv.open_csv(pa.BufferReader(data), read_options=ro, parse_options=po)
        got = _handoff.open_csv(io.BytesIO(data), ro, po, co)
        assert got.read_all().equals(expected.read_all()), block
        assert ro.encoding == encoding  # the caller's options are not changed


def test_bad_row_handler_goes_through_a_proxy_and_sees_every_row():
    seen = []

    def handler(row):
        seen.append(row.number)
        return "skip"

    data = b"a,b\n1,2\n3\n4,5\n6,7,8\n"
    po = pacsv.ParseOptions(invalid_row_handler=handler)
    table = _handoff.open_csv(io.BytesIO(data), pacsv.ReadOptions(), po).read_all()
    assert table.column("a").to_pylist() == [1, 4]
    assert len(seen) == 2
    assert po.invalid_row_handler is handler


def test_dropped_readers_are_waited_for_and_live_ones_are_not():
    data = b"a\n" + b"1\n" * 1000
    kept = _handoff.open_csv(
        io.BytesIO(data), pacsv.ReadOptions(block_size=64), pacsv.ParseOptions()
    )
    dropped = _handoff.open_csv(
        io.BytesIO(data), pacsv.ReadOptions(block_size=64), pacsv.ParseOptions()
    )
    dropped.read_next_batch()
    del dropped
    assert _handoff.wait_for_pyarrow(timeout=30)
    assert _handoff.released() == 0
    # The reader still referenced is not waited for: its proxy is held, not released.
    assert any(opened.reader() is kept for _, opened in _handoff._held.values())
    assert kept.read_all().num_rows == 1000


def test_a_failed_open_keeps_no_proxy_in_its_traceback():
    # A caller's error kept with its cause (a DataError from pyarrow's) must not hold a proxy
    # of a reader that never was: the exit would wait for it in vain.
    with pytest.raises(pa.ArrowInvalid, match="Empty CSV") as failed:
        _handoff.open_csv(io.BytesIO(b""), pacsv.ReadOptions(), pacsv.ParseOptions())
    assert failed.value.__traceback__ is not None
    assert _handoff.wait_for_pyarrow(timeout=10)
