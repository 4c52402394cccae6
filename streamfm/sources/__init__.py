"""Chunked readers: Parquet, CSV, libFM text and JSON lines from files, globs, folders or stdin.

`discovery` finds a source's files; a `Reader` (one per format) reads one file in Arrow record
batches of at most `config.batch_size` rows, each with the Position at which reading that file
resumes right after it; `stream` reads the files one after another: `open_source(config)`
returns a Source whose `batches()` reads them all once, `SourceStream` is the resumable training
stream (follow mode too). Setting `on_bad_row` makes the readers skip malformed rows and report
each as a `BadRow` instead of raising DataError.
"""

from streamfm.sources.base import BadRow, Position, Reader
from streamfm.sources.csv import CsvReader
from streamfm.sources.discovery import FORMATS, STDIN, infer_format, resolve_files
from streamfm.sources.jsonl import JsonlReader
from streamfm.sources.libfm import LibfmReader
from streamfm.sources.parquet import ParquetReader
from streamfm.sources.stream import Source, SourceStream, make_reader, open_source

__all__ = [
    "FORMATS",
    "STDIN",
    "BadRow",
    "CsvReader",
    "JsonlReader",
    "LibfmReader",
    "ParquetReader",
    "Position",
    "Reader",
    "Source",
    "SourceStream",
    "infer_format",
    "make_reader",
    "open_source",
    "resolve_files",
]
