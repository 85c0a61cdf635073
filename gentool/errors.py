"""Domain errors. The CLI turns these into one red line and an exit code; library code only raises."""


class GentoolError(Exception):
    """A failure the user can act on; `exit_code` 1 means a runtime failure."""

    exit_code = 1


class UsageError(GentoolError):
    """Bad input from the user (exit code 2, like a command-line usage error)."""

    exit_code = 2


def bad_value(name: str, value, accepted: str) -> UsageError:
    """Build the one-line error for an argument: its name, the value given and what is accepted (kept as
    attributes, so a caller that read the value from a file can name the file's field instead)."""
    exc = UsageError(f"{name}: got {value!r}; expected {accepted}")
    exc.arg, exc.value, exc.accepted = name, value, accepted
    return exc


def did_you_mean(value, choices) -> str:
    """" (did you mean X?)" for a mistyped name close to one of `choices`, else ""."""
    import difflib

    close = difflib.get_close_matches(str(value).lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
