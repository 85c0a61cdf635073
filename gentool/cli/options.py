"""Option types shared by several commands, and the error boundary every command goes through."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import re
import signal
import sys
import typing
from typing import Annotated, Optional

import typer

from gentool.checks import check_options, check_value, number_parser
from gentool.errors import OPTION, SAMPLER, ConfigError, GentoolError, UsageError, clipped, printable
from gentool.stops import signum_of, told, word
from gentool.train_options import FIELDS, SAMPLER_SETTINGS, cli_message, field_flag, flag


DEBUG_ENV = "GENTOOL_DEBUG"



def number_kind(hint):
    """int or float when the field type `hint` is a number (or None), else None."""
    kinds = [k for k in typing.get_args(hint) or (hint,) if k is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (int, float) else None


def field_option(f: dataclasses.Field, hint):
    """The command-line parameter declared by an options dataclass field (see gentool.train_options.option): its
    flags or argument, metavar, help text and the default a new run uses. A number is read by gentool's parser
    (ASCII digits only)."""
    meta = f.metadata
    kind = meta["cli_type"] or hint
    number = None if meta["cli_type"] else number_kind(hint)
    extra = {"autocompletion": meta["complete"]} if meta.get("complete") else {}
    if number is not None:
        extra["parser"] = number_parser(number, meta["check"])
    required = f.default is dataclasses.MISSING
    if f.default is None and type(None) not in typing.get_args(kind):
        kind = Optional[kind]
    shown = meta["fallback"] if meta["fallback"] is not None else None if required else f.default
    help = meta["help"] + ("" if shown is None or shown is False else f" [default: {shown}]")
    if meta["argument"]:
        return Annotated[kind, typer.Argument(metavar=meta["metavar"], help=help, show_default=False, **extra)]
    decls = meta["flags"] or ("--" + f.name.replace("_", "-"),)
    return Annotated[kind, typer.Option(*decls, metavar=meta["metavar"], help=help, show_default=False, **extra)]


def checked(check=None):
    """The click callback that applies gentool.checks to an option declared outside an options dataclass (its type's
    checks, then `check`), while the command line is parsed: before any work. (A number option also takes
    `parser=number_parser(...)`: ASCII digits.)"""
    def callback(ctx, param, value):
        name = param.opts[0] if param.opts else param.name
        try:
            check_value(name, value, check)
        except UsageError as exc:
            hint = None if param.opts and param.param_type_name == "option" else param.name.upper()
            error = typer.BadParameter(f"expected {exc.accepted}", param_hint=hint)
            error.given = exc.value  # the value refused, which usage_message names (the last one given)
            raise error from None
        return value
    return callback


ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", metavar="FILE", show_default=False, callback=checked(),
    help="Read the options from this TOML file (keys: the options' names with _, e.g. data_dir; a table [params] "
         "for --param), or from a run's config.json (re-runs that run: give a new --out). Options given on the "
         "command line override the file's.")]
PrintConfigOpt = Annotated[bool, typer.Option(
    "--print-config", help="Print the settings this command would use, as TOML for --config, and exit.")]
# Values typed on the command line override a --config file; defaults do not. (No option reads an environment
# variable through click: GENTOOL_DATA, GENTOOL_RUNS and GENTOOL_SWEEPS are fallbacks for what neither the command
# line, a file nor a resumed run set, applied where the value is used.)
_GIVEN = ("COMMANDLINE",)


def options_command(cls):
    """Decorator: the command's options are the fields of the keyword-only dataclass `cls`, where each is declared
    once, followed by --config/--print-config (when `cls` names its `command`) and the function's own parameters;
    the function receives a `cls` instance as its first argument (--help lists the fields `cls` declares itself
    before those it inherits). Values come from the file given by --config, overridden by those typed on the command
    line."""
    hints = typing.get_type_hints(cls)
    files = hasattr(cls, "command")

    def decorate(func):
        own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
        own_first = sorted(dataclasses.fields(cls), key=lambda f: f.name not in vars(cls).get("__annotations__", {}))
        declared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                      default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
                                      annotation=field_option(f, hints[f.name])) for f in own_first]
        if files:
            declared += [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=ConfigOpt),
                         inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, default=False,
                                           annotation=PrintConfigOpt)]
        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in [context, *declared, *own]]

        @functools.wraps(func)
        def command(ctx, **kwargs):
            config, print_config = (kwargs.pop("config"), kwargs.pop("print_config")) if files else (None, False)
            values, given = {}, {}
            for f in dataclasses.fields(cls):
                value = kwargs.pop(f.name)
                values[f.name] = f.metadata["convert"](value) if f.metadata["convert"] else value
                source = ctx.get_parameter_source(f.name)
                if source is not None and source.name in _GIVEN:
                    given[f.name] = values[f.name]
            names = None  # a setting the --config file gave is named as its key there, not as an option
            if config is not None:
                from gentool import config_file

                from_file = config_file.read(config, cls)
                values.update(config_file.merge(from_file, given))
                names = config_file.file_names(config, config_file.unmerged(from_file, given))
            try:
                opts = cls(**values)
                check_options(opts, _file_flag(names))  # every value, typed or read from the file, before any work
                return print_settings(opts) if print_config else func(opts, **kwargs)
            except ConfigError as exc:  # (also while the options are built and checked, and with --print-config)
                exc.file_name = names
                raise

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.options = cls  # what the reference in docs/ reads each option's resume rule from
        return command

    return decorate


def _file_flag(names):
    """How check_options names a field: its key in the --config file when the file gave its value (`names`:
    gentool.config_file.file_names; "sampler.steps in cfg.toml"), else its option (field_flag)."""
    if names is None:
        return field_flag
    return lambda f: names(SAMPLER if f.name in SAMPLER_SETTINGS else OPTION, f.name) or field_flag(f)


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


def print_settings(opts) -> None:
    """--print-config: the settings as TOML on stdout."""
    from gentool import __version__, config_file

    header = (f"gentool {opts.command} settings (gentool {__version__}); use: gentool {opts.command} --config FILE\n"
              f"options given on the command line override these")
    sys.stdout.write(config_file.to_toml(opts.printable(), header))
    sys.stdout.flush()


# Options of several commands:
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
LatentOpt = Annotated[Optional[int], typer.Option(
    "--latent-dim", metavar="D", help="Latent size (default: the study's, per model and data).",
    parser=number_parser(int, FIELDS["latent_dim"].metadata["check"]),
    callback=checked(FIELDS["latent_dim"].metadata["check"]))]
WidthOpt = Annotated[Optional[float], typer.Option(
    "--width", metavar="W", help="Multiplier for every hidden width/channel count (1 = the study's network).",
    parser=number_parser(float, FIELDS["width"].metadata["check"]),
    callback=checked(FIELDS["width"].metadata["check"]))]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output instead of refusing.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


UNWRAPPED = 100_000  # the width of stderr when it is not a terminal: its one-line messages are never wrapped


def _console(stderr: bool):
    from rich.console import Console

    from gentool.environment import TABLE_WIDTH, columns

    # A COLUMNS rich would misread ('١٢' as 12) or that is no width is left out (app warns about it once)
    width = _terminal_width(stderr) if columns() is not None else None
    console = Console(stderr=stderr, width=width)
    if console.is_terminal:
        return console
    # rich wraps at 80 columns when the stream is a file or pipe, which splits paths and breaks grep in scripts
    return Console(stderr=True, width=UNWRAPPED) if stderr else _file_console(TABLE_WIDTH)


def _file_console(width: int):
    """stdout in a file or pipe: `width` columns, not rich's 80 nor unbounded (the models table was 651 columns
    wide in a file, evaluate's 191); tables fit it, and lines wrap between words (`_wrapped`)."""
    from rich.console import Console
    from rich.text import Text

    class FileConsole(Console):
        def print(self, *objects, sep=" ", end="\n", markup=None, highlight=None, **kwargs):
            if not all(isinstance(x, (str, Text)) for x in objects):  # a table: rich fits it to the width
                return super().print(*objects, sep=sep, end=end, markup=markup, highlight=highlight, **kwargs)
            plain = sep.join(x.plain if isinstance(x, Text) else self.render_str(x, markup=markup).plain
                             for x in objects)  # rich's own wrapping would split a long word (a path) or cut it
            lines = [part for line in plain.split("\n") for part in _wrapped(line, width)]
            return super().print(Text("\n".join(lines)), end=end, soft_wrap=True)

    return FileConsole(width=width)


