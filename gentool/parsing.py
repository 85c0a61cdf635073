"""Parsers for the compact values the CLI accepts (grid specs, NAME=VALUE parameters, value lists)."""

from __future__ import annotations

import json
import math
import re

from gentool.errors import bad_value

MAX_GRID_SIDE = 64
_GRID = re.compile(r"^\s*(\d{1,4})\s*[xX×]\s*(\d{1,4})\s*$")


def parse_grid(spec: str, name: str = "--grid") -> tuple[int, int]:
    """'8x8' → (8, 8): rows × columns, each 1..64."""
    m = _GRID.match(spec or "")
    if not m:
        raise bad_value(name, spec, "ROWSxCOLS such as 8x8")
    rows, cols = int(m.group(1)), int(m.group(2))
    if not (1 <= rows <= MAX_GRID_SIDE and 1 <= cols <= MAX_GRID_SIDE):
        raise bad_value(name, spec, f"ROWSxCOLS with each side between 1 and {MAX_GRID_SIDE}")
    return rows, cols


def parse_scalar(text: str):
    """'3' → 3, '0.5' → 0.5, 'true' → True, anything else stays a string. NaN and infinities are rejected."""
    text = text.strip()
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
        raise bad_value(name, spec, "NAME=VALUE with a finite value") from None


def parse_list(spec: str, name: str, kind=None) -> list:
    """'2,5,10' → [2, 5, 10]: comma-separated values converted by `kind` (int, float; default: parse_scalar),
    at least one, no repeats."""
    items = [item.strip() for item in (spec or "").split(",")]
    if not spec or not all(items):
        raise bad_value(name, spec, "a comma-separated list of values such as 2,5,10")
    try:
        values = [_convert(item, kind) for item in items]
    except ValueError:
        what = {int: "integers", float: "numbers"}.get(kind, "finite values")
        raise bad_value(name, spec, f"a comma-separated list of {what} such as 2,5,10") from None
    if len(set(map(repr, values))) != len(values):
        raise bad_value(name, spec, "a comma-separated list without repeated values")
    return values


def _convert(text: str, kind):
    if kind is None:
        return parse_scalar(text)
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value
