"""Issue 26, class 5: every option of every command, given hostile values of its type (negative, huge, NaN, empty,
unicode digits, NUL), is refused in one line naming it with exit code 2, or, where the value is one the option
takes, reaches the point where the command stops before any work: never a traceback. The cases are generated from
the commands themselves (built from the options dataclasses), so a new option is covered without editing this file.
"""

from __future__ import annotations

import typing

import pytest
import typer
import typer.testing
from typer.main import get_command
from typer.testing import CliRunner

from gentool.cli.app import ClickUsageError, app, usage_message

MISSING = "no-such-file.safetensors"
# Each command's arguments, chosen so that the command stops before any work: --print-config exits after checking
# the options, a missing checkpoint or folder is refused once the options are checked. REACHED: what the command
# says (exit code, a word of its one line) when it got there, i.e. every option value was accepted.
STOPS = {
    "train": (["vae", "--data", "mnist-sample", "--print-config"], (0, "")),
    "sweep": (["vae", "--data", "mnist-sample", "--latent-dim", "2,4", "--print-config"], (0, "")),
    "sample": ([MISSING], (2, MISSING)),
    "evaluate": ([MISSING, "--data", "mnist-sample"], (2, MISSING)),
    "summary": ([MISSING], (2, MISSING)),
    "report": (["no-such-folder"], (2, "no-such-folder")),
    "models": ([], (0, "")),
}
HOSTILE = {  # by the option's type: values no option of that type may take ...
    "integer": ["-1", "99999999999999999999999", "nan", "", "³", "1\0"],
    "float": ["-1", "1e400", "nan", "inf", "", "³", "1\0"],
    "text": ["", " ", "a\0b", "x" * 5000],
}
MAYBE = {"text": ["³", "-1", "..."]}  # ... and values some options of that type take


def _kind(param) -> str:
    hint = param.type_descriptor.annotation
    parts = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return {int: "integer", float: "float"}.get(parts[0], "text")


GROUP = get_command(app)  # built once: building it is most of an in-process invocation's time


def _cases():
    for name, command in GROUP.commands.items():
        for param in command.params:
            if not getattr(param, "is_flag", False) and param.name not in ("help", "print_config"):
                yield pytest.param(name, param, id=f"{name}-{param.name}")


CASES = list(_cases())


def _args(command: str, param, value: str) -> list[str]:
    args, _ = STOPS[command]
    if param.param_type_name == "argument":  # the value takes the argument's place
        args = list(args)
        args[0] = value  # every command has one argument, given first
        return [command, *args]
    return [command, *args, param.opts[0], value]


def _names(param) -> list[str]:
    return [*param.opts, param.name.upper(), (param.metavar or "").upper()] if param.param_type_name == "argument" \
        else list(param.opts)


def run(args: list[str]) -> tuple[int, list[str]]:
    """Exit code and stderr lines of `gentool ARGS`, in this process, as gentool.cli.app.main reports them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _: GROUP)
        result = CliRunner().invoke(app, args, standalone_mode=False)
    exc = result.exception
    if isinstance(exc, ClickUsageError):  # what main() prints for a value click itself refused
        return 2, [usage_message(exc, args)]
    assert exc is None or isinstance(exc, (SystemExit, typer.Exit)), f"traceback: {exc!r}"
    code = result.return_value if isinstance(result.return_value, int) else result.exit_code
    return code, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("command, param", CASES)
def test_hostile_values(command, param):
    stop_code, word = STOPS[command][1]
    kind = _kind(param)
    for value in HOSTILE[kind] + MAYBE.get(kind, []):
        code, lines = run(_args(command, param, value))
        refused = code == 2 and len(lines) == 1 and any(n and n in lines[0] for n in _names(param))
        reached = code == stop_code and (not word or (len(lines) == 1 and word in lines[0]))
        if value in HOSTILE[kind]:
            assert refused, (value, code, lines[-5:])
        else:  # taken, or refused in one line (a model name that does not exist, a run folder that is not there)
            assert reached or (code == 2 and len(lines) == 1), (value, code, lines[-5:])


def test_every_command_and_kind_is_covered():
    """The generated cases reach every command that takes a value, and each kind of value."""
    commands = {case.values[0] for case in CASES}
    assert commands == set(STOPS) - {"models"}
    kinds = {_kind(case.values[1]) for case in CASES}
    assert {"integer", "float", "text"} <= kinds
