"""Third-party feature builders: by 'module:Class' and through the entry-point group."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomllib
import yaml

from streamfm.features.pipeline import FeaturePipeline
from streamfm.features.registry import ENTRY_POINT_GROUP

PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "streamfm-tokens"


@pytest.fixture
def plugin_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))


def test_module_class_reference(plugin_on_path):
    p = FeaturePipeline.from_specs(
        [{"type": "streamfm_tokens:TokensBuilder", "column": "t", "min_length": 2}]
    )
    chunk = p.transform(pa.record_batch({"t": ["Big red Car, a car!", None]}), training=True)
    names = [p.feature_name(int(i)) for i in chunk.indices]
    assert names == ["t=big", "t=red", "t=car"]
    assert chunk.indptr.tolist() == [0, 3, 3]
    assert chunk.values.tolist() == pytest.approx([3**-0.5] * 3)


def test_bad_plugin_parameters_name_the_builder(plugin_on_path):
    from streamfm.errors import SpecError

    with pytest.raises(
        SpecError,
        match=r"features\[0\] \(streamfm_tokens:TokensBuilder 't'\): min_length: must be >= 1",
    ):
        FeaturePipeline.from_specs(
            [{"type": "streamfm_tokens:TokensBuilder", "column": "t", "min_length": 0}]
        )


def test_entry_point_discovery_trains_from_a_spec(tmp_path):
    # Register the plugin as an installed distribution would: a .dist-info folder on the path
    # whose entry_points.txt is the one declared in the example's pyproject.toml.
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    entry = project["entry-points"][ENTRY_POINT_GROUP]
    site = tmp_path / "site"
    info = site / "streamfm_tokens-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: streamfm-tokens\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items())
    )
    data = pa.table(
        {
            "title": ["red car", "blue car", "red bike", "old blue bike"] * 50,
            "y": [1.0, 2.0, 3.0, 4.0] * 50,
        }
    )
    pq.write_table(data, tmp_path / "d.parquet")
    spec = {
        "source": {"path": str(tmp_path / "d.parquet")},
        "target": "y",
        "features": [{"type": "tokens", "column": "title"}],
        "learner": {"optimizer": "adagrad", "learning_rate": 0.1, "epochs": 3},
        "output": {"dir": str(tmp_path / "run")},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN / "src")])}
    exe = Path(sys.executable).with_name("streamfm")
    r = subprocess.run(
        [str(exe), "train", str(tmp_path / "spec.yaml"), "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [str(exe), "inspect", str(tmp_path / "run" / "model.sfm")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "title=car" in r.stdout or "title=red" in r.stdout


def test_example_plugin_passes_the_builder_contract(plugin_on_path):
    from streamfm_tokens import TokensBuilder

    from streamfm.testing import check_builder

    sample = pa.table({"t": ["Big red Car, a car!", None, "", "red bike", "a b c d"] * 20})
    check_builder(lambda: TokensBuilder("t", TokensBuilder.Params(column="t")), sample)
