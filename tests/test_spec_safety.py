"""Specs a fuzzing campaign crafted: each is refused with a SpecError (exit 2) naming what is
wrong, never an "unexpected" error, a hang or gigabytes of memory."""

import codecs

import pytest
import yaml
from typer.testing import CliRunner

from streamfm.errors import SpecError
from streamfm.spec import MAX_SPEC_VALUES, load_spec, parse_spec

BASE = {
    "source": {"path": "data.csv"},
    "target": "rating",
    "features": [{"type": "categorical", "columns": ["user"]}],
}
TEXT = yaml.safe_dump(BASE)


def spec_file(tmp_path, content: str | bytes):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def billion_laughs(levels: int) -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    prev = "a"
    for name in "bcdefghijk"[:levels]:
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (billion_laughs(8), rf"expands to more than {MAX_SPEC_VALUES:,} values"),
        ("a: &a [1, *a]\n", r"line 1: an anchor refers to itself"),
        (TEXT + "target: other\n", r"key 'target' appears twice in the same mapping"),
        (b"source: {path: d\xe9.csv}\n", r"line 1: not UTF-8 text \(byte 0xe9"),
        (TEXT.replace("rating", "rating\nmodel: {k: true}"), r"model.k: must be a number"),
        (TEXT + "learner: {learning_rate: .inf}\n", r"learner.learning_rate: .*finite"),
        (TEXT + "learner: {reg_factors: .nan}\n", r"learner.reg_factors: .*finite"),
        (TEXT + "model: {seed: 9223372036854775808}\n", r"model.seed: must be <= "),
    ],
)
def test_crafted_spec_files_are_refused_by_name(tmp_path, content, message):
    with pytest.raises(SpecError, match=message):
        load_spec(spec_file(tmp_path, content))


def test_the_alias_bomb_is_refused_before_it_is_built(tmp_path, monkeypatch):
    import streamfm.spec as spec_module

    built = []
    monkeypatch.setattr(spec_module, "_unshare", lambda data: built.append(1) or data)
    with pytest.raises(SpecError, match="anchors and aliases"):
        load_spec(spec_file(tmp_path, billion_laughs(10)))  # 9**10 values if expanded
    assert not built


def test_utf16_with_a_byte_order_mark_is_read(tmp_path):
    spec = load_spec(spec_file(tmp_path, codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")))
    assert spec.target.column == "rating"


def test_anchors_and_merge_keys_still_work(tmp_path):
    text = (
        "source: &s {path: a.csv, batch_size: 10}\n"
        "validation: {source: {<<: *s, path: b.csv}}\n"
        "target: y\nfeatures: [{type: categorical, columns: [u]}]\n"
    )
    spec = load_spec(spec_file(tmp_path, text))
    assert spec.validation.source.path == "b.csv" and spec.validation.source.batch_size == 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"k": True}}, r"model.k: must be a number, not true/false"),
        ({"learner": {"epochs": False}}, r"learner.epochs: must be a number"),
        ({"learner": {"learning_rate": float("inf")}}, r"learner.learning_rate: .*finite"),
        ({"model": {"seed": 2**63}}, r"model.seed: must be <= 9223372036854775807"),
        ({"source": {"path": "d.csv", "csv": {"quote_char": "ab"}}}, r"quote_char: .*1 char"),
        (
            {"features": [{"type": "categorical", "columns": ["u"], "reg_linear": -1}]},
            r"features\[0\] \(categorical 'u'\): reg_linear: must be >= 0.0",
        ),
        (
            {"features": [{"type": "categorical", "columns": ["u"], "hash_bits": True}]},
            r"hash_bits: must be a number",
        ),
        (
            {"features": [{"type": "numeric", "columns": ["a"], "scale": float("nan")}]},
            r"scale: .*finite",
        ),
        (
            {"features": [{"type": "categorical", "columns": ["u"], "hash_seed": 2**64}]},
            r"hash_seed: must be <= ",
        ),
    ],
)
def test_bad_values_are_spec_errors(change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **change})


def test_booleans_still_mean_booleans():
    spec = parse_spec({**BASE, "learner": {"shuffle": True}, "checkpoint": {"publish": False}})
    assert spec.learner.shuffle is True and spec.checkpoint.publish is False


def test_predict_format_and_init_path_errors_are_named(tmp_path):
    from streamfm.cli import app
    from streamfm.store.trained import TrainedModel

    model = TrainedModel.from_spec(parse_spec(BASE))
    with pytest.raises(SpecError, match=r"--format: must be one of 'parquet', .* got 'xml'"):
        model.source_config("x.xml", "xml")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "no" / "dir" / "spec.yaml")])
    assert result.exit_code == 1
    assert "No such file or directory" in result.output and "Traceback" not in result.output
