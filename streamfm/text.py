"""Numbers written as text, read by one rule everywhere (targets, numeric builders, CSV hints).

A number is an optional sign, decimal digits with an optional fraction and exponent, or
inf / infinity / nan (any case), with blanks around it allowed. Python's float() also takes
"1_000" and would read it as 1000; such text is not a number here.
"""

from __future__ import annotations

import math
import re

# The rule as a regular expression that Python's re and RE2 (Arrow's compute) both read.
NUMBER_PATTERN = (
    r"^\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\s*$"
)
_NUMBER = re.compile(NUMBER_PATTERN, re.IGNORECASE)


def parse_number(text: str | None) -> float | None:
    """The number `text` spells, or None (missing: None or blank; or not a number)."""
    if text is None or not _NUMBER.fullmatch(text):
        return None
    return float(text)


def is_number(text: str | None) -> bool:
    """True when `text` spells a number (see the module docstring)."""
    return parse_number(text) is not None


def number_or_nan(text: str | None) -> float:
    """The number `text` spells, NaN when it spells none."""
    value = parse_number(text)
    return math.nan if value is None else value