def _wrapped(line: str, width: int) -> list[str]:
    """`line` wrapped between words within `width` columns, continuation lines indented as the first; a label
    ("checkpoint:") kept with the word after it. A line holding a labelled value wider than that (a long path) is
    left whole: split, its label would stand apart from the path scripts read after it."""
    import textwrap

    bound = re.sub(r"(?<=\S:) (?=\S)", "\u00a0", line)  # textwrap breaks at ASCII whitespace only
    if any(len(word) > width for word in bound.split()):
        return [line]
    indent = line[:len(line) - len(line.lstrip())]
    parts = textwrap.wrap(bound, width, break_long_words=False, break_on_hyphens=False, subsequent_indent=indent)
    return [part.replace("\u00a0", " ") for part in parts] or [""]


def table(*headers: str, title: str):
    """A rich table of these columns for `out_console`: its cells wrap between words and fold a word wider than
    its column (rich's default cuts it to "…", losing a value), so that the table fits the width it is given."""
    from rich.table import Column, Table

    return Table(*(Column(h, overflow="fold") for h in headers), title=title)


def _terminal_width(stderr: bool) -> int:
    try:  # the terminal's own width (shutil.get_terminal_size would read COLUMNS first)
        return os.get_terminal_size((sys.stderr if stderr else sys.stdout).fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def out_console():
    """The console for results (stdout); never wrapped when stdout is not a terminal."""
    return _console(stderr=False)


def err_console():
    """The console for errors and warnings (stderr); never wrapped when stderr is not a terminal."""
    return _console(stderr=True)


_results = None  # where --json writes its result while the command's own stdout goes to stderr (see cli_errors)


def print_json(obj) -> None:
    """One JSON object on stdout (plain, so scripts can parse it)."""
    out = _results or sys.stdout
    out.write(json.dumps(obj, indent=2) + "\n")
    out.flush()


@contextlib.contextmanager
def json_stdout(json_out: bool):
    """With --json, stdout carries the one JSON result alone: anything else written to it while the command runs
    (a plugin's or a hook's print) goes to stderr instead. Not only Python's sys.stdout: descriptor 1 itself is
    pointed at stderr meanwhile, so what bypasses sys.stdout (os.write(1, ...), a C extension's output, a child
    process inheriting it) cannot reach the result either; the result is written to a copy of the original."""
    global _results
    if not json_out:
        yield
        return
    kept = _divert_descriptor()
    _results = os.fdopen(kept, "w", encoding="utf-8") if kept is not None else sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if kept is not None:
            os.dup2(kept, 1)
            _results.close()  # and the copy with it
        _results = None


def _divert_descriptor() -> int | None:
    """Point descriptor 1 at stderr's and return a copy of what it was; None where stdout or stderr has no
    descriptor of its own (an in-process runner's buffers: only sys.stdout is redirected then)."""
    try:
        if sys.stdout.fileno() != 1:
            return None
        err = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    sys.stdout.flush()
    kept = os.dup(1)
    os.dup2(err, 1)
    return kept


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def debugging() -> bool:
    """Whether GENTOOL_DEBUG asks for tracebacks: only a true value (1, true, yes, on) does; 0, false, no, off or
    unset do not, and anything else is a warning."""
    value = os.environ.get(DEBUG_ENV, "").strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        got = escape(f"{DEBUG_ENV}: got {clipped(value)!r}")
        err_console().print(f"[yellow]warning:[/] {got}; expected 1/true/yes/on or 0/false/no/off (tracebacks stay "
                            f"off)", highlight=False, soft_wrap=True)
    return value in TRUE_WORDS


STOPPED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGUSR1, 128 + signal.SIGHUP}


