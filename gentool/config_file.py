"""`--config FILE` and `--print-config`: a command's options dataclass filled from a TOML file (or, for `train`, a
run's own config.json) and written back as TOML. Every key is checked against the dataclass's fields and their
types before anything is used: the file may come from anywhere.

Reading uses the standard library's tomllib. Writing uses tomli-w (tomllib's writing counterpart, by the same
author), which quotes and escapes strings and keys correctly; the only thing added here is the header comment.

Imports nothing heavy: `--help` and `--print-config` stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from pathlib import Path

from gentool import schema
from gentool.checks import check_value
from gentool.errors import GEOMETRY, OPTION, PARAM, SAMPLER, UsageError
from gentool.models.fields import GEOMETRY_FIELDS
from gentool.fileio import cause, read_bounded

MAX_BYTES = 1 << 20  # a settings file is a few hundred bytes; refuse to parse anything near this
MAX_DEPTH = 16  # a settings file's values nest two or three levels ([params] holds lists)
# A dotted key (or [table] name) of more than MAX_DEPTH parts. tomllib's time and memory grow with the square of a
# key's parts (30,000 parts took 5 GB), so such a key is refused before parsing. Keys only: strings and comments
# are taken out first (`_keys_only`); then a key starts a line, follows [ or [[ (a table's name), or follows { or ,
# (in an inline table), and never spans lines. The dots of a value ("a.b.c", 1.5) are not a key's.
_PART = r"(?:[A-Za-z0-9_-]++|\x00)"  # a bare part, or a quoted one (each string is one NUL once taken out)
DOTTED = re.compile(rf"(?:^|[\[{{,])[ \t]*{_PART}(?:[ \t]*\.[ \t]*{_PART}){{{MAX_DEPTH},}}", re.MULTILINE)
_OPENS = re.compile(r"\"\"\"|'''|[\"'#]")  # what starts a string or a comment


def too_dotted(text: str) -> bool:
    """Whether a key of the TOML `text` has more than MAX_DEPTH dotted parts."""
    return DOTTED.search(_keys_only(text)) is not None


def _keys_only(text: str) -> str:
    """`text` with each string replaced by one NUL (a quoted key is then one part) and each comment removed, in one
    pass (a regular expression for strings would backtrack over an unterminated one, quadratically)."""
    out, at = [], 0
    text = text.replace("\0", "")  # TOML has no raw NUL (tomllib refuses it after this check)
    while (found := _OPENS.search(text, at)) is not None:
        out.append(text[at:found.start()])
        if found[0] == "#":
            at = _line_end(text, found.end())
        else:
            out.append("\0")
            at = _string_end(text, found.end(), found[0])
    return "".join(out) + text[at:]


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def _string_end(text: str, start: int, quote: str) -> int:
    """Where the string `quote` opened just before `start` ends: at its closing quote (not one after an odd number
    of backslashes in a basic string; a multi-line string takes up to two more quotes), else at its line's end (or
    the text's, multi-line): tomllib refuses what is not closed."""
    limit = len(text) if len(quote) == 3 else _line_end(text, start)
    while (end := text.find(quote, start, limit)) >= 0:
        backslashes = end - start - len(text[start:end].rstrip("\\"))
        if quote[0] == "'" or backslashes % 2 == 0:
            end += len(quote)
            extra = 0
            while len(quote) == 3 and extra < 2 and text.startswith(quote[0], end):
                end, extra = end + 1, extra + 1
            return end
        start = end + 1
    return limit


ARG = "--config"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read(path: str, cls) -> dict:
    """The field values set by the file at `path` (TOML, or a run's config.json when `cls` can read one), checked
    against `cls`'s fields and types; a one-line UsageError naming the file and key otherwise."""
    where = f"{ARG} {path}"
    text = _read_text(Path(path).expanduser(), where)
    if Path(path).suffix.lower() == ".json":
        reader = getattr(cls, "from_run_record", None)
        if reader is None:
            raise UsageError(f"{where}: a .json file is accepted only by `gentool train` (a run's config.json); "
                             f"expected a .toml file")
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None
        except RecursionError:  # the parser recurses once per level
            raise UsageError(f"{where}: nested too deeply; expected a run's config.json") from None
        if not isinstance(record, dict):
            raise UsageError(f"{where}: expected a run's config.json (a JSON object)")
        values = reader(record, where)
    else:
        if too_dotted(text):
            raise UsageError(f"{where}: a key of more than {MAX_DEPTH} dotted parts; a settings file holds values "
                             f"and one [params] table")
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{where}: not valid TOML ({exc})") from None
        except RecursionError:  # the parser recurses once per level of nested arrays or inline tables
            raise UsageError(f"{where}: nested too deeply; a settings file holds values and one [params] "
                             f"table") from None
    if schema.depth(values) > MAX_DEPTH:  # json.dumps and the checks below recurse once per level
        raise UsageError(f"{where}: nested more than {MAX_DEPTH} levels deep; a settings file holds values and one "
                         f"[params] table")
    return check(values, cls, where)


