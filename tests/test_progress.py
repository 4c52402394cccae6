"""The progress display of `train`: rates without the compile chunk, text-file row estimates,
the rich bar on a terminal and plain lines in logs."""

import io

import pytest

from streamfm import progress
from streamfm.progress import ProgressPrinter, estimate_rows


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def event(rows, total=10_000, **extra):
    return {
        "rows": rows,
        "epoch": 1,
        "epochs": 2,
        "rows_per_second": 0.0,
        "metric": "rmse",
        "value": 1.25,
        "eta_seconds": None,
        "total_rows": total,
        **extra,
    }


def test_the_rate_leaves_out_the_first_report(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    p = ProgressPrinter(out, log_every=0.0)
    clock.now += 20  # the first chunk took 20 s: compiling
    p(event(1_000))
    clock.now += 1
    p(event(2_000))
    clock.now += 1
    p(event(3_000))
    lines = out.getvalue().splitlines()
    assert "… rows/s" in lines[0] and "ETA ?" in lines[0]  # no rate from one report
    assert "1,000 rows/s" in lines[2] and "ETA 0:07" in lines[2]  # 7,000 rows left at 1,000/s
    assert "rows 3,000/10,000  30.0%" in lines[2]


def test_estimated_totals_are_marked():
    line = progress.status_line(event(500, total_estimated=True), 100.0, 95.0)
    assert "rows 500/~10,000" in line and "ETA 1:35" in line


def test_row_estimate_of_text_files(tmp_path):
    lines = [f"{i},{i * 7},{'x' * (i % 13)}\n" for i in range(20_000)]
    (tmp_path / "a.csv").write_text("a,b,c\n" + "".join(lines))
    (tmp_path / "b.csv").write_text("a,b,c\n" + "".join(lines[:5_000]))
    est = estimate_rows([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], header=True)
    assert est == pytest.approx(25_000, rel=0.05)
    (tmp_path / "c.csv.gz").write_bytes(b"\x1f\x8b")
    assert estimate_rows([str(tmp_path / "c.csv.gz")]) is None
    assert estimate_rows([]) is None


def test_rich_bar_on_a_terminal_goes_away_on_close():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    p = ProgressPrinter(out)
    p(event(1_000))
    p(event(2_000))
    p(
        {
            **event(2_000),
            "record": {"kind": "epoch", "epoch": 1, "rows": 2_000, "seconds": 3.0, "rmse": 1.1},
        }
    )
    p.close()
    text = out.getvalue()
    assert "epoch 1: rmse 1.1000" in text  # records are printed above the bar, and stay
    assert p._bar is None
    p.close()  # idempotent


def test_quiet_prints_nothing():
    out = io.StringIO()
    p = ProgressPrinter(out, quiet=True)
    p(event(1))
    p.close()
    assert out.getvalue() == ""
