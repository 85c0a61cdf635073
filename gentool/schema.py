"""Checking JSON that gentool reads back from files, which may be hostile: bounded nesting, and every field's type
and range checked before use, so that a bad value is one line naming the field instead of a traceback later.

A spec describes what a value may be (`Int(0, 10)`, `Obj({"epoch": Int(0)})`, `List(Str(), 100)` ...);
`check(value, spec, "state")` returns the value or raises `Invalid` naming the field (e.g. `state.partial.seen`).
"""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 16  # nothing gentool writes nests deeper than a few levels


class Invalid(ValueError):
    """A field that is not what gentool accepts: `field` is its dotted path, `problem` what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{f'field {field}' if field else 'the file'} {problem}")
        self.field, self.problem = field, problem


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def parse(text, field: str, max_depth: int = MAX_DEPTH):
    """JSON text → value, refusing invalid JSON and nesting deeper than `max_depth` (the json module recurses once
    per level, so a deeply nested document would otherwise end in RecursionError)."""
    if not isinstance(text, (str, bytes)):
        raise Invalid(field, f"is {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text)
    except RecursionError:
        raise Invalid(field, f"is nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise Invalid(field, f"is not valid JSON ({exc})") from None
    if depth(value) > max_depth:
        raise Invalid(field, f"is nested more than {max_depth} levels deep")
    return value


def depth(value) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _shown(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Spec:
    """What a value may be; `expected` is the phrase used in messages."""

    expected = "a value"

    def check(self, value, field: str):
        raise NotImplementedError

    def fail(self, value, field: str, expected: str | None = None):
        raise Invalid(field, f"is {_shown(value)}; expected {expected or self.expected}")


class Any(Spec):
    def check(self, value, field):
        return value


class Int(Spec):
    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi
        bounds = [f"≥ {lo:,}" if lo is not None else "", f"≤ {hi:,}" if hi is not None else ""]
        self.expected = " ".join(["an integer", " and ".join(b for b in bounds if b)]).strip()

    def check(self, value, field):
        if not isinstance(value, int) or isinstance(value, bool) or (self.lo is not None and value < self.lo) \
                or (self.hi is not None and value > self.hi):
            self.fail(value, field)
        return value


class Num(Spec):
    """A finite number in [lo, hi] (open at an end when `open_lo`/`open_hi`)."""

    def __init__(self, lo: float | None = None, hi: float | None = None, open_lo: bool = False, open_hi: bool = False):
        self.lo, self.hi, self.open_lo, self.open_hi = lo, hi, open_lo, open_hi
        left = "(" if open_lo else "["
        right = ")" if open_hi else "]"
        self.expected = "a finite number" + (f" in {left}{lo}, {hi}{right}" if lo is not None and hi is not None else
                                             f" {'>' if open_lo else '≥'} {lo}" if lo is not None else "")

    def check(self, value, field):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.lo is not None:
            ok = value > self.lo if self.open_lo else value >= self.lo
        if ok and self.hi is not None:
            ok = value < self.hi if self.open_hi else value <= self.hi
        if not ok:
            self.fail(value, field)
        return value


class Str(Spec):
    def __init__(self, max_len: int = 4096, pattern: str | None = None):
        self.max_len, self.pattern = max_len, re.compile(pattern) if pattern else None
        self.expected = f"a string of at most {max_len} characters" + (f" matching {pattern}" if pattern else "")

    def check(self, value, field):
        if not isinstance(value, str) or len(value) > self.max_len or (self.pattern and not self.pattern.fullmatch(value)):
            self.fail(value, field)
        return value


class Bool(Spec):
    expected = "true or false"

    def check(self, value, field):
        if not isinstance(value, bool):
            self.fail(value, field)
        return value


class Opt(Spec):
    """The spec, or null."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.expected = f"{spec.expected} or null"

    def check(self, value, field):
        return None if value is None else self.spec.check(value, field)


