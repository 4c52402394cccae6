"""Model files are untrusted input: loading one never imports a module its spec names (unless
allowed), never allocates more than the file holds, and refuses arrays that would predict
garbage."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import streamfm
from streamfm.errors import CheckpointError, SpecError
from streamfm.spec import parse_spec
from streamfm.store.archive import read_archive, write_archive
from streamfm.store.trained import TrainedModel

EXE = Path(sys.executable).with_name("streamfm")

PLUGIN = """
import pathlib
pathlib.Path("IMPORTED").write_text("the module ran")
from streamfm.features.categorical import CategoricalBuilder as Builder
"""


@pytest.fixture
def model_file(tmp_path):
    spec = parse_spec(
        {
            "source": {"path": "x.csv"},
            "target": "y",
            "features": [{"type": "categorical", "columns": ["user"]}],
            "model": {"k": 2},
        }
    )
    model = TrainedModel.from_spec(spec)
    batch = pa.record_batch({"user": ["a", "b", "a"], "y": [1.0, 2.0, 3.0]})
    chunk = model.pipeline.transform(batch, training=True)
    model.learner.params.ensure_features(model.pipeline.space.n_ids)
    model.learner.learn(chunk, np.array([1.0, 2.0, 3.0]))
    path = tmp_path / "model.sfm"
    model.save(path)
    return path


def rewrite(path: Path, change) -> None:
    """Rewrite a model file with `change(meta, arrays)` applied (as a crafted file would be)."""
    meta, arrays = read_archive(path)
    change(meta, arrays)
    with open(path, "wb") as f:
        write_archive(f, meta, arrays)


def with_plugin_type(meta, arrays):
    meta["spec"]["features"][0]["type"] = "sfm_crafted:Builder"


def test_a_model_naming_a_module_does_not_import_it(model_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "sfm_crafted.py").write_text(PLUGIN)
    rewrite(model_file, with_plugin_type)
    with pytest.raises(SpecError, match=r"not a registered builder.*--allow-plugin"):
        streamfm.load_model(model_file)
    with pytest.raises(SpecError, match=r"sfm_crafted"):
        TrainedModel.load(model_file)
    assert not (tmp_path / "IMPORTED").exists() and "sfm_crafted" not in sys.modules
    # Explicitly trusted, it loads (and runs the module).
    model = streamfm.load_model(model_file, trust_plugins=["sfm_crafted:Builder"])
    assert (tmp_path / "IMPORTED").exists()
    assert model.predict_table(pa.table({"user": ["a"]})).shape == (1,)
    sys.modules.pop("sfm_crafted", None)


def test_predict_refuses_a_model_that_names_a_module(model_file, tmp_path):
    (tmp_path / "sfm_crafted.py").write_text(PLUGIN)
    rewrite(model_file, with_plugin_type)
    (tmp_path / "in.csv").write_text("user\na\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    r = subprocess.run(
        [str(EXE), "predict", str(model_file), "in.csv", "-o", "out.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "--allow-plugin sfm_crafted:Builder" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "IMPORTED").exists()


def test_compressed_members_are_refused(model_file):
    meta, arrays = read_archive(model_file)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.json", json.dumps(meta))
        z.writestr("w.npy", b"\0" * 10_000_000)  # 10 MB of zeros: a few KB compressed
    model_file.write_bytes(buf.getvalue())
    assert model_file.stat().st_size < 100_000
    with pytest.raises(CheckpointError, match="compressed"):
        streamfm.load_model(model_file)


def test_an_array_header_larger_than_its_member_is_refused(model_file):
    meta, arrays = read_archive(model_file)
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("meta.json", json.dumps(meta))
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr)
            blob = header.getvalue() + b"\0" * 64 if name == "V" else member.getvalue()
            z.writestr(f"{name}.npy", blob)
    model_file.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match=r"V.npy: its header describes 4398046511104 bytes"):
        streamfm.load_model(model_file)


def short_vocabulary(meta, arrays):
    arrays["features/space/keys/0/offsets"] = arrays["features/space/keys/0/offsets"][:-1]
    arrays["features/space/keys/0/bytes"] = arrays["features/space/keys/0/bytes"][:1]


def wrong_group(meta, arrays):
    arrays["group"] = arrays["group"] + 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m, a: a.update(V=a["V"].astype(np.int8)), r"V has dtype int8, expected float32"),
        (lambda m, a: a["V"].__setitem__((0, 0), np.nan), r"V holds NaN or infinite values"),
        (lambda m, a: a.update(w=a["w"][:1]), r"w has shape \(1,\), expected \(2,\)"),
        (short_vocabulary, r"1 keys but ids of shape \(2,\)"),
        (wrong_group, r"the features. groups differ"),
        (lambda m, a: a.update(V=np.zeros((2, 2), "<U3")), r"V has dtype <U3"),
    ],
)
def test_arrays_that_would_predict_garbage_are_refused(model_file, change, message):
    rewrite(model_file, change)
    with pytest.raises(CheckpointError, match=rf"model.sfm is damaged: {message}"):
        streamfm.load_model(model_file)
