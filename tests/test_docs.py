"""Documentation that is generated from code must be up to date."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_spec_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "spec_reference.py"), "--check"])
    assert r.returncode == 0, "docs/spec.md is stale: run python tools/spec_reference.py"


def test_architecture_lists_every_module():
    """docs/architecture.md's module list names exactly the modules of `ls -R streamfm`."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Modules", 1)[1].split("```")[1]
    listed, folder = set(), ""
    for line in block.splitlines():
        m = re.match(r"^  (\s*)([\w_]+(?:\.py|/))", line)
        if not m:
            continue
        name = m.group(2)
        if name.endswith("/"):
            folder = name if not m.group(1) else folder
            continue
        listed.add((folder if m.group(1) else "") + name)
    package = ROOT / "streamfm"
    actual = {
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "__init__.py" or p.parent == package
    }
    assert listed == actual, (
        f"missing from docs: {sorted(actual - listed)}; not in the code: {sorted(listed - actual)}"
    )


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """(line number, text) of every ```language block of a Markdown file."""
    import re

    text = path.read_text()
    out = []
    for m in re.finditer(r"^( *)```" + language + r"\n(.*?)^\1```", text, re.S | re.M):
        indent = len(m.group(1))
        body = "\n".join(line[indent:] for line in m.group(2).splitlines())
        out.append((text[: m.start()].count("\n") + 1, body))
    return out


def test_every_yaml_block_of_the_docs_is_valid():
    """README.md and docs/*.md: every ```yaml block is YAML; a whole spec validates as one, a
    features list as builders."""
    import yaml

    from streamfm.features.registry import parse_builders
    from streamfm.spec import parse_spec

    blocks = [(p, line, b) for p in DOCS for line, b in fenced_blocks(p, "yaml")]
    assert len(blocks) >= 7
    for path, line, body in blocks:
        where = f"{path.name}:{line}"
        data = yaml.safe_load(body)
        assert isinstance(data, dict), where
        if "source" in data:
            parse_spec(data, origin=where)
        elif "features" in data:
            parse_builders(data["features"])


def shell_commands() -> list[tuple[str, list[str]]]:
    """Every `streamfm ...` command of the docs' plain ``` blocks (one per line, comments and
    pipes cut off)."""
    import shlex

    out = []
    for path in DOCS:
        for line_no, body in fenced_blocks(path, ""):
            for i, line in enumerate(body.splitlines()):
                cmd = line.split("#", 1)[0].split("|")
                part = next((c for c in cmd if c.strip().startswith("streamfm ")), None)
                if part is not None:
                    out.append((f"{path.name}:{line_no + i + 1}", shlex.split(part)))
    return out


def test_every_streamfm_command_of_the_docs_exists_with_its_options():
    import typer.main

    from streamfm.cli import app

    group = typer.main.get_command(app)
    commands = shell_commands()
    assert len(commands) >= 12
    for where, argv in commands:
        name = argv[1]
        assert name in group.commands, f"{where}: no command {name!r}"
        command = group.commands[name]
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for arg in argv[2:]:
            if arg.startswith("-") and arg != "-":
                assert arg.split("=")[0] in known, f"{where}: {name} has no option {arg}"
        # and it parses: required arguments given, option values of the right kind
        ctx = command.make_context(name, list(argv[2:]), resilient_parsing=False)
        assert ctx.params is not None


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python block, with the demo's data made small."""
    import shutil

    pytest.importorskip("pandas")
    from streamfm.datasets import write_event_log

    write_event_log(tmp_path / "data" / "events", n_users=50, n_items=30, n_events=2_000, seed=1)
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "events.yaml", tmp_path / "examples" / "events.yaml")
    monkeypatch.chdir(tmp_path)
    [(_, code)] = fenced_blocks(ROOT / "README.md", "python")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "model.sfm").exists() and (tmp_path / "runs" / "api" / "model.sfm").exists()


