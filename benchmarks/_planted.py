"""The planted yardstick of ../shared/bench: generated once into a work folder and reused."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = ROOT.parent / "shared"
DEFAULT_WORK = ROOT / ".bench-data"


def ensure_planted(shared: Path = DEFAULT_SHARED, work: Path = DEFAULT_WORK) -> Path:
    """Return the folder with train/test .parquet/.csv/.libfm and truth.npz, generating it if absent."""
    out = Path(work) / "planted"
    if not (out / "test.libfm").exists():
        script = Path(shared) / "bench" / "planted.py"
        if not script.exists():
            raise SystemExit(f"{script} not found: pass --shared pointing at the shared folder")
        subprocess.run([sys.executable, str(script), str(out)], check=True)
    return out


def planted_arguments(ap: argparse.ArgumentParser) -> None:
    """--shared and --work, the options of every benchmark on the planted files."""
    ap.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder (bench/planted.py)"
    )
    ap.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help="where the planted files are cached"
    )
