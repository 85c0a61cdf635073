"""The `gentool` Typer app and its entry point. Importing this module (and every command module) loads no torch,
scipy or heavy gentool module: `gentool --help` and `gentool CMD --help` stay fast."""

from __future__ import annotations

import os
import re
import signal
import sys
import warnings
from typing import Annotated

import typer
from typer.core import TyperCommand

from gentool import __version__
from gentool import stops
from gentool.cli import (STOPS, _leave, distill_cmd, doctor_cmd, evaluate_cmd, export_cmd, models_cmd, on_sigint,
                         prepare_cmd, report_cmd, sample_cmd, summary_cmd, sweep_cmd, train_cmd)
from gentool.cli.options import BARE_VALUES, err_console, escape, fill_bare_values, stopped_line

DESCRIPTION = """Train image generative models (VAE, GAN, WGAN, their variants and plugins) on MNIST, CIFAR-10 or a
folder of images, then draw, score and compare what they learned. `gentool train` trains a model or continues a
run; `distill` turns a flow or ddpm into a few-step student; `sample` draws images from a checkpoint; `evaluate`
scores images against real data (FID, KID, modes...), and `prepare` builds what it needs ahead of time; `sweep`
trains a grid of runs; `summary` shows a model's networks or compares runs; `report` writes one HTML page of a run,
a sweep or a folder of runs; `export` writes a checkpoint's sampler as an ONNX or TorchScript file; `models` lists
the models; `doctor` checks the machine."""


SAMPLER_COMMANDS = ("train", "sample", "evaluate")  # whose --help lists each model's sampler settings


