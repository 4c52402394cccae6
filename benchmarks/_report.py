"""Shared helpers of the benchmark scripts: machine description and docs/benchmarks.md sections."""

from __future__ import annotations

import os
import platform
import re
import resource
import shlex
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Written by the scripts in `benchmarks/`; each section names the exact command that produced it.\n"
    "Machines are shared and noisy: compare figures measured in the same run.\n"
)


def command_line() -> str:
    """The command that is running, as one could type it again from the project root."""
    script = os.path.relpath(sys.argv[0], DOCS.parent.parent)
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def machine() -> str:
    """One line describing this machine and the library versions that matter for speed."""
    import numba
    import numpy
    import pyarrow

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, numba {numba.__version__}, pyarrow {pyarrow.__version__}"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md with `body`.

    The section is delimited by HTML comments so that each script owns its own part of the file.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = DOCS.read_text() if DOCS.exists() else HEADER
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)
