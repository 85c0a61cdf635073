"""Parsers for the compact values the CLI accepts (grid specs, NAME=VALUE parameters, value lists)."""

from __future__ import annotations

import json
import math
import re

from gentool.errors import bad_value

MAX_GRID_SIDE = 64
# ASCII digits only, everywhere a number is read from text: Python's int() and float() (and \d, str.isdigit) also
# take Arabic-Indic or full-width digits ('١٢', '１２') and underscores ('1_0'), which no user means as a number.
_GRID = re.compile(r"^\s*([0-9]{1,4})\s*[xX×]\s*([0-9]{1,4})\s*$")
_GRID_SHAPE = re.compile(r"\s*[0-9]+\s*[xX×]\s*[0-9]+\s*")  # digits, any number of them: a side too large
_INT = re.compile(r"[+-]?[0-9]{1,30}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,4})?")
DIGITS = "written with the digits 0-9"
_UNDERSCORED = re.compile(r"[+-]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?")  # 1_000: Python's, not a setting's


def parse_number(text: str, kind=float):
    """`text` as an int (`kind` int: digits with an optional sign) or a float (also a decimal point and an
    exponent, such as 2e-4), in ASCII digits; ValueError otherwise (no NaN or infinity, no underscores)."""
    text = text.strip() if isinstance(text, str) else None
    if text is None or not (_INT if kind is int else _NUMBER).fullmatch(text):
        raise ValueError(f"{text!r} is not {'an integer' if kind is int else 'a number'} {DIGITS}")
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


def parse_grid(spec: str, name: str = "--grid") -> tuple[int, int]:
    """'8x8' → (8, 8): rows × columns, each 1..64."""
    m = _GRID.match(spec or "")
    if not m:
        raise bad_value(name, spec, f"ROWSxCOLS such as 8x8, {DIGITS}" if not _GRID_SHAPE.fullmatch(spec or "")
                        else f"ROWSxCOLS with each side between 1 and {MAX_GRID_SIDE}")  # digits, too many of them
    rows, cols = int(m.group(1)), int(m.group(2))
    if not (1 <= rows <= MAX_GRID_SIDE and 1 <= cols <= MAX_GRID_SIDE):
        raise bad_value(name, spec, f"ROWSxCOLS with each side between 1 and {MAX_GRID_SIDE}")
    return rows, cols


def parse_scalar(text: str):
    """'3' → 3, '0.5' → 0.5, 'true' → True, anything else stays a string. NaN and infinities are rejected, and so
    are numbers written with other digits than 0-9 or with underscores ('٣', '1_000': meant as numbers, they would
    otherwise pass on as strings)."""
    text = text.strip()
    if any(c.isdigit() and not c.isascii() for c in text) or _UNDERSCORED.fullmatch(text):
        raise ValueError(f"{text!r} is not a number {DIGITS}")
    try:
        value = json.loads(text.lower() if text.lower() in ("true", "false") else text)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value if isinstance(value, (int, float, bool)) else text


def parse_param(spec: str, name: str = "--param") -> tuple[str, object]:
    """'clip=0.02' → ('clip', 0.02)."""
    key, sep, value = (spec or "").partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()) or not value.strip():
        raise bad_value(name, spec, "NAME=VALUE such as clip=0.02")
    try:
        return key.strip(), parse_scalar(value)
    except ValueError:
        raise bad_value(name, spec, f"NAME=VALUE with a finite value (numbers {DIGITS})") from None


def parse_list(spec: str, name: str, kind=None) -> list:
    """'2,5,10' → [2, 5, 10]: comma-separated values converted by `kind` (int, float; default: parse_scalar),
    at least one, no repeats."""
    items = [item.strip() for item in (spec or "").split(",")]
    if not spec or not all(items):
        raise bad_value(name, spec, "a comma-separated list of values such as 2,5,10")
    try:
        values = [_convert(item, kind) for item in items]
    except ValueError:
        what = {int: f"integers {DIGITS}", float: f"numbers {DIGITS}"}.get(kind, "finite values")
        raise bad_value(name, spec, f"a comma-separated list of {what} such as 2,5,10") from None
    if len(set(map(repr, values))) != len(values):
        raise bad_value(name, spec, "a comma-separated list without repeated values")
    return values


def _convert(text: str, kind):
    if kind is None:
        return parse_scalar(text)
    return parse_number(text, kind) if kind in (int, float) else kind(text)