class OneOf(Spec):
    """Any of several specs (the first that accepts the value)."""

    def __init__(self, *specs: Spec):
        self.specs = specs
        self.expected = " or ".join(s.expected for s in specs)

    def check(self, value, field):
        for spec in self.specs:
            try:
                return spec.check(value, field)
            except Invalid:
                continue
        self.fail(value, field)


class List(Spec):
    def __init__(self, item: Spec, max_len: int = 10_000, length: int | None = None):
        self.item, self.max_len, self.length = item, max_len, length
        count = f"exactly {length}" if length is not None else f"at most {max_len:,}"
        self.expected = f"a list of {count} items"

    def check(self, value, field):
        if not isinstance(value, list) or len(value) > self.max_len or (self.length is not None and len(value) != self.length):
            self.fail(value, field)
        return [self.item.check(v, f"{field}[{i}]") for i, v in enumerate(value)]


class Map(Spec):
    """An object with any keys (matching `key`, a regular expression) whose values all follow one spec."""

    def __init__(self, value: Spec, key: str = r".{1,200}", max_len: int = 10_000):
        self.value, self.key, self.max_len = value, re.compile(key, re.S), max_len
        self.expected = f"an object of at most {max_len:,} entries"

    def check(self, value, field):
        if not isinstance(value, dict) or len(value) > self.max_len:
            self.fail(value, field)
        for k in value:
            if not self.key.fullmatch(k):
                raise Invalid(_join(field, k[:40]), f"is not a valid name here (expected one matching {self.key.pattern})")
        return {k: self.value.check(v, _join(field, k)) for k, v in value.items()}


class Obj(Spec):
    """An object with `required` and `optional` fields. Other keys: kept unchecked when `extra` is True (fields a
    newer gentool may add), checked against `extra` when it is a spec, refused when it is False."""

    def __init__(self, required: dict[str, Spec], optional: dict[str, Spec] | None = None,
                 extra: bool | Spec = True, max_len: int = 10_000):
        self.required, self.optional, self.extra, self.max_len = required, optional or {}, extra, max_len
        self.expected = "an object"

    def check(self, value, field):
        if not isinstance(value, dict) or len(value) > self.max_len:
            self.fail(value, field)
        missing = [k for k in self.required if k not in value]
        if missing:
            raise Invalid(_join(field, missing[0]), "is missing")
        out = dict(value)
        for k, v in value.items():
            spec = self.required.get(k) or self.optional.get(k)
            if spec is None and self.extra is False:
                raise Invalid(_join(field, k[:40]), "is not a field gentool knows")
            if spec is None and isinstance(self.extra, Spec):
                spec = self.extra
            if spec is not None:
                out[k] = spec.check(v, _join(field, k))
        return out


SCALAR = OneOf(Opt(Num()), Str(), Bool())  # a number, string, boolean or null


def read(path, spec: Spec, field: str = "", max_bytes: int = 256 << 20, follow: bool = True):
    """Parse the JSON file at `path` and check it against `spec`; `field` prefixes field names in messages.
    Raises Invalid (for a file not UTF-8 too) or OSError: a file refused unread (a named pipe or device, which would
    block; a file larger than `max_bytes`; a link, unless `follow`) is an OSError saying which (gentool.fileio)."""
    from gentool.fileio import read_bounded

    text = read_bounded(path, max_bytes, follow)
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(field, "is not UTF-8 text") from None
    return check(parse(text, field), spec, field)


def read_checked(path, spec: Spec, arg: str):
    """`read`, with a problem raised as one GentoolError naming `arg` (the command's argument), the file and the
    field: how commands read the JSON files of a run."""
    from gentool.errors import GentoolError
    from gentool.fileio import cannot_read
    from gentool.links import described

    try:
        return read(path, spec)
    except Invalid as exc:
        raise GentoolError(f"{arg}: {described(path)}: {exc}") from None
    except OSError as exc:  # refused unread: a pipe or device, too large, unreadable (said which)
        raise GentoolError(f"{arg}: {cannot_read(path, exc)}") from None


def check(value, spec: Spec, field: str):
    """`value` if it follows `spec`, else Invalid naming the field."""
    return spec.check(value, field)
