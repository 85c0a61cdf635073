"""The `gentool` Typer app and its entry point."""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

import typer

from gentool import __version__
from gentool.cli import evaluate_cmd, models_cmd, report_cmd, sample_cmd, summary_cmd, sweep_cmd, train_cmd
from gentool.cli.options import err_console

app = typer.Typer(
    name="gentool",
    help="Train, sample and summarize image generative models (VAE, GAN, WGAN and plugins) on MNIST and CIFAR10.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"gentool {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False):
    """Train, sample and summarize image generative models (VAE, GAN, WGAN and plugins) on MNIST and CIFAR10."""


app.command("train")(train_cmd.train)
app.command("sample")(sample_cmd.sample)
app.command("summary")(summary_cmd.summary)
app.command("models")(models_cmd.models)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("sweep")(sweep_cmd.sweep)
app.command("report")(report_cmd.report)


def _click_class(name: str) -> type:
    # Typer ≥ 0.25 vendors click; take the exception classes from Typer's own so both kinds are caught.
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


ClickUsageError, ClickException = _click_class("UsageError"), _click_class("ClickException")


def _raw_value(argv: list[str], names: list[str]):
    for i, token in enumerate(argv):
        if token in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if token.startswith(name + "="):
                return token[len(name) + 1:]
    return None


def usage_message(exc, argv: list[str]) -> str:
    """One line naming the argument, the value given and what is accepted."""
    param = getattr(exc, "param", None)
    names = list(getattr(param, "opts", None) or [])
    value = _raw_value(argv, names) if names else None
    if type(exc).__name__ == "BadParameter" and value is not None:
        expected = exc.message.replace("Input should be", "expected", 1)
        return f"{names[0]}: got {value!r}; {expected}"
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
    return exc.format_message() + hint


def _show_warning(message, category, filename, lineno, file=None, line=None):
    err_console().print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point: usage errors become one line and exit code 2, Ctrl-C exits 130."""
    warnings.showwarning = _show_warning
    try:
        code = app(standalone_mode=False)
    except ClickUsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(0)
        err_console().print(f"[bold red]error:[/] {usage_message(exc, sys.argv[1:])}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ClickException as exc:
        err_console().print(f"[bold red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console().print("[bold red]interrupted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
