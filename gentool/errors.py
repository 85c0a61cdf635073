"""Domain errors. The CLI turns these into one red line and an exit code; library code only raises."""

from __future__ import annotations

import re


class GentoolError(Exception):
    """A failure the user can act on; `exit_code` 1 means a runtime failure."""

    exit_code = 1


class UsageError(GentoolError):
    """Bad input from the user (exit code 2, like a command-line usage error)."""

    exit_code = 2


# What a message must not carry raw: control characters (NUL, ESC starting a terminal sequence, newlines breaking
# the one line), the Unicode marks that reorder or break a line (bidi overrides and isolates, line and paragraph
# separators) and lone surrogates (bytes of a path or variable that are not UTF-8, which stderr could not encode).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


MAX_SHOWN = 1000  # the longest value a message shows whole


def clipped(text: str) -> str:
    """A setting's text as a message quotes it: whole up to 60 characters, else its first 40 and an ellipsis."""
    return text if len(text) <= 60 else text[:40] + "…"


def printable(text: str) -> str:
    """`text` (a name, path or value the user gave, or a file held) safe to print in a one-line message: each
    character in _UNSAFE written as its escape (\\x00, \\x1b, \\u202e), everything else as is."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", str(text))


def listed(items, most: int = 5) -> str:
    """Names or values for a message in words, not as a Python list, set or tuple ("['a', 'b']"): 'a, b and c';
    beyond `most`, the first ones and how many more."""
    items = [printable(i) for i in items]
    if len(items) > most:
        return f"{', '.join(items[:most])} and {len(items) - most:,} more"
    return " and ".join(filter(None, [", ".join(items[:-1]), *items[-1:]]))


def dims(shape) -> str:
    """A tensor's or array's shape for a message: '1×28×28' ('()' for a scalar), not a tuple or torch.Size."""
    shape = tuple(shape)
    return "×".join(map(str, shape)) if shape else "a scalar"


def settings_text(settings: dict) -> str:
    """Settings for a message as the command line names them: 'steps 16, solver euler' (not a Python dict)."""
    return ", ".join(f"{printable(k)} {v:g}" if isinstance(v, float) else f"{printable(k)} {printable(v)}"
                     for k, v in settings.items()) or "none"


def bad_value(name: str, value, accepted: str) -> UsageError:
    """Build the one-line error for an argument: its name, the value given and what is accepted (kept as
    attributes, so a caller that read the value from a file can name the file's field instead). A name holding
    the user's text (a --param NAME, a file's key) is printed with its control characters escaped, as the value
    is by repr."""
    shown = repr(value)
    if len(shown) > MAX_SHOWN:  # a hostile value (a variable of megabytes) is not copied whole into a message
        shown = f"{shown[:MAX_SHOWN // 2]}… ({len(shown):,} characters)"
    exc = UsageError(f"{printable(name)}: got {shown}; expected {accepted}")
    exc.arg, exc.value, exc.accepted = name, value, accepted
    return exc


def did_you_mean(value, choices) -> str:
    """" (did you mean X?)" for a mistyped name close to one of `choices`, else ""."""
    import difflib

    close = difflib.get_close_matches(str(value).lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# What a name in a ConfigError belongs to: the model's config, its sampler, or the training options (TrainOptions'
# fields, such as image_size: what a message may advise).
CONFIG, SAMPLER, OPTION = "config", "sampler", "option"
PARAM = "param"  # an entry of the params table (--param NAME=VALUE) as given, whatever field it names
GEOMETRY = "geometry"  # the config's image geometry (channels, image_height, image_width, num_classes) as a whole


class ConfigError(UsageError):
    """A model refused one of its settings: `field` names it as the model knows it (a config field such as `lr`, a
    sampler setting such as `steps`, or GEOMETRY, the data's image geometry), in `section` CONFIG or SAMPLER. The
    message begins with that name, so a Python user reads `lr: got -1.0; expected a number above 0 up to 1,000,000`. The
    command line names the option that sets it instead (`message(name_of)`, from gentool.cli.options), and a
    checkpoint reader the file's field. `listed` are more names the message ends with (the settings there are),
    each a name in `section` or a (section, name) pair."""

    # how the command line names a field whose value a --config file gave ("params.kl_weight in cfg.toml"): set
    # by gentool.cli.options, which knows what the file set; a name it returns None for is named as an option
    file_name = None

    def __init__(self, field: str, detail: str, *, section: str = CONFIG, listed: tuple = (), value=None,
                 accepted: str | None = None):
        self.field, self.detail, self.section = field, detail, section
        self.listed = tuple(n if isinstance(n, tuple) else (section, n) for n in listed)
        self.value, self.accepted = value, accepted
        super().__init__(self.message())

    def message(self, name_of=None) -> str:
        """The one-line message with every name written by `name_of(section, name)` (default: the name itself)."""
        name = name_of or (lambda section, field: f"--param {field}" if section == PARAM else field)
        listed = ", ".join(name(*n) for n in self.listed)
        return f"{name(self.section, self.field)}: {self.detail}{listed}"


def bad_setting(field: str, value, accepted: str, section: str = CONFIG) -> ConfigError:
    """A model setting's value refused: `FIELD: got VALUE; expected ACCEPTED`, named by the field."""
    return ConfigError(field, f"got {value!r}; expected {accepted}", section=section, value=value, accepted=accepted)
