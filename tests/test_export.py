"""`streamfm export`: per-group Parquet files of vocabulary, w and V, and model.json."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import streamfm
from streamfm.datasets import make_event_log, make_planted_fm
from streamfm.export import export_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    events, _ = make_event_log(n_users=40, n_items=25, n_events=1_500, seed=2)
    pq.write_table(events, folder / "e.parquet")
    spec = {
        "source": {"path": str(folder / "e.parquet")},
        "target": "rating",
        "features": [
            {"type": "mf"},
            {
                "type": "numeric",
                "columns": ["timestamp"],
                "transform": "standardize",
                "name": "t/z",
            },
            {"type": "categorical", "columns": ["user", "item"], "hash_bits": 4, "name": "x"},
        ],
        "model": {"k": 3},
        "learner": {"epochs": 2},
        "output": {"dir": str(folder / "run")},
        "checkpoint": {"enabled": False},
    }
    (folder / "s.yaml").write_text(yaml.safe_dump(spec))
    streamfm.train(folder / "s.yaml")
    return folder / "run" / "model.sfm"


def test_every_feature_once_with_its_parameters(model_file, tmp_path):
    info = export_model(model_file, tmp_path / "out")
    model = streamfm.load_model(model_file)
    p = model.learner.params
    assert info["k"] == 3 and info["w0"] == float(p.w0[0])
    assert json.loads((tmp_path / "out" / "model.json").read_text())["groups"] == info["groups"]
    files = {g["name"]: g["file"] for g in info["groups"]}
    assert files == {
        "user": "user.parquet",
        "item": "item.parquet",
        "t/z": "t_z.parquet",
        "x": "x.parquet",
    }
    all_ids = []
    for name, file in files.items():
        t = pq.read_table(tmp_path / "out" / file)
        assert t.column_names == ["id", "key", "name", "w", "V"]
        ids = t["id"].to_numpy()
        all_ids += ids.tolist()
        np.testing.assert_array_equal(t["w"].to_numpy(), p.w[ids])
        V = np.stack(t["V"].to_numpy(zero_copy_only=False))
        np.testing.assert_array_equal(V, p.V[ids])
        assert t["name"].to_pylist() == [model.pipeline.feature_name(int(i)) for i in ids]
        assert all(
            model.pipeline.space.groups[model.pipeline.space.id_group[i]] == name for i in ids
        )
    assert sorted(all_ids) == list(range(p.n_features))
    users = pq.read_table(tmp_path / "out" / "user.parquet")
    assert users["key"][0].as_py().startswith("u") and users["name"][0].as_py().startswith("user=")


def test_estimators_export_their_columns_and_classes(tmp_path):
    X, y, _ = make_planted_fm(300, n_features=20, k=2, seed=1)
    streamfm.FMRegressor(k=2, epochs=1).fit(X, y).save(tmp_path / "r.sfm")
    info = export_model(tmp_path / "r.sfm", tmp_path / "r")
    t = pq.read_table(tmp_path / "r" / "features.parquet")
    assert info["groups"][0]["rows"] == 20 and t["key"].to_pylist()[:3] == ["0", "1", "2"]
    labels = np.array(["a", "b", "c"])[np.arange(300) % 3]
    streamfm.FMClassifier(k=2, epochs=1).fit(X, labels).save(tmp_path / "c.sfm")
    info = export_model(tmp_path / "c.sfm", tmp_path / "c")
    assert [c["label"] for c in info["classes"]] == ["a", "b", "c"]
    assert (tmp_path / "c" / "class=b" / "features.parquet").exists()
