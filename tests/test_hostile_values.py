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
    "export": ([MISSING], (2, MISSING)),
    "distill": ([MISSING], (2, MISSING)),
    "prepare": (["--data", "no-such-folder"], (2, "no-such-folder")),
    "doctor": ([], (0, "")),  # its one option's hostile values are all refused: the doctor itself never runs
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
    assert commands == set(STOPS)  # (models too: its --import-timeout)
    kinds = {_kind(case.values[1]) for case in CASES}
    assert {"integer", "float", "text"} <= kinds


# The instances the issue named, and more of the same class, each refused in one line with exit code 2.

def _one_line(code: int, lines: list[str], *words: str) -> None:
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), (code, lines)


@pytest.mark.parametrize("name, text", [
    ("deep.toml", "x = " + "[" * 50_000 + "]" * 50_000 + "\n"),
    ("inline.toml", "x = " + "{a=" * 50_000 + "1" + "}" * 50_000 + "\n"),
    ("deep.json", '{"model": "vae", "options": ' + "[" * 50_000 + "]" * 50_000 + ', "config": {}}'),
    ("nul.toml", 'model = "vae"\ndata = "mnist-sample"\ndata_dir = "a\\u0000b"\n'),
    ("seed.toml", 'model = "vae"\ndata = "mnist-sample"\nseed = -1\n'),
    ("device.toml", 'model = "vae"\ndata = "mnist-sample"\ndevice = "cpu:abc"\n'),
    ("size.toml", 'model = "vae"\ndata = "mnist-sample"\nimage_size = 5000\n'),  # beyond what a checkpoint records
], ids=lambda v: v if len(v) < 20 else "")
def test_a_hostile_config_file_is_one_line(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    _one_line(*run(["train", "--config", str(tmp_path / name), "--print-config"]), "--config", name)


def test_a_run_whose_config_json_is_nested_too_deeply_is_refused_on_resume(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"options": ' + "[" * 50_000 + "]" * 50_000 + "}")
    _one_line(*run(["train", "--resume", str(tmp_path / "run"), "--epochs", "2"]))


@pytest.mark.parametrize("env, word", [
    ({"WORLD_SIZE": "2"}, "RANK"),  # RANK missing
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
    ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"}, "LOCAL_RANK"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"),  # torchrun's rendezvous variables missing
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "70000"}, "MASTER_PORT"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT"),
    # an address no rank can reach: it waited the whole rendezvous (600 s), then dumped C++ frames
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "256.1.1.1", "MASTER_PORT": "29511"}, "MASTER_ADDR"),
])
def test_torchrun_variables_are_checked_before_any_work(tmp_path, monkeypatch, env, word):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _one_line(*run(["train", "vae", "--data", "mnist-sample", "--out", str(tmp_path / "run")]), word)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, word", [
    (["mlp-wgan-gp", "--batch-size", "1"], "--batch-size"),
    (["mlp-wgan-gp", "--limit", "1"], "--limit"),
])
def test_a_batch_batchnorm_cannot_take_is_refused_before_the_run_starts(tmp_path, args, word):
    _one_line(*run(["train", *args, "--data", "mnist-sample", "--epochs", "1", "--out", str(tmp_path / "run")]), word)
    assert not (tmp_path / "run").exists()


def test_devices_and_class_labels_no_check_looked_at():
    from gentool.device import pick_device
    from gentool.errors import UsageError
    from gentool.sampling import parse_class

    for device in ("mps:0", "cpu:abc", "cuda:x", "mps:1"):
        with pytest.raises(UsageError, match="--device"):
            pick_device(device)
    for label in ("³", "٣", "9" * 5000, "-1", "10"):
        with pytest.raises(UsageError, match="--class"):
            parse_class(label, 10, [])
    assert parse_class("7", 10, []) == 7


@pytest.mark.parametrize("cxx, needle", [("/bin/false", "`/bin/false --version` exits 1"),
                                         ("g++ -O3", "not a program found on PATH")])
def test_a_cxx_that_cannot_compile_is_refused_before_compile_runs(monkeypatch, cxx, needle):
    """CXX=/bin/false with --compile was a torch inductor traceback at the first training step."""
    import torch

    from gentool.device import compiler_problem

    monkeypatch.setenv("CXX", cxx)
    assert needle in compiler_problem(torch.device("cpu"))


def test_a_negative_loss_weight_is_refused_by_every_family_that_has_one():
    """A loss weight below 0 turns its term into one the loss rewards (`kl_weight = -3` trained a VAE to a held-out
    loss of -1,175): every registered family's *_weight setting refuses it, naming the setting."""
    from dataclasses import fields

    from gentool.data import Geometry
    from gentool.errors import GentoolError
    from gentool.registry import list_models

    checked = []
    for entry in list_models():
        for f in fields(entry.cls.config_class):
            if f.name.endswith("_weight") and isinstance(f.default, float):
                with pytest.raises(GentoolError, match=f.name):  # create() validates, as a run's start does
                    entry.cls.config_class.create(Geometry(1, 28, 28, 10), **{f.name: -3.0}).validate()
                checked.append((entry.name, f.name))
    assert {("vae", "kl_weight"), ("cvae", "kl_weight"), ("cgan", "class_weight")} <= set(checked)
