"""A checkpoint directory shared with people and other programs: copies, backups, junk folders
and a damaged `latest` are stepped over; only names streamfm created are deleted."""

import numpy as np

from streamfm.store.checkpoint import Checkpointer


def state(n: int) -> dict:
    return {"run": {"rows": n}, "w": np.arange(n, dtype=np.float32)}


def test_copies_and_backups_of_checkpoints_are_ignored(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    first = ck.write(state(1))
    (tmp_path / f"{first.name} (copy)").mkdir()
    (tmp_path / f"{first.name}.bak").mkdir()
    (tmp_path / "ckpt-notes.txt").write_text("mine")
    second = ck.write(state(2))
    assert second.name == "ckpt-00000002"
    assert ck.latest_good().state["run"]["rows"] == 2
    assert (tmp_path / f"{first.name} (copy)").is_dir() and (tmp_path / "ckpt-notes.txt").exists()


def test_an_empty_junk_checkpoint_folder_does_not_stop_later_writes(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    ck.write(state(1))
    (tmp_path / "ckpt-99999999").mkdir()
    a = ck.write(state(2))
    b = ck.write(state(3))
    assert (a.name, b.name) == ("ckpt-100000000", "ckpt-100000001")
    good = Checkpointer(tmp_path).latest_good()
    assert good.path == b and good.state["run"]["rows"] == 3


def test_pruning_keeps_folders_holding_files_of_others(tmp_path):
    ck = Checkpointer(tmp_path, keep=1)
    (tmp_path / "ckpt-00000001").mkdir()
    (tmp_path / "ckpt-00000001" / "notes.txt").write_text("not streamfm's")
    ck.write(state(1))
    ck.write(state(2))
    assert (tmp_path / "ckpt-00000001" / "notes.txt").exists()
    assert not (tmp_path / "ckpt-00000002").exists()  # ours, pruned


def test_a_latest_pointer_that_is_not_text_is_ignored_with_a_warning(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.write(state(1))
    newest = ck.write(state(2))
    (tmp_path / "latest").write_bytes(b"\xff\xfe\x00ckpt")
    again = Checkpointer(tmp_path)
    assert again.latest_good().path == newest
    assert any("does not name a checkpoint" in w for w in again.warnings)


def test_a_manifest_that_is_not_an_object_makes_the_checkpoint_unusable(tmp_path):
    ck = Checkpointer(tmp_path)
    older = ck.write(state(1))
    newer = ck.write(state(2))
    (newer / "MANIFEST.json").write_text("[1, 2]")
    again = Checkpointer(tmp_path)
    assert again.latest_good().path == older
    assert any(str(newer) in w and "not a JSON object" in w for w in again.warnings)


def test_only_our_own_temporary_folders_are_removed(tmp_path):
    ck = Checkpointer(tmp_path)
    (tmp_path / ".tmp-ckpt-00000001-4242").mkdir()  # a crashed write of ours
    (tmp_path / ".tmp-other-tool").mkdir()
    (tmp_path / ".tmp-other-tool" / "work").write_text("x")
    ck.write(state(1))
    assert not (tmp_path / ".tmp-ckpt-00000001-4242").exists()
    assert (tmp_path / ".tmp-other-tool" / "work").exists()