def test_the_side_feature_recipe_reads_ml100k_u_item(tmp_path):
    """docs/features.md's join on u.item, on a synthetic file of u.item's layout: 24 '|'-separated
    fields, no header, latin-1 titles, 19 genre flags."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    import streamfm

    [block] = [b for _, b in fenced_blocks(ROOT / "docs" / "features.md", "yaml") if "u.item" in b]
    features = yaml.safe_load(block)["features"]
    rng = np.random.default_rng(0)
    lines = []
    for item in range(1, 41):
        flags = "|".join(str(int(f)) for f in rng.random(19) < 0.2)
        lines.append(f"{item}|Caf\xe9 {item} (1995)|01-Jan-199{item % 10}||http://x/{item}|{flags}")
    (tmp_path / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    features[1]["table"]["path"] = str(tmp_path / "u.item")
    n = 500
    events = pa.table(
        {
            "user": rng.integers(1, 30, n).astype(str),
            "item": rng.integers(1, 41, n).astype(str),
            "rating": rng.integers(1, 6, n).astype(float),
        }
    )
    pq.write_table(events, tmp_path / "r.parquet")
    spec = {
        "source": {"path": str(tmp_path / "r.parquet")},
        "target": "rating",
        "features": features,
        "output": {"dir": str(tmp_path / "run")},
        "checkpoint": {"enabled": False},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    model = streamfm.train(tmp_path / "s.yaml").model
    names = {model.pipeline.feature_name(i) for i in range(model.learner.params.n_features)}
    assert any("genre" in n and "comedy" in n for n in names), sorted(names)[:20]
    assert any("released" in n and "01-Jan-199" in n for n in names)


def test_the_model_file_layout_is_what_the_docs_say(tmp_path):
    """docs/model-file.md: the members it names exist, and its reading recipe gives the score."""
    import zipfile

    import numpy as np
    import yaml

    import streamfm
    from streamfm.datasets import make_planted_fm, write_event_log

    text = (ROOT / "docs" / "model-file.md").read_text()
    paths = write_event_log(tmp_path / "d", n_users=30, n_items=20, n_events=600, seed=2)
    spec = {
        "source": {"path": str(paths["train"])},
        "target": "rating",
        "features": [{"type": "mf"}, {"type": "implicit", "key": "user", "items": "item"}],
        "learner": {"optimizer": "adagrad", "epochs": 1},
        "output": {"dir": str(tmp_path / "run")},
        "checkpoint": {"enabled": False},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    streamfm.train(tmp_path / "s.yaml")
    X, y, _ = make_planted_fm(200, n_features=10, seed=1)
    streamfm.FMClassifier(epochs=1).fit(X, np.arange(200) % 3).save(tmp_path / "c.sfm")
    members = set()
    for f in (tmp_path / "run" / "model.sfm", tmp_path / "c.sfm"):
        with zipfile.ZipFile(f) as z:
            members |= set(z.namelist())
    documented = {  # as the docs write them -> as a file names them
        "w0.npy": "w0.npy",
        "w.npy": "w.npy",
        "V.npy": "V.npy",
        "group.npy": "group.npy",
        "acc_w.npy": "acc_w.npy",
        "features/space/id_group.npy": "features/space/id_group.npy",
        "features/space/ids/<g>.npy": "features/space/ids/0.npy",
        "features/space/keys/<g>/bytes.npy": "features/space/keys/0/bytes.npy",
        "features/space/keys/<g>/offsets.npy": "features/space/keys/0/offsets.npy",
        "ovr/<c>/params/w.npy": "ovr/0/params/w.npy",
        "scaling/x_scale.npy": "scaling/x_scale.npy",
    }
    for doc, member in documented.items():
        assert f"`{doc}`" in text, doc
        assert member in members, member
    assert any(m.startswith("features/builders/2/") for m in members)
    [(_, recipe)] = fenced_blocks(ROOT / "docs" / "model-file.md", "python")
    here = {}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path / "run")
    try:
        exec(recipe, here)
    finally:
        os.chdir(cwd)
    model = streamfm.load_model(tmp_path / "run" / "model.sfm")
    chunk = model.transform(
        next(iter(__import__("pyarrow.parquet").parquet.read_table(paths["train"]).to_batches()))
    )
    ids = chunk.indices[chunk.indptr[0] : chunk.indptr[1]]
    x = chunk.values[chunk.indptr[0] : chunk.indptr[1]].astype(float)
    w0, w, V = here["w0"], here["w"].astype(float), here["V"].astype(float)
    d = V[ids] * x[:, None]
    score = w0[0] + w[ids] @ x + 0.5 * ((d.sum(0) ** 2).sum() - (d**2).sum())
    assert score == pytest.approx(model.learner.decision_function(chunk)[0], rel=1e-5)
