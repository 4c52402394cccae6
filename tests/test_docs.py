"""Documentation that is generated from code must be up to date."""

import subprocess
import sys
from pathlib import Path

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