class Command(TyperCommand):
    """Click's plain help with types as words: an option's value is named by its metavar or its type in capitals
    (INTEGER, NUMBER, TEXT; Typer writes `<int>`), and an argument by its name in capitals alone."""

    WORDS = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "list[str]": "TEXT", "bool": ""}

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fill_bare_values(args, BARE_VALUES))

    def help_rows(self, ctx) -> tuple[list, list]:
        """The arguments and options as --help lists them: (param, how it is written, its help) each (the reference
        in docs/ is generated from these rows too: docs/gen_reference.py)."""
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append((param, self._argument_name(param), record[1]))
            else:
                opts.append((param, re.sub(r" <([^>]+)>", self._word, record[0]), record[1]))
        return args, opts

    def format_options(self, ctx, formatter) -> None:
        args, opts = ([row[1:] for row in rows] for rows in self.help_rows(ctx))
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def format_epilog(self, ctx, formatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.name not in SAMPLER_COMMANDS:
            return
        from gentool.cli.models_cmd import sampler_line
        from gentool.registry import describe_models

        # read from the models' source when help is asked for: `--help` imports no model (no torch)
        rows = [(m.name, sampler_line(m.sampler_settings)) for m in describe_models(settings=True)
                if m.sampler_settings != ()]
        with formatter.section("Sampler settings, per model (--sampler NAME=VALUE; the others have none)"):
            formatter.write_dl(rows)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = self._argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    @staticmethod
    def _argument_name(param) -> str:
        return (param.metavar or param.name).upper()

    def _word(self, match: re.Match) -> str:
        word = self.WORDS.get(match.group(1), match.group(1).upper())
        return f" {word}" if word else ""


app = typer.Typer(
    name="gentool",
    help=DESCRIPTION,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion SHELL (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: reads well at 80 columns, on a terminal or not
)


def _version(value: bool) -> None:
    if value:
        print(f"gentool {__version__}")
        raise typer.Exit()


@app.callback(help=DESCRIPTION)
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False):
    pass


COMMANDS = {  # name: (function, the line `gentool --help` shows)
    "train": (train_cmd.train, "Train a model on a data set, or continue a run (--resume)."),
    "distill": (distill_cmd.distill, "Turn a trained flow or ddpm into a student drawing in 1-4 network evaluations."),
    "sample": (sample_cmd.sample, "Draw images from a checkpoint: a grid, an .npz, PNGs or a latent walk."),
    "evaluate": (evaluate_cmd.evaluate, "Score images (a checkpoint's, an .npz, PNGs) against real data."),
    "sweep": (sweep_cmd.sweep, "Train a grid of runs (latent sizes, widths, settings) and compare them."),
    "summary": (summary_cmd.summary, "Show a model's networks, or compare the runs in a folder."),
    "models": (models_cmd.models, "List the models (built-ins and plugins) and what each is."),
    "report": (report_cmd.report, "Write one HTML page showing a run, a sweep or a folder of runs."),
    "export": (export_cmd.export, "Write a checkpoint's sampler as an ONNX or TorchScript file, parity-checked."),
    "prepare": (prepare_cmd.prepare, "Build a data set's extractor and real statistics ahead of evaluate (batch jobs)."),
    "doctor": (doctor_cmd.doctor, "Check this machine: versions, device, --precision auto's choice, load."),
}
for _name, (_command, _short) in COMMANDS.items():
    app.command(_name, cls=Command, short_help=_short)(_command)


def _click_class(name: str) -> type:
    # Typer ≥ 0.25 vendors click; take the exception classes from Typer's own so both kinds are caught.
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


ClickUsageError, ClickException = _click_class("UsageError"), _click_class("ClickException")


def _raw_value(argv: list[str], names: list[str]):
    """The value the command line gave the option `names` last: an option given twice takes its last value, as in
    click (and a --config file's value gives way to the command line's), so that is the one a message names."""
    found = None
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token in names and i + 1 < len(argv):
            found = argv[i + 1]
        for name in names:
            if token.startswith(name + "="):
                found = token[len(name) + 1:]
    return found


def usage_message(exc, argv: list[str]) -> str:
    """One line naming the argument, the value given and what is accepted."""
    param = getattr(exc, "param", None)
    names = list(getattr(param, "opts", None) or [])
    given = getattr(exc, "given", None)  # the value gentool's own check refused (gentool.cli.options.checked)
    value = None if not names else given if given is not None else _raw_value(argv, names)
    if type(exc).__name__ == "BadParameter" and value is not None:
        # typer words what its parser refused (gentool.checks.number_parser) as pydantic does: "Value error, ..."
        expected = exc.message.replace("Input should be", "expected", 1).removeprefix("Value error, ")
        return f"{names[0]}: got {value!r}; {expected}"
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
    return exc.format_message() + hint


def _show_warning(message, category, filename, lineno, file=None, line=None):
    err_console().print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def main() -> None:
    """Run the command line: usage errors become one line and exit code 2, Ctrl-C exits 130 without a traceback."""
    warnings.showwarning = _show_warning
    try:
        code = _run()
    except KeyboardInterrupt as exc:  # while a line was being written: its word, written as the signal handler would
        code = 128 + stops.signum_of(exc)
        os.write(2, stops.word(code - 128).encode() + b"\n")
    except BrokenPipeError:  # the reader of stdout went away (`gentool --help | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and no error at interpreter exit
        code = 128 + signal.SIGPIPE
    for signum in STOPS:  # the command is over: a signal during shutdown leaves quietly
        if signal.getsignal(signum) is on_sigint:
            signal.signal(signum, _leave)
    sys.exit(code)


def _run() -> int:
    from gentool.environment import columns, omp_threads

    for problem in (columns(), omp_threads()):  # warned about and left out (see gentool.environment)
        if problem is not None:
            warnings.warn(problem)
    from gentool.installed import hide_unreadable

    hide_unreadable()  # before any command imports torch (which, with triton, reads every package's entry points)
    stops.told()  # a stop an earlier command in this process was told of is not this one's
    try:
        code = app(standalone_mode=False)
    except ClickUsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.ctx.get_help() if exc.ctx else exc.format_message())
            return 0
        err_console().print(f"[bold red]error:[/] {escape(usage_message(exc, sys.argv[1:]))}", highlight=False, soft_wrap=True)
        return 2
    except ClickException as exc:
        err_console().print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Abort as exc:
        return stopped_line(exc.__context__ or KeyboardInterrupt())
    except KeyboardInterrupt as exc:
        return stopped_line(exc)
    if code == 130 and stops.untold() is not None:  # Typer's word for a stop no handling of gentool's saw: none
        return stopped_line(stops.stopped(stops.untold()))
    return code if isinstance(code, int) else 0
