"""Documentation that is generated from code must be up to date."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_spec_reference_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "spec_reference.py"), "--check"])
    assert r.returncode == 0, "docs/spec.md is stale: run python tools/spec_reference.py"
