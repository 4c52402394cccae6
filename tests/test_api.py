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


WITHOUT_EXTRAS = """
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"sklearn", "pandas", "matplotlib"}:
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Blocked())
"""


def test_library_and_cli_work_without_the_optional_extras(tmp_path):
    """No scikit-learn, pandas or matplotlib: estimators, spec models and the CLI still work;
    `plot` says what to install."""
    code = (
        WITHOUT_EXTRAS
        + f'''
import numpy as np, yaml, pyarrow.parquet as pq
import streamfm
from streamfm import FMClassifier, FMRegressor
from streamfm.estimators import HAVE_SKLEARN, NotFittedError
from streamfm.datasets import make_planted_fm, write_event_log
from streamfm.cli import app
assert not HAVE_SKLEARN
X, y, _ = make_planted_fm(500, n_features=20, seed=1)
m = FMRegressor(epochs=2).fit(X, y, sample_weight=np.ones(500))
assert 0 < m.score(X, y) <= 1 and "epochs=2" in repr(m) and m.get_params()["k"] == 8
m.save("{tmp_path}/m.sfm")
assert np.array_equal(streamfm.load_model("{tmp_path}/m.sfm").predict(X), m.predict(X))
c = FMClassifier(epochs=2).fit(X, np.array(["a", "b", "c"])[np.arange(500) % 3])
assert c.predict_proba(X).shape == (500, 3)
try:
    FMRegressor().predict(X)
    raise SystemExit("no error")
except NotFittedError:
    pass
paths = write_event_log("{tmp_path}/d", n_users=30, n_items=20, n_events=600, seed=1)
spec = {{"source": {{"path": str(paths["train"])}}, "target": "rating",
        "features": [{{"type": "mf"}}], "output": {{"dir": "{tmp_path}/run"}}}}
open("{tmp_path}/s.yaml", "w").write(yaml.safe_dump(spec))
for args in (["train", "{tmp_path}/s.yaml", "-q"], ["inspect", "{tmp_path}/run/model.sfm"],
             ["explain", "{tmp_path}/run/model.sfm", str(paths["test"])],
             ["export", "{tmp_path}/run/model.sfm", "-o", "{tmp_path}/exp"]):
    try:
        app(args)
    except SystemExit as exc:
        assert exc.code in (0, None), (args, exc.code)
model = streamfm.load_model("{tmp_path}/run/model.sfm")
rows = pq.read_table(paths["test"])
assert np.array_equal(model.predict(rows.to_pydict()), model.predict_table(rows))
try:
    app(["plot", "{tmp_path}/run"])
except SystemExit as exc:
    assert exc.code == 1
print("ok")
'''
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")
    assert "pip install 'streamfm[plot]'" in r.stderr
