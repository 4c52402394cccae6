"""spec.yaml loading: overrides, defaults, and errors that name the key."""

import pytest
import yaml

from streamfm.errors import SpecError
from streamfm.spec import apply_override, load_spec, parse_spec

BASE = {
    "source": {"path": "data.parquet"},
    "target": "rating",
    "features": [{"type": "categorical", "columns": ["user"]}],
}


def write(tmp_path, data, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_with_overrides(tmp_path):
    spec = load_spec(
        write(tmp_path, BASE),
        [
            "learner.learning_rate=0.05",
            "learner.optimizer=adagrad",
            "features.0.columns=[u, d]",
            "model.k=4",
            "validation.source.path=test.parquet",
        ],
    )
    assert spec.learner.learning_rate == 0.05 and spec.learner.optimizer == "adagrad"
    assert spec.features[0]["columns"] == ["u", "d"]
    assert spec.model.k == 4
    assert spec.validation.source.path == "test.parquet"
    assert spec.name == "spec" and str(spec.output_dir()) == "runs/spec"


def test_libfm_defaults():
    spec = parse_spec({"source": {"path": "x.libfm"}, "task": "classification"})
    assert spec.target.column == "label" and spec.features == [{"type": "libfm"}]
    assert spec.validation.metric == "logloss"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learner": {"learning_rate": -0.1}}, r"learner.learning_rate: must be > 0.0, got -0.1"),
        (
            {"learner": {"learnig_rate": 0.1}},
            r"learner.learnig_rate: unknown key \(did you mean 'learning_rate'\?\)",
        ),
        ({"model": {"k": "eight"}}, r"model.k: .*got 'eight'"),
        ({"colour": 1}, r"colour: unknown key"),
        ({"task": "ranking"}, r"ranking: required for task ranking"),
        ({"target": None}, r"target: required"),
        ({"validation": {"metric": "auc"}}, r"validation.metric: must be one of \('rmse', 'mae'\)"),
        (
            {"features": [{"type": "categorical", "colums": ["a"]}]},
            r"features\[0\].*colums: unknown key",
        ),
        ({"source": {"path": "x", "batch_size": 0}}, r"source.batch_size: must be > 0"),
    ],
)
def test_errors_name_the_key(tmp_path, change, message):
    data = {**BASE, **change}
    if change.get("target", 1) is None:
        del data["target"]
    with pytest.raises(SpecError, match=message):
        load_spec(write(tmp_path, data))


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("source:\n  path: [unclosed\ntarget: y\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+, column \d+"):
        load_spec(path)


def test_bad_override():
    with pytest.raises(SpecError, match="expected key.path=value"):
        apply_override({}, "learner.learning_rate")
    with pytest.raises(SpecError, match="not an index"):
        apply_override({"features": []}, "features.3.columns=a")


def test_starter_spec_is_valid(tmp_path):
    from streamfm.templates import STARTER_SPEC

    path = tmp_path / "spec.yaml"
    path.write_text(STARTER_SPEC)
    spec = load_spec(path)
    assert spec.target.column == "rating" and len(spec.features) == 2


def test_set_changes_one_key_even_with_yaml_anchors(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        "source: {path: a.csv, csv: &c {delimiter: ';'}}\n"
        "target: y\nfeatures: [{type: categorical, columns: [u]}]\n"
        "validation: {source: {path: b.csv, csv: *c}}\n"
    )
    spec = load_spec(path, ["validation.source.csv.delimiter=|"])
    assert spec.source.csv.delimiter == ";" and spec.validation.source.csv.delimiter == "|"


def test_restore_best_defaults_to_early_stopping():
    assert parse_spec({**BASE}).validation.restore_best is False
    assert parse_spec({**BASE, "validation": {"patience": 2}}).validation.restore_best is True
