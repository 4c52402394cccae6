"""`streamfm inspect`: feature groups by builder, readable names, no raw dicts."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import streamfm
from streamfm.datasets import make_event_log, make_planted_fm
from streamfm.errors import SpecError
from streamfm.inspect import describe, format_description, short


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inspect")
    events, _ = make_event_log(n_users=40, n_items=25, n_events=1_200, seed=4)
    long_item = events["item"].to_numpy(zero_copy_only=False).astype(object) + "-" + "x" * 120
    events = events.set_column(events.schema.get_field_index("item"), "item", [long_item.tolist()])
    pq.write_table(events, folder / "e.parquet")
    spec = {
        "source": {"path": str(folder / "e.parquet")},
        "target": "rating",
        "features": [
            {"type": "mf"},
            {"type": "categorical", "columns": ["user", "item"], "name": "user_x_item"},
        ],
        "learner": {"epochs": 2},
        "output": {"dir": str(folder / "run")},
        "checkpoint": {"enabled": False},
    }
    (folder / "s.yaml").write_text(yaml.safe_dump(spec))
    streamfm.train(folder / "s.yaml")
    return folder / "run" / "model.sfm"


def test_groups_are_the_builders_with_their_strongest_features(model_file):
    info = describe(model_file, top=3)
    groups = {g["name"]: g for g in info["groups"]}
    assert list(groups) == ["user", "item", "user_x_item"]
    assert groups["user_x_item"]["type"] == "categorical"
    assert groups["user_x_item"]["columns"] == ["user", "item"]
    model = streamfm.load_model(model_file)
    p = model.learner.params
    assert sum(g["features"] for g in groups.values()) == p.n_features
    top = groups["user"]["top_w"]
    assert len(top) == 3 and abs(top[0]["w"]) >= abs(top[1]["w"]) >= abs(top[2]["w"])
    text = format_description(info)
    assert "{" not in text and "'" not in text
    assert max(len(line) for line in text.splitlines()) < 140  # 125-character keys are cut
    assert "…" in text


def test_one_group_only(model_file):
    info = describe(model_file, groups=["item"])
    assert [g["name"] for g in info["groups"]] == ["item"]
    with pytest.raises(SpecError, match="no such feature group"):
        describe(model_file, groups=["nope"])


def test_estimator_files_are_described_without_raw_dicts(tmp_path):
    X, y, _ = make_planted_fm(300, n_features=12, seed=1)
    streamfm.FMClassifier(epochs=1, group_regularization={0: (0.1, 0.2)}).fit(
        X, np.array(["a", "b", "c"])[np.arange(300) % 3]
    ).save(tmp_path / "c.sfm")
    info = describe(tmp_path / "c.sfm")
    assert info["classes"] == ["a", "b", "c"] and set(info["groups_by_class"]) == {"a", "b", "c"}
    text = format_description(info)
    assert "classes: a, b, c" in text and "{" not in text
    assert "group_regularization" in text and "learning_rate" in text


def test_short_keeps_both_ends():
    assert short("abc", 10) == "abc"
    cut = short("user=" + "y" * 100 + "|item=7", 30)
    assert len(cut) == 30 and cut.startswith("user=") and cut.endswith("|item=7")