def _read_text(path: Path, where: str) -> str:
    if not path.exists():
        raise UsageError(f"{where}: no such file" + (f" (a symbolic link to {os.readlink(path)}, which does not "
                                                     f"exist)" if path.is_symlink() else ""))
    try:
        data = read_bounded(path, MAX_BYTES)
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text; expected a TOML file") from None
    except OSError as exc:  # a folder, a pipe or device, too large, unreadable: said which
        raise UsageError(f"{where}: cannot be read ({cause(exc)})") from None


def check(values: dict, cls, where: str) -> dict:
    """`values` with every key a settable field of `cls` and every value of its field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key.replace("-", "_"), fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(fields)}")
        if not accepts(value, hints[key]):
            path, bad, expected = refusal(value, hints[key], key)
            raise UsageError(f"{where}: {path} = {_show(bad)}; expected {expected}")
        try:  # what the option itself accepts (a NUL in a path, a negative seed...)
            check_value(key, value, fields[key].metadata.get("check"))
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.arg} = {_show(exc.value)}; expected {exc.accepted}") from None
        if isinstance(value, dict):
            bad = next((k for k in value if not NAME.fullmatch(k)), None)
            if bad is not None:
                raise UsageError(f"{where}: {key}.{bad}: not a setting name; expected letters, digits and _")
    return dict(values)


def refusal(value, hint, key: str) -> tuple[str, object, str]:
    """Where a value `hint` refuses is wrong: the key path of the innermost value at fault (`params.beta1`,
    `lr[1]`), that value, and what is accepted there. A table or list of the right shape is looked into, so a
    file's error names the one setting to fix, not the whole table."""
    for kind in _parts(hint):
        origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
        inner = (args[-1] if args else typing.Any)
        if origin is dict and isinstance(value, dict):
            items = [(f"{key}.{_key(k)}", v) for k, v in value.items()]
        elif origin is list and isinstance(value, list) and value:
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        wrong = next(((path, v) for path, v in items if not accepts(v, inner)), None)
        if wrong is not None:
            return refusal(wrong[1], inner, wrong[0])
    return key, value, describe(hint)


def _key(name: str) -> str:
    """A table's key as TOML writes it: bare when it can be, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _show(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parts(hint) -> tuple:
    """The types a (possibly optional) hint allows, None excluded."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(hint) if a is not type(None))
    return (hint,)


def _scalar(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    return False


SCALARS = (int, float, bool, str)


def accepts(value, hint) -> bool:
    """Whether `value` (as TOML or JSON gives it) is of the field type `hint`."""
    for kind in _parts(hint):
        origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
        if origin is list:
            if isinstance(value, list) and value and all(accepts(v, args[0] if args else typing.Any) for v in value):
                return True
        elif origin is dict:
            if isinstance(value, dict) and all(accepts(v, args[1] if args else typing.Any) for v in value.values()):
                return True
        elif kind is typing.Any:
            if any(_scalar(value, scalar) for scalar in SCALARS):
                return True
        elif _scalar(value, kind):
            return True
    return False


def describe(hint, plural: bool = False) -> str:
    """What a field of type `hint` accepts, in words."""
    words = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "true/false"),
             str: ("a string", "strings"), typing.Any: ("a number, string or true/false", "values")}
    out = []
    for kind in _parts(hint):
        origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
        if origin is list:
            out.append(f"a non-empty list of {describe(args[0] if args else typing.Any, plural=True)}")
        elif origin is dict:
            out.append(f"a table of NAME = {describe(args[1] if args else typing.Any)}")
        else:
            out.append(words.get(kind, (str(kind), str(kind)))[plural])
    return " or ".join(out)


def merge(from_file: dict, given: dict) -> dict:
    """File values overridden by the command line's; tables (--param) are merged name by name."""
    merged = dict(from_file)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def unmerged(from_file: dict, given: dict) -> dict:
    """The file's values that the command line did not override (`merge`'s other half): what the file still sets."""
    kept = {}
    for key, value in from_file.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in (given.get(key) or {})}
        elif key in given:
            continue
        kept[key] = value
    return kept


def file_names(path: str, values: dict):
    """name_of(section, name) for a model's ConfigError (gentool.errors) about a setting the --config file at `path`
    gave (`values`: what it set, `unmerged`): its key there, "params.kl_weight in cfg.toml"; None for a setting the
    file did not give (the command line's option names it)."""
    def name_of(section: str, name: str) -> str | None:
        if section == SAMPLER:
            keys = ["label"] if name == "labels" else [name, f"sampler.{name}"]
        elif section == PARAM:
            keys = [f"params.{name}"]
        elif section != OPTION and (name == GEOMETRY or name in GEOMETRY_FIELDS):
            keys = ["data"]  # the data's image geometry
        else:
            keys = [name, f"params.{name}"]
        return next((f"{key} in {path}" for key in keys if _holds(values, key)), None)
    return name_of


def _holds(values: dict, key: str) -> bool:
    table, _, name = key.rpartition(".")
    found = values.get(table) if table else values
    return isinstance(found, dict) and found.get(name) is not None


def to_toml(values: dict, header: str) -> str:
    """`values` as TOML (keys with None or an empty table left out: not given) under a comment header."""
    import tomli_w

    kept = {k: v for k, v in values.items() if v is not None and v != {}}
    scalars = {k: v for k, v in kept.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in kept.items() if isinstance(v, dict)}  # after the plain keys, as TOML requires
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + tomli_w.dumps({**scalars, **tables})
