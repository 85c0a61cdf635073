"""What an option's value may be, declared with the option (`gentool.train_options.option(check=...)`) and applied
to every option of every command before any work, whether the value was typed, read from a --config file or from a
run's config.json. Besides its own check, every value gets the checks of its type: text is non-empty and holds no
NUL or undecodable bytes, numbers are finite and integers fit in 64 bits.

Imports nothing heavy: the CLI checks options before torch is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import re

from gentool.errors import bad_value, clipped
from gentool.parsing import DIGITS, parse_number

MAX_COUNT = 10**9  # no epoch count, image count or pixel size is sensibly larger
MAX_INT = 2**63 - 1
MAX_TEXT = 4096  # PATH_MAX: no option's text is longer
MAX_SEED = 2**32 - 1  # every RNG gentool seeds (torch's, numpy's, and per-epoch seeds derived from it) takes these


def _shown(bound: float) -> str:
    """A bound as people write it: 1,000,000 rather than 1e+06."""
    return f"{bound:,.0f}" if bound == int(bound) and abs(bound) < 1e15 else f"{bound:g}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Ints:
    """An integer from `low` to `high`."""

    low: int = 0
    high: int = MAX_COUNT
    what: str = ""

    def accepted(self) -> str:
        """What the option takes, in words, with its range."""
        return self.what or f"an integer between {self.low:,} and {self.high:,}"

    def __call__(self, name: str, value) -> None:
        if not _is_int(value) or not self.low <= value <= self.high:
            raise bad_value(name, value, self.accepted())


@dataclasses.dataclass(frozen=True)
class Numbers:
    """A finite number from `low` (excluded when `open_low`) to `high`."""

    low: float = 0.0
    high: float = 1e9
    open_low: bool = False
    what: str = ""

    def accepted(self) -> str:
        """What the option takes, in words, with its range."""
        bound = f"above {_shown(self.low)}" if self.open_low else f"from {_shown(self.low)}"
        return self.what or f"a number {bound} up to {_shown(self.high)}"

    def __call__(self, name: str, value) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not (self.low < value if self.open_low else self.low <= value) or value > self.high:
            raise bad_value(name, value, self.accepted())


@dataclasses.dataclass(frozen=True)
class Words:
    """Text matching `pattern` (whole, ignoring case), described as `what`."""

    pattern: str
    what: str

    def __call__(self, name: str, value) -> None:
        if not isinstance(value, str) or not re.fullmatch(self.pattern, value, re.IGNORECASE | re.ASCII):
            raise bad_value(name, value, self.what)


def choice(*words: str) -> Words:
    return Words("|".join(map(re.escape, words)), "one of " + ", ".join(words))


def check_text(name: str, value: str) -> None:
    """Text any option may hold: non-empty, short, without NUL (no path or name can hold one) or bytes the
    terminal's encoding could not decode (they could not be written to a JSON record)."""
    if not value.strip():
        raise bad_value(name, value, "a non-empty value")
    if len(value) > MAX_TEXT:
        raise bad_value(name, clipped(value), f"at most {MAX_TEXT:,} characters")
    if "\0" in value:
        raise bad_value(name, value, "text without a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_value(name, value, "text in the terminal's encoding (UTF-8)") from None


def check_value(name: str, value, check=None) -> None:
    """`value` of the option `name` (each item of a list): its own `check(name, value)` and its type's checks (text's
    first, a number's own range first: it says more)."""
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            check_value(name, item, check)
        return
    if isinstance(value, dict):  # --param NAME=VALUE: names and values are checked by the model's config
        for key, item in value.items():
            check_value(f"{name} {key}", key)
            check_value(f"{name} {key}", item)
        return
    if isinstance(value, str):
        check_text(name, value)
    if check is not None:
        check(name, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise bad_value(name, value, "a finite number")
    if _is_int(value) and abs(value) > MAX_INT:
        raise bad_value(name, value, f"an integer of at most {MAX_INT:,}")


def number_parser(kind, check=None):
    """The parser of a number option (typer's `parser=`; `kind` int or float): the text in ASCII digits, where
    click's and typer's own conversion (int(), float()) would take '١٢', '１２' and '1_0'. A ValueError otherwise
    says what the option accepts, with `check`'s range (typer makes it the option's one-line error)."""
    def parse(value):
        if not isinstance(value, str):  # a default
            return value
        try:
            return parse_number(value, kind)
        except ValueError:
            what = check.accepted() if hasattr(check, "accepted") else "an integer" if kind is int else "a number"
            raise ValueError(f"expected {what}, {DIGITS}") from None
    return parse


def check_options(opts, flag) -> None:
    """Every field of the options dataclass `opts`, named by `flag(field)` (its --option or ARGUMENT)."""
    for f in dataclasses.fields(opts):
        check_value(flag(f), getattr(opts, f.name), f.metadata.get("check"))
