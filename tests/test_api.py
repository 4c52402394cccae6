"""The top-level namespace: what `import streamfm` offers and what `dir(streamfm)` shows."""

import subprocess
import sys

import streamfm


def test_dir_lists_the_public_api_and_nothing_else():
    names = dir(streamfm)
    assert names == sorted(streamfm.__all__)
    for name in ("train", "Spec", "load_spec", "load_model", "FMRegressor", "TrainedModel"):
        assert name in names
    for helper in ("Any", "import_module", "annotations", "importlib"):
        assert helper not in names


def test_every_public_name_resolves():
    for name in streamfm.__all__:
        assert getattr(streamfm, name) is not None


def test_import_is_lazy():
    code = "import sys, streamfm; print(sorted(m for m in sys.modules if m.startswith('streamfm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['streamfm']"
