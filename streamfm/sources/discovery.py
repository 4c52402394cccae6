"""Finding a source's files: paths, globs, folders, lists and stdin; formats from extensions;
the names never read (hidden and underscore entries, files still being written)."""

from __future__ import annotations

import glob
import os

from streamfm.config import SourceConfig
from streamfm.errors import DataError, MissingInputError, SpecError

# The path of standard input.
STDIN = "-"

FORMATS = ("parquet", "csv", "libfm", "jsonl")
EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".libfm": "libfm",
    ".libsvm": "libfm",
    ".svm": "libfm",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
COMPRESSIONS = (".gz", ".bz2", ".zst")
# Files still being written are expected to appear under a temporary name and be renamed into
# place when complete: such names are never read in follow mode.
INCOMPLETE_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress", ".crdownload")


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is tool litter (.ipynb_checkpoints, _SUCCESS, _temporary)."""
    return name.startswith((".", "_"))


def is_complete(path: str) -> bool:
    """False for names that mark a file still being written (hidden, _temporary, *.tmp, *.part)."""
    name = os.path.basename(path)
    return not (is_hidden(name) or name.lower().endswith(INCOMPLETE_SUFFIXES))


def split_extension(path: str) -> tuple[str, str]:
    """(format extension, compression extension) of a file name, lower-cased, '' when absent."""
    root, ext = os.path.splitext(os.path.basename(path).lower())
    comp = ""
    if ext in COMPRESSIONS:
        comp = ext
        ext = os.path.splitext(root)[1]
    return ext, comp


def _format_of(path: str) -> str | None:
    ext, comp = split_extension(path)
    fmt = EXTENSIONS.get(ext)
    if fmt == "parquet" and comp:
        # Parquet compresses internally; an outer .gz cannot be read by row group.
        return None
    return fmt


def infer_format(path: str) -> str:
    """Format of `path` from its extension (an outer .gz/.bz2/.zst is allowed for text formats)."""
    fmt = _format_of(path)
    if fmt is None:
        known = ", ".join(sorted(EXTENSIONS))
        raise SpecError(
            f"source.path: cannot tell the format of {path!r} from its extension (known: {known}, "
            f"text formats optionally followed by {'/'.join(COMPRESSIONS)}); "
            f"set source.format to one of {', '.join(FORMATS)}"
        )
    return fmt


def _has_magic(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _walk(folder: str, fmt: str | None) -> list[str]:
    """Files below `folder` of format `fmt` (any known format when None), sorted; hidden and
    underscore entries are skipped."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in names:
            if is_hidden(name):
                continue
            f = _format_of(name)
            if f is not None and (fmt is None or f == fmt):
                out.append(os.path.join(root, name))
    return sorted(out)


def _expand(entry: str, base: str, fmt: str | None) -> list[str]:
    path = os.path.normpath(os.path.join(base, os.path.expanduser(entry)))
    if _has_magic(path):
        out = []
        for m in sorted(glob.glob(path, recursive=True)):
            if os.path.isdir(m):
                out.extend(_walk(m, fmt))
            elif os.path.isfile(m):
                out.append(m)
        if not out:
            raise MissingInputError("no files match this pattern", path=path)
        return out
    if os.path.isdir(path):
        out = _walk(path, fmt)
        if not out:
            what = f"{fmt} " if fmt else ""
            exts = [e for e, f in EXTENSIONS.items() if fmt is None or f == fmt]
            raise MissingInputError(
                f"folder holds no {what}files (looked for {', '.join(exts)})", path=path
            )
        return out
    if os.path.isfile(path):
        return [path]
    raise MissingInputError("no such file or folder", path=path)


def resolve_files(
    config: SourceConfig, base_dir: str | os.PathLike[str] | None = None
) -> tuple[list[str], str]:
    """The source's files (absolute; sorted within each entry, entries in the given order) and format."""
    entries = [config.path] if isinstance(config.path, str) else list(config.path)
    if STDIN in entries:
        if len(entries) > 1:
            raise SpecError("source.path: '-' (standard input) cannot be combined with other paths")
        if config.format is None:
            raise SpecError("source.format must be set when source.path is '-' (standard input)")
        if config.format == "parquet":
            raise SpecError("source.format: parquet cannot be read from standard input; use a file")
        return [STDIN], config.format
    base = os.path.abspath(base_dir) if base_dir is not None else os.getcwd()
    files: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        for f in _expand(entry, base, config.format):
            if f not in seen:
                seen.add(f)
                files.append(f)
    fmt = config.format
    if fmt is None:
        found = {f: infer_format(f) for f in files}
        kinds = sorted(set(found.values()))
        if len(kinds) > 1:
            raise SpecError(
                f"source.path: the files are of several formats ({', '.join(kinds)}); "
                "set source.format or narrow source.path"
            )
        fmt = kinds[0]
    return files, fmt


def current_files(config: SourceConfig) -> tuple[list[str], str | None]:
    """The source's files as they are now, and their format, for a stream that may follow it:
    with `config.follow`, only complete files (`is_complete`), and none (rather than an error)
    while nothing is there yet; the format is then `config.format`."""
    if not config.follow:
        return resolve_files(config)
    try:
        files, fmt = resolve_files(config)
    except DataError:
        return [], config.format  # nothing there yet
    return [f for f in files if is_complete(f)], fmt
