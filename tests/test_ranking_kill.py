"""Task ranking killed with SIGKILL (kill -9) in a subprocess at several moments, also inside
checkpoint writes and in the second epoch, then resumed: the model file is bit-identical to an
uninterrupted run's (catalogue, recent positives, sampler draws, leave-last-out split)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from streamfm.datasets import make_implicit_events
from streamfm.spec import load_spec
from streamfm.store.archive import read_archive
from streamfm.training.loop import train

EXE = Path(sys.executable).with_name("streamfm")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranking-kill-data")
    ev, _ = make_implicit_events(n_users=150, n_items=80, events_per_user=16, seed=9)
    for i in range(3):  # positions cross file boundaries
        pq.write_table(ev.slice(800 * i, 800), folder / f"ev-{i}.parquet", row_group_size=170)
    return folder


def write_spec(data: Path, folder: Path, split: bool) -> Path:
    spec = {
        "source": {"path": str(data / "ev-*.parquet"), "batch_size": 90},
        "task": "ranking",
        "features": [
            {"type": "categorical", "name": "user", "columns": ["user"]},
            {"type": "categorical", "name": "item", "columns": ["item"]},
            {"type": "categorical", "name": "genre", "columns": ["genre"]},
        ],
        "ranking": {
            "item": "item",
            "item_features": ["genre"],
            "negatives": {"sampler": "popularity", "per_positive": 3, "exclude_seen": True},
        },
        "model": {"k": 4, "seed": 3, "init_std": 0.2},
        "learner": {"method": "adagrad", "learning_rate": 0.1, "epochs": 3, "shuffle_buffer": 500},
        "checkpoint": {"every_rows": 400, "keep": 2},
        "output": {"dir": str(folder / "out")},
    }
    if split:
        spec["validation"] = {"split": "leave_last_out", "every_rows": 900, "patience": 50}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args, env=None):
    return subprocess.run(
        [str(EXE), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.parametrize("split", [False, True])
def test_sigkill_then_resume_is_bit_identical(data, tmp_path, split):
    ref = train(load_spec(write_spec(data, tmp_path / "ref", split)))
    assert not ref.summary["interrupted"]
    spec = write_spec(data, tmp_path / "run", split)
    # checkpoint 2 while its arrays are written; 5 before `latest` moves; 9 (second epoch)
    # just renamed into place
    for crash in ("2:arrays", "5:latest", "9:rename"):
        r = cli("train", spec, "--resume", "-q", env={"STREAMFM_CRASH_AT": crash})
        assert r.returncode == -signal.SIGKILL, (crash, r.stderr)
    r = cli("train", spec, "--resume", "-q")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    meta_want, want = read_archive(tmp_path / "ref" / "out" / "model.sfm")
    meta_got, got = read_archive(tmp_path / "run" / "out" / "model.sfm")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in meta_want["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in meta_got["history"]]
    if split:
        assert "holdout_ndcg" in strip[-1]
    assert want.keys() == got.keys()
    assert any(k.startswith("learner/catalogue/") for k in got)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)