def escape(text) -> str:
    """`text` shown as is by rich (a message naming `gentool[tensorboard]` or a path with brackets is not markup),
    on one line: the control characters a user's path, key or variable may hold are written as escapes (a NUL, a
    terminal sequence, a newline or a bidi override never reaches the terminal raw). Every line gentool prints that
    holds a user's text goes through here."""
    from rich.markup import escape as rich_escape

    return rich_escape(printable(str(text)))


def cli_errors(func):
    """Turn domain errors into one red line and their exit code (a traceback only with GENTOOL_DEBUG=1), and Ctrl-C
    into "interrupted" and exit code 130. An OS error no check caught first (a file that vanished, a full or
    read-only disk) is one line too, naming the file."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if "gentool.registry" in sys.modules:  # what an earlier command in this process used is not this one's
            sys.modules["gentool.registry"].forget_in_use()
        try:
            with json_stdout(kwargs.get("json_out", False)):
                return func(*args, **kwargs)
        except (GentoolError, OSError) as exc:
            if debugging():
                raise
            code = exc.exit_code if isinstance(exc, GentoolError) else 1
            # A run stopped by a signal after saving (130: SIGINT, 143: SIGTERM, 138: SIGUSR1, 129: SIGHUP) is not a failure.
            label = "[bold yellow]stopped:[/]" if code in STOPPED_CODES else "[bold red]error:[/]"
            err_console().print(f"{label} {escape(_message(exc))}", highlight=False, soft_wrap=True)
            told()
            raise typer.Exit(code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM before anything needed saving (Typer: 130, silently)
            raise typer.Exit(stopped_line(exc)) from None
        except Exception as exc:  # a plugin model's own failure (sample, evaluate, export...): one line naming it
            registry = sys.modules.get("gentool.registry")  # not imported: no plugin model ran
            ours = type(exc).__module__.split(".")[0] in ("click", "typer")  # typer.Exit, a usage error: as they are
            failure = registry.plugin_in_use_failure(exc) if registry and not ours else exc
            if failure is exc or debugging():
                raise
            err_console().print(f"[bold red]error:[/] {escape(str(failure))}", highlight=False, soft_wrap=True)
            told()
            raise typer.Exit(1) from None

    return wrapper


def stopped_line(exc: KeyboardInterrupt) -> int:
    """Print the one line for a command stopped before anything needed saving; returns its exit code: 130 for
    Ctrl-C, 143 for SIGTERM, 129 for SIGHUP (gentool.stops)."""
    signum = signum_of(exc)
    err_console().print(f"[bold red]{word(signum)}[/]", highlight=False)
    told()
    return 128 + signum


def _message(exc: BaseException) -> str:
    if isinstance(exc, GentoolError):
        return cli_message(exc)  # a model names its field; the command line names the option that sets it
    where = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f)
    return f"{where + ': ' if where else ''}{exc.strerror or exc}"
