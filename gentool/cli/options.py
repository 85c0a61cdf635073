"""Option types shared by several commands, and the error boundary every command goes through."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import signal
import sys
import typing
from typing import Annotated, Optional

import typer

from gentool.errors import GentoolError
from gentool.train_options import FIELDS, TrainOptions, flag

_HINTS = typing.get_type_hints(TrainOptions)

DEBUG_ENV = "GENTOOL_DEBUG"



def field_option(f: dataclasses.Field, hint):
    """The command-line parameter declared by an options dataclass field (see gentool.train_options.option): its
    flags or argument, metavar, help text and the default a new run uses."""
    meta = f.metadata
    kind = meta["cli_type"] or hint
    if f.default is None and type(None) not in typing.get_args(kind):
        kind = Optional[kind]
    shown = meta["fallback"] if meta["fallback"] is not None else f.default
    help = meta["help"] + ("" if shown is None or shown is False else f" [default: {shown}]")
    if meta["argument"]:
        return Annotated[kind, typer.Argument(metavar=meta["metavar"], help=help, show_default=False)]
    decls = meta["flags"] or ("--" + f.name.replace("_", "-"),)
    return Annotated[kind, typer.Option(*decls, metavar=meta["metavar"], help=help, show_default=False)]


def train_option(name: str):
    """A train option as TrainOptions declares it, for commands that pass it on to training (sweep)."""
    return field_option(FIELDS[name], _HINTS[name])


def options_command(cls):
    """Decorator: the command's options are the fields of the keyword-only dataclass `cls`, where each is declared
    once, followed by the function's own parameters; the function receives a `cls` instance as its first argument."""
    hints = typing.get_type_hints(cls)

    def decorate(func):
        own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
        declared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                      annotation=field_option(f, hints[f.name])) for f in dataclasses.fields(cls)]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in declared + own]

        @functools.wraps(func)
        def command(**kwargs):
            values = {}
            for f in dataclasses.fields(cls):
                value = kwargs.pop(f.name)
                values[f.name] = f.metadata["convert"](value) if f.metadata["convert"] else value
            return func(cls(**values), **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


# Options whose value may be left out, and the value they then take (`--tensorboard` alone is "auto"). Typer's
# vendored click cannot declare such an option, so gentool.cli.app.Command fills the value in before parsing.
BARE_VALUES = {flag(name): f.metadata["bare"] for name, f in FIELDS.items() if f.metadata["bare"] is not None}


def fill_bare_values(args: list[str], bare: dict[str, str]) -> list[str]:
    """`--tensorboard` followed by nothing or by another option becomes `--tensorboard=auto` (a value given with
    it, `--tensorboard DIR` or `--tensorboard=DIR`, stays); nothing after a `--` is touched."""
    out = list(args)
    for i, token in enumerate(out):
        if token == "--":
            break
        if token in bare and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = f"{token}={bare[token]}"
    return out


# Options shared with training (sweep passes them on to each trial's train), declared in TrainOptions:
DataOpt = train_option("data")
DataDirOpt = train_option("data_dir")
BatchSizeOpt = train_option("batch_size")
LrOpt = train_option("lr")
LimitOpt = train_option("limit")
ImageSizeOpt = train_option("image_size")
CheckpointEveryOpt = train_option("checkpoint_every")
SampleEveryOpt = train_option("sample_every")
SkipNonfiniteOpt = train_option("skip_nonfinite")
EvalEveryOpt = train_option("eval_every")
StopOnDivergenceOpt = train_option("stop_on_divergence")
# Options of several commands:
DeviceOpt = Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda|mps", help="auto (cuda, then mps, then cpu), cpu, cuda or mps. [default: auto]", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", metavar="S", help="Random seed; the same seed gives the same result on the CPU. [default: 0]", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
LatentOpt = Annotated[Optional[int], typer.Option("--latent-dim", metavar="D", help="Latent size (default: the study's, per model and data).")]
WidthOpt = Annotated[Optional[float], typer.Option("--width", metavar="W", help="Multiplier for every hidden width/channel count (1 = the study's network).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output instead of refusing.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
WeightsOpt = Annotated[str, typer.Option("--weights", metavar="auto|ema|raw", help="auto (the EMA weights when the run kept them, else raw), ema or raw. [default: auto]", show_default=False)]
PrecisionOpt = Annotated[str, typer.Option("--precision", metavar="auto|fp32|bf16|fp16", help="auto (bf16 where this machine runs it measurably faster, else fp32), fp32 (safe everywhere), bf16 (autocast; CPUs with AVX512-BF16/AMX, recent GPUs) or fp16 (CUDA/MPS). [default: auto]", show_default=False)]
ClassOpt = Annotated[Optional[str], typer.Option("--class", metavar="K", help="Draw every sample of this class (index or class name) from a class-conditional model.")]
# The sampler's settings, for families that declare them (flow, ddpm; `gentool models --check` lists each family's),
# declared once with train's options.
StepsOpt = train_option("steps")
SolverOpt = train_option("solver")
GuidanceOpt = train_option("guidance")


def sampler_settings(steps: int | None, solver: str | None, guidance: float | None) -> dict:
    """The sampler settings given on the command line (the family checks them and fills in its defaults)."""
    given = {"steps": steps, "solver": solver, "guidance": guidance}
    return {k: v for k, v in given.items() if v is not None}


UNWRAPPED = 100_000  # the width of a console that is not a terminal: its lines are never wrapped


def _console(stderr: bool):
    from rich.console import Console

    console = Console(stderr=stderr)
    # rich wraps at 80 columns when the stream is a file or pipe, which splits paths and breaks grep in scripts
    return console if console.is_terminal else Console(stderr=stderr, width=UNWRAPPED)


def out_console():
    """The console for results (stdout); never wrapped when stdout is not a terminal."""
    return _console(stderr=False)


def err_console():
    """The console for errors and warnings (stderr); never wrapped when stderr is not a terminal."""
    return _console(stderr=True)


def print_json(obj) -> None:
    """One JSON object on stdout (plain, so scripts can parse it)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def debugging() -> bool:
    """Whether GENTOOL_DEBUG asks for tracebacks: only a true value (1, true, yes, on) does; 0, false, no, off or
    unset do not, and anything else is a warning."""
    value = os.environ.get(DEBUG_ENV, "").strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        err_console().print(f"[yellow]warning:[/] {DEBUG_ENV}: got {value!r}; expected 1/true/yes/on or "
                            f"0/false/no/off (tracebacks stay off)", highlight=False, soft_wrap=True)
    return value in TRUE_WORDS


STOPPED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGUSR1}


def escape(text: str) -> str:
    """`text` shown as is by rich (a message naming `gentool[tensorboard]` or a path with brackets is not markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def cli_errors(func):
    """Turn domain errors into one red line and their exit code (a traceback only with GENTOOL_DEBUG=1), and Ctrl-C
    into "interrupted" and exit code 130. An OS error no check caught first (a file that vanished, a full or
    read-only disk) is one line too, naming the file."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (GentoolError, OSError) as exc:
            if debugging():
                raise
            code = exc.exit_code if isinstance(exc, GentoolError) else 1
            # A run stopped by a signal after saving (130: SIGINT, 143: SIGTERM, 138: SIGUSR1) is not a failure.
            label = "[bold yellow]stopped:[/]" if code in STOPPED_CODES else "[bold red]error:[/]"
            err_console().print(f"{label} {escape(_message(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:  # Ctrl-C before anything needed saving (Typer alone would exit 130 silently)
            err_console().print("[bold red]interrupted[/]", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _message(exc: BaseException) -> str:
    if isinstance(exc, GentoolError):
        return str(exc)
    where = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f)
    return f"{where + ': ' if where else ''}{exc.strerror or exc}"
