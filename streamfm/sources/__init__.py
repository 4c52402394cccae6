"""Chunked readers: Parquet, CSV, libFM text and JSON lines from files, globs, folders or stdin.

`open_source(config)` returns a Source whose `batches()` yields Arrow record batches of at most
`config.batch_size` rows, each with the Position at which reading resumes right after it. Setting `Source.on_bad_row`
makes the readers skip malformed rows and report each as a `BadRow` instead of raising DataError.
"""

from streamfm.sources.base import BadRow, Position, Source, open_source
from streamfm.sources.csv import CsvSource
from streamfm.sources.discovery import FORMATS, STDIN, infer_format, resolve_files
from streamfm.sources.jsonl import JsonlSource
from streamfm.sources.libfm import LibfmSource
from streamfm.sources.parquet import ParquetSource

__all__ = [
    "FORMATS",
    "BadRow",
    "CsvSource",
    "JsonlSource",
    "LibfmSource",
    "ParquetSource",
    "STDIN",
    "Position",
    "Source",
    "infer_format",
    "open_source",
    "resolve_files",
]
