"""gentool models."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Optional

import typer

from gentool.checks import Numbers, number_parser
from gentool.cli import options as o
from gentool.errors import GentoolError, UsageError, listed
from gentool.plugin_exits import exit_now

IMPORT_TIMEOUT = Numbers(0, 3600, open_low=True, what="a number of seconds above 0 up to 3,600")


@o.cli_errors
def models(
    check: Annotated[bool, typer.Option("--check", help="Also import every model and hook plugin, to check that each "
                                        "loads (exit 1 if one does not), and list the sampler settings each model "
                                        "declares as loaded (imports torch: slower).")] = False,
    import_timeout: Annotated[Optional[float], typer.Option(
        "--import-timeout", metavar="SECONDS", parser=number_parser(float, IMPORT_TIMEOUT),
        callback=o.checked(IMPORT_TIMEOUT), help="With --check: how long each plugin may take to import (and each hook "
        "plugin's factory to run); one that takes longer is named and the check stops, exit 1. [default: 60]")] = None,
    json_out: o.JsonOpt = False,
):
    """List the models (built-ins and installed plugins), where each comes from, what it is, and the sampler
    settings each one declares, with their defaults (--sampler NAME=VALUE sets any; read from the models' source,
    or with --check from the models themselves); then the hook plugins, which every `gentool train` runs."""

    from gentool.hooks import describe_hooks, unloaded_plugin_hooks
    from gentool.plugin_check import IMPORT_SECONDS, watchdog
    from gentool.registry import describe_models, unloaded

    if import_timeout is not None and not check:
        raise UsageError("--import-timeout: applies to --check only (gentool models imports no plugin without it)")
    with watchdog(import_timeout or IMPORT_SECONDS, stop_now) if check else contextlib.nullcontext():
        entries = describe_models(load=check, settings=True)
        failed = unloaded(entries) + unloaded_plugin_hooks() if check else []
    hooks = describe_hooks(warn=not check)  # from their source, as the models without --check: loaded or not
    if json_out:
        o.print_json(as_json(entries, hooks, check))
    else:
        show(entries, hooks)
    if failed:  # each was a warning above, saying why; the check as a whole fails
        raise GentoolError(f"{len(failed)} plugin{'s' * (len(failed) > 1)} did not load: {listed(failed)} (see "
                           f"the warning{'s' * (len(failed) > 1)} above): fix or uninstall "
                           f"{'those packages' if len(failed) > 1 else 'that package'}")


def as_json(entries, hooks, check: bool) -> list[dict]:
    """Models, then hook plugins ("kind" tells which), with the same keys: a hook declares no sampler settings."""
    def settings(found):
        return {"sampler_settings": found and list(found)} if check else {}

    return ([{"name": e.name, "kind": "model", "source": e.source, "description": e.description,
              **settings(e.sampler_settings)} for e in entries]
            + [{"name": n, "kind": "hook", "source": s, "description": d, **settings([])} for n, s, d in hooks])


def show(entries, hooks) -> None:
    """The models' table, then the hook plugins' (when any is installed)."""
    table = o.table("model", "source", "description", "sampler settings (sample/evaluate/train)",
                    title="registered models")
    for e in entries:
        table.add_row(e.name, e.source, e.description, sampler_line(e.sampler_settings))
    o.out_console().print(table)
    if hooks:
        table = o.table("hook", "source", "description", title="hook plugins (run by every `gentool train`)")
        for row in hooks:
            table.add_row(*row)
        o.out_console().print(table)


def stop_now(message: str) -> None:
    """A plugin's code did not finish in time (from the watchdog's thread, while the main thread is stuck in that
    code): one line, exit 1, at once. `models --check` writes nothing, so nothing is left half done."""
    o.err_console().print(f"[bold red]error:[/] {o.escape(message)}", highlight=False, soft_wrap=True)
    sys.stderr.flush()
    exit_now(1)


def sampler_line(settings) -> str:
    """A family's sampler settings as the command line gives them, with their defaults and what they accept:
    --steps 16 (1–1000), --solver euler (euler|heun), --sampler temperature=1.0 (0–2); "(gentool models --check)"
    when its source does not say."""
    from gentool.train_options import SAMPLER_SETTINGS

    if settings is None:
        return "(gentool models --check)"
    return ", ".join(_setting(s, s["name"] in SAMPLER_SETTINGS) for s in settings)


def _setting(s: dict, own_flag: bool) -> str:
    shown = f"--{s['name']} {s['default']}" if own_flag else f"--sampler {s['name']}={s['default']}"
    accepts = "|".join(s["choices"]) if "choices" in s else f"{s['low']:g}–{s['high']:g}"
    return f"{shown} ({accepts})"
