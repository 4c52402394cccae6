"""Checkpoints and exact resume: kills at random moments (also inside checkpoint writes),
corrupted checkpoints, incompatible specs, signals, full disks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from streamfm.datasets import make_event_log
from streamfm.errors import CheckpointError
from streamfm.spec import load_spec
from streamfm.store.archive import read_archive as load_arrays
from streamfm.store.checkpoint import Checkpointer
from streamfm.training.loop import train

EXE = Path(sys.executable).with_name("streamfm")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-data")
    events, _ = make_event_log(n_users=300, n_items=150, n_events=24_000, seed=5)
    train_t, test_t = events.slice(0, 20_000), events.slice(20_000)
    for i in range(4):  # several files: positions cross file boundaries
        pq.write_table(
            train_t.slice(5_000 * i, 5_000), folder / f"train-{i}.parquet", row_group_size=700
        )
    pq.write_table(test_t, folder / "test.parquet")
    return folder


def write_spec(data, folder: Path, **extra) -> Path:
    spec = {
        "source": {"path": str(data / "train-*.parquet"), "batch_size": 250},
        "target": "rating",
        "features": [
            {"type": "mf"},
            {
                "type": "numeric",
                "columns": ["timestamp"],
                "transform": "standardize",
                "name": "trend",
            },
            {"type": "implicit", "key": "user", "items": "item", "max_items": 20},
            {"type": "time", "column": "timestamp", "encodings": ["weekday"]},
        ],
        "model": {"k": 4, "seed": 3},
        "learner": {
            "optimizer": "adagrad",
            "learning_rate": 0.05,
            "epochs": 3,
            "shuffle_buffer": 900,
        },
        "validation": {
            "source": {"path": str(data / "test.parquet")},
            "every_rows": 7_000,
            "patience": 50,
        },
        "checkpoint": {"every_rows": 1_500, "keep": 2},
        "output": {"dir": str(folder / "out"), "window_rows": 1000},
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def model_arrays(folder: Path) -> dict:
    return load_arrays(folder / "out" / "model.sfm")[1]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    result = train(load_spec(write_spec(data, folder)))
    assert not result.summary["interrupted"]
    return model_arrays(folder), result


def cli(*args, env=None, **kw):
    return subprocess.run(
        [str(EXE), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        **kw,
    )


def test_checkpoints_are_written_and_pruned(reference, data, tmp_path):
    _, result = reference
    ckpt = Checkpointer(Path(result.model_path).parent / "checkpoints")
    names = sorted(p.name for p in ckpt.dir.iterdir() if p.name.startswith("ckpt-"))
    assert len(names) == 2  # keep: 2
    assert (ckpt.dir / "latest").read_text() == names[-1]
    assert ckpt.latest_good().state["run"]["complete"] is True
    assert not (ckpt.dir / "chunks.npy").exists(), "the chunk cache is removed at the end"


def test_sigkill_at_random_moments_then_resume_is_exact(reference, data, tmp_path):
    ref, _ = reference
    spec = write_spec(data, tmp_path)
    rng = np.random.default_rng(11)
    # How long a whole run takes here (start-up included), to aim the kills inside it.
    t0 = time.monotonic()
    assert (
        cli(
            "train",
            spec,
            "-q",
            "--set",
            f"output.dir={tmp_path / 'timing'}",
            "--set",
            f"checkpoint.dir={tmp_path / 'timing-ck'}",
        ).returncode
        == 0
    )
    whole = time.monotonic() - t0
    kills = 0
    for _ in range(40):
        proc = subprocess.Popen(
            [str(EXE), "train", str(spec), "--resume", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            proc.wait(timeout=float(rng.uniform(0.3, whole)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        if kills >= 4:
            break
        # Finished before enough kills: start over in a fresh folder.
        for p in (tmp_path / "out").rglob("*"):
            if p.is_file():
                p.unlink()
    assert kills >= 4
    assert_same(model_arrays(tmp_path), ref)


@pytest.mark.parametrize("stage", ["arrays", "rename", "latest"])
def test_crash_inside_a_checkpoint_write_then_resume_is_exact(reference, data, tmp_path, stage):
    ref, _ = reference
    spec = write_spec(data, tmp_path)
    r = cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": f"4:{stage}"})
    assert r.returncode == -signal.SIGKILL
    ckpt_dir = tmp_path / "out" / "checkpoints"
    r = cli("train", spec, "--resume", "-q")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    assert_same(model_arrays(tmp_path), ref)
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".tmp-")]


def test_corrupted_latest_checkpoint_falls_back_to_the_previous(reference, data, tmp_path):
    ref, _ = reference
    spec = write_spec(data, tmp_path)
    r = cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": "9:arrays"})
    assert r.returncode == -signal.SIGKILL
    ckpt = Checkpointer(tmp_path / "out" / "checkpoints")
    latest = ckpt.dir / (ckpt.dir / "latest").read_text()
    blob = bytearray((latest / "state.zip").read_bytes())
    blob[len(blob) // 2] ^= 0x55
    (latest / "state.zip").write_bytes(bytes(blob))
    r = cli("train", spec, "--resume", "-q")
    assert r.returncode == 0, r.stderr
    assert f"checkpoint {latest} is not usable" in r.stderr and "checksum" in r.stderr
    assert_same(model_arrays(tmp_path), ref)


def test_truncated_checkpoint_is_detected(data, tmp_path):
    spec = write_spec(data, tmp_path)
    assert (
        cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": "5:arrays"}).returncode
        == -signal.SIGKILL
    )
    ckpt = Checkpointer(tmp_path / "out" / "checkpoints")
    latest = ckpt.dir / (ckpt.dir / "latest").read_text()
    data_bytes = (latest / "state.zip").read_bytes()
    (latest / "state.zip").write_bytes(data_bytes[: len(data_bytes) // 2])
    assert "truncated" in ckpt.verify(latest)
    good = ckpt.latest_good()
    assert good is not None and good.path != latest


def test_incompatible_spec_is_refused_naming_the_difference(data, tmp_path):
    spec = write_spec(data, tmp_path)
    assert (
        cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": "3:latest"}).returncode
        == -signal.SIGKILL
    )
    r = cli("train", spec, "--resume", "--set", "model.k=6")
    assert r.returncode == 1
    assert "model.k=4" in r.stderr and "6" in r.stderr and "cannot be resumed" in r.stderr
    # Changing what may change (epochs, validation) is fine.
    r = cli("train", spec, "--resume", "-q", "--set", "validation.every_rows=0")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_checkpoint_and_exits_0(reference, data, tmp_path, sig):
    ref, _ = reference
    spec = write_spec(data, tmp_path, checkpoint={"every_rows": 0, "keep": 2})
    proc = subprocess.Popen(
        [str(EXE), "train", str(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Wait until training is under way (the progress line shows rows), then signal.
    deadline = time.monotonic() + 120
    seen = ""
    while time.monotonic() < deadline and "rows" not in seen:
        seen += proc.stderr.read(1) or ""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    if "interrupted" in out:  # the signal came before the end
        assert f"streamfm train {spec} --resume" in out
        r = cli("train", spec, "--resume", "-q")
        assert r.returncode == 0, r.stderr
    assert_same(model_arrays(tmp_path), ref)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    import errno

    import streamfm.store.checkpoint as ck

    spec = load_spec(write_spec(data, tmp_path))
    real = ck._write_file
    calls = {"n": 0}

    def flaky(path, write):
        calls["n"] += 1
        if calls["n"] == 5:  # in the third checkpoint (two files each)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, write)

    monkeypatch.setattr(ck, "_write_file", flaky)
    with pytest.raises(
        CheckpointError, match="No space left on device.*previous checkpoint is intact"
    ):
        train(spec)
    good = Checkpointer(tmp_path / "out" / "checkpoints").latest_good()
    assert good is not None and good.path.name == "ckpt-00000002"
    assert not [p for p in good.path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_vanished_file_is_a_clear_error(data, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in data.glob("train-*.parquet"):
        shutil.copy(f, copy / f.name)
    spec = write_spec(
        data, tmp_path, source={"path": str(copy / "train-*.parquet"), "batch_size": 250}
    )
    assert (
        cli("train", spec, "-q", env={"STREAMFM_CRASH_AT": "2:latest"}).returncode
        == -signal.SIGKILL
    )
    (copy / "train-0.parquet").unlink()
    r = cli("train", spec, "--resume")
    assert r.returncode == 1
    assert "train-0.parquet" in r.stderr and "no longer part of the source" in r.stderr


def test_hogwild_run_checkpoints_and_resumes(data, tmp_path):
    """learner.threads: 2 (chunks large enough to be split): a killed run resumes, says that it
    is not reproducible, and learns as well as one thread (not bit for bit)."""
    spec = write_spec(data, tmp_path)
    sets = ["--set", "learner.threads=2", "--set", "source.batch_size=5000"]
    sets += ["--set", "learner.shuffle_buffer=0"]
    killed = cli("train", spec, "-q", *sets, env={"STREAMFM_CRASH_AT": "3:latest"})
    assert killed.returncode == -signal.SIGKILL
    r = cli("train", spec, "--resume", *sets)
    assert r.returncode == 0, r.stderr
    assert "Hogwild" in r.stderr and "not bit for bit reproducible" in r.stdout
    exact = tmp_path / "one-thread"
    one = train(load_spec(write_spec(data, exact), [a for a in sets[1::2] if "threads" not in a]))
    from streamfm.store.trained import TrainedModel

    model = TrainedModel.load(tmp_path / "out" / "model.sfm")
    assert model.summary["threads"] == 2 and one.summary["threads"] == 1
    rmse_one = one.summary["model_record"]["rmse"]
    assert abs(model.summary["model_record"]["rmse"] - rmse_one) < 0.01
