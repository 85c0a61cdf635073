"""The environment variables gentool reads, each checked where it is read: a value gentool cannot use is one line
naming the variable and what it accepts (exit code 2), never an error about the folder or number it became later
(a GENTOOL_DATA too long for the file system used to end as "error: ddd…: File name too long", exit 1).

Variables that say where gentool works (GENTOOL_DATA, GENTOOL_RUNS, GENTOOL_SWEEPS, XDG_CACHE_HOME, HOME) are read
with `folder`; GENTOOL_AUTO_PRECISION, GENTOOL_EXTRACTOR_RECIPE and torchrun's (WORLD_SIZE, RANK, MASTER_ADDR...)
by their modules, through `text`. The display's (COLUMNS, GENTOOL_DEBUG) cannot make a command's work wrong, so a
bad value of theirs is a warning and ignored (`columns`; gentool.cli.options.debugging).

Imports nothing heavy: the CLI reads COLUMNS before any command runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gentool.checks import MAX_TEXT
from gentool.errors import bad_value, clipped

NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS and Windows file systems alike)
MAX_COLUMNS = 100_000  # gentool's own width when the output is not a terminal (lines are never wrapped)
TABLE_WIDTH = 120  # a table's width when the output is not a terminal: there is no width to fit
RUNS_ENV = "GENTOOL_RUNS"  # the folder default run directories go in (else runs/)


def text(name: str, accepted: str, environ=None) -> str | None:
    """$`name`, or None when it is unset or empty; a value too long for any setting, or holding bytes that are not
    UTF-8 (they could not be written to a record or a message), is refused naming the variable."""
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        return None
    if len(value) > MAX_TEXT:
        raise bad_value(name, clipped(value), f"{accepted}, at most {MAX_TEXT:,} characters (it has "
                                               f"{len(value):,})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # os.environ keeps undecodable bytes as lone surrogates
        raise bad_value(name, value, f"{accepted}, as UTF-8 text") from None
    return value


def folder(name: str, what: str) -> Path | None:
    """$`name` as a folder path (`~` expanded), or None when unset or empty; refused, naming the variable, when no
    file system could hold it: longer than a path may be, or with a name in it longer than NAME_MAX bytes."""
    accepted = f"{what}: a folder path whose names have at most {NAME_MAX} bytes each"
    value = text(name, accepted)
    if value is None:
        return None
    if not value.strip():
        raise bad_value(name, value, accepted)
    path = Path(value).expanduser()
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > NAME_MAX:
        raise bad_value(name, clipped(value), f"{accepted} (one has {longest:,})")
    return path


def runs_folder() -> Path | None:
    """$GENTOOL_RUNS, checked (`home_folder`): read when a run starts with no --out, and by `train`'s option checks."""
    return home_folder(RUNS_ENV, "the folder new runs go in")


def home_folder(name: str, what: str) -> Path | None:
    """$`name` checked as `folder` does, and refused, naming the variable, when the nearest part of it that exists is
    not a folder (a file or a named pipe): the run or sweep folder made inside it would be refused as --out's, an
    option the user never gave."""
    path = folder(name, what)
    there = next((p for p in (path, *path.parents) if os.path.lexists(p)), None) if path else None
    if there is not None and not os.path.isdir(there):
        inside = "" if there == path else f" ({there} is not a folder)"
        raise bad_value(name, clipped(str(path)), f"{what}: a folder, or a path where one can be made{inside}")
    return path


def omp_threads(environ=None) -> str | None:
    """A problem with $OMP_NUM_THREADS, as a warning's text; None when it is unset or OpenMP's own syntax (threads
    per nesting level, comma-separated, each from 1 to 4,096, in ASCII digits). gentool does not read it, but the
    OpenMP runtime under torch does, and drops a value it cannot read without a word: a batch script's typo then
    ran on every core. Warned about, not refused: it is not gentool's variable, and `--threads N` overrides it."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS")
    if value is None or all(re.fullmatch(r"[0-9]{1,4}", v) and 1 <= int(v) <= 4096 for v in value.split(",")):
        return None
    return (f"OMP_NUM_THREADS: got {clipped(value)!r}; expected a number of threads from 1 to 4,096 (or OpenMP's "
            f"comma-separated list) written with the digits 0-9; the OpenMP runtime ignores it (--threads N sets "
            f"gentool's threads)")


def columns(environ=None) -> str | None:
    """A problem with $COLUMNS (rich, which draws gentool's tables, reads it: with int(), so '١٢' would be 12
    columns), as a warning's text; None when it is unset or a width from 1 to MAX_COLUMNS in ASCII digits."""
    value = (os.environ if environ is None else environ).get("COLUMNS")
    if value is None or (re.fullmatch(r"[0-9]{1,6}", value) and 1 <= int(value) <= MAX_COLUMNS):
        return None
    return (f"COLUMNS: got {clipped(value)!r}; expected a number of columns from 1 to {MAX_COLUMNS:,} written with the "
            f"digits 0-9 (ignored)")
