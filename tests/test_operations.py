"""Operations: the chunk cache is verified, symbolic links are never written through, one
trainer per directory, killed runs leave no litter, files follow the umask, full disks are
named."""

import errno
import os
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamfm.csr import CSRChunk
from streamfm.datasets import make_event_log
from streamfm.errors import CheckpointError, OutputError
from streamfm.spec import parse_spec
from streamfm.training.lock import DirectoryLock
from streamfm.training.loop import train
from streamfm.training.replay import ChunkCache


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ops")
    table, _ = make_event_log(n_users=40, n_items=30, n_events=1_500, seed=3)
    pq.write_table(table.drop(["timestamp"]), folder / "e.parquet")
    return folder / "e.parquet"


def spec_for(data, out, **extra) -> dict:
    return {
        "source": {"path": str(data), "batch_size": 200},
        "target": "rating",
        "features": [{"type": "mf"}],
        "model": {"k": 2},
        "learner": {"epochs": 2},
        "output": {"dir": str(out)},
        **extra,
    }


def chunk(i: int) -> tuple[CSRChunk, np.ndarray]:
    ids = np.array([i, i + 1, i + 2], dtype=np.int32)
    return CSRChunk(np.array([0, 2, 3]), ids, np.ones(3, np.float32)), np.array([1.0, 2.0])


def test_a_flipped_byte_in_the_chunk_cache_is_caught_before_use(tmp_path):
    cache = ChunkCache(tmp_path / "chunks.npy")
    for i in range(3):
        cache.append(*chunk(i))
    state = cache.state_dict()
    blob = bytearray((tmp_path / "chunks.npy").read_bytes())
    blob[int(state["bytes"] * 0.6)] ^= 0x10  # inside the second or third record
    (tmp_path / "chunks.npy").write_bytes(bytes(blob))
    got = []
    with pytest.raises(CheckpointError, match=r"chunks.npy is damaged at chunk [23] of 3"):
        for c, _y, _n, _b in cache.replay():
            got.append(c)
    assert len(got) in (1, 2)


def test_a_damaged_record_length_allocates_nothing_large(tmp_path):
    cache = ChunkCache(tmp_path / "chunks.npy")
    cache.append(*chunk(0))
    cache.sync()
    blob = bytearray((tmp_path / "chunks.npy").read_bytes())
    blob[4:12] = (1 << 40).to_bytes(8, "little")  # the length of the first record
    (tmp_path / "chunks.npy").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"damaged at chunk 1 .*a record of 1099511627776"):
        list(cache.replay())


def test_a_damaged_cache_stops_training_naming_the_file(events, tmp_path, monkeypatch):
    real = ChunkCache.replay

    def corrupt_then_replay(self, *args):
        blob = bytearray(self.path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        self.path.write_bytes(bytes(blob))
        return real(self, *args)

    monkeypatch.setattr(ChunkCache, "replay", corrupt_then_replay)
    with pytest.raises(CheckpointError, match=r"chunks.npy is damaged at chunk \d+ of 8"):
        train(parse_spec(spec_for(events, tmp_path / "out")))


def test_the_learner_refuses_ids_the_space_did_not_allocate():
    from streamfm.config import LearnerConfig, ModelConfig
    from streamfm.learners.sgd import SGDLearner

    learner = SGDLearner(ModelConfig(k=2), LearnerConfig())
    learner.params.ensure_features(10)
    bad = CSRChunk(np.array([0, 1]), np.array([2_700_000_000 - 2**32], np.int32), np.ones(1, "f4"))
    with pytest.raises(IndexError, match="not allocated"):
        learner.learn(bad, np.array([1.0]))
    assert learner.params.n_features == 10 and learner.params.capacity < 1_000


def test_symbolic_links_in_the_output_are_replaced_not_written_through(events, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    for name in ("metrics.json", "metrics.csv", "model.sfm", "checkpoints/chunks.npy"):
        os.symlink(victim, out / name)
    train(parse_spec(spec_for(events, out)))
    assert victim.read_text() == "keep me"
    assert not (out / "metrics.json").is_symlink() and (out / "metrics.json").stat().st_size


def test_a_quarantine_file_that_is_a_symbolic_link_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("user,item,rating\nu1,i1,4\nu2,i2,\n")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    os.symlink(victim, out / "quarantine.jsonl")
    spec = spec_for(tmp_path / "d.csv", out, learner={"epochs": 1})
    spec["source"]["on_bad_rows"] = "quarantine"
    with pytest.raises(OutputError, match=r"quarantine.jsonl: it is a symbolic link"):
        train(parse_spec(spec))
    assert victim.read_text() == "keep me"


def test_a_second_trainer_on_the_same_directory_is_refused_naming_the_first(events, tmp_path):
    out = tmp_path / "out"
    first = DirectoryLock(out)
    first.acquire()  # as a running trainer holds it
    try:
        with pytest.raises(OutputError, match=rf"another streamfm train \(pid {os.getpid()}\)"):
            train(parse_spec(spec_for(events, out)))
    finally:
        first.release()
    train(parse_spec(spec_for(events, out)))  # free again


def test_temporary_files_of_a_killed_publish_are_removed_at_start(events, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".model.sfm.k2j4_9zq.tmp", out / ".metrics.json.abcdefgh.tmp"]
    mine = out / ".model.sfm.notes.tmp"  # not a name streamfm makes
    for p in [*stale, mine]:
        p.write_bytes(b"x" * 100)
    r = train(parse_spec(spec_for(events, out, learner={"epochs": 1})))
    assert not any(p.exists() for p in stale) and mine.exists()
    assert any("removed 2 temporary file(s)" in n for n in r.summary["notes"])


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_follow_the_umask(events, tmp_path, umask):
    old = os.umask(umask)
    try:
        train(parse_spec(spec_for(events, tmp_path / "out", learner={"epochs": 1})))
    finally:
        os.umask(old)
    for name in ("model.sfm", "metrics.json", "checkpoints/latest"):
        mode = stat.S_IMODE((tmp_path / "out" / name).stat().st_mode)
        assert mode == 0o666 & ~umask, name


@pytest.mark.parametrize("target", ["cache", "quarantine"])
def test_a_full_disk_names_the_file_and_the_cause(events, tmp_path, monkeypatch, target):
    import streamfm.training.badrows as badrows
    import streamfm.training.replay as replay

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    spec = spec_for(events, tmp_path / "out")
    if target == "cache":
        monkeypatch.setattr(replay.ChunkCache, "_open_for_append", full)
        match = r"cannot write the chunk cache .*chunks.npy: No space left on device"
    else:
        table = pq.read_table(events)
        rating = table.column("rating").to_pylist()
        rating[5] = None
        pq.write_table(table.set_column(2, "rating", pa.array(rating)), tmp_path / "e.parquet")
        spec = spec_for(tmp_path / "e.parquet", tmp_path / "out")
        spec["source"]["on_bad_rows"] = "quarantine"
        real_open = badrows.BadRows._open

        class FullDisk:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                full()

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(badrows.BadRows, "_open", lambda s, *a: FullDisk(real_open(s, *a)))
        match = r"cannot write the quarantine file .*quarantine.jsonl: No space left on device"
    with pytest.raises((CheckpointError, OutputError), match=match):
        train(parse_spec(spec))
