"""gentool models."""

from __future__ import annotations

from typing import Annotated

import typer

from gentool.cli import options as o


@o.cli_errors
def models(
    check: Annotated[bool, typer.Option("--check", help="Also import every model, plugins included, to check that each "
                                        "loads, and list the sampler settings each one declares as loaded (imports "
                                        "torch: slower).")] = False,
    json_out: o.JsonOpt = False,
):
    """List the models (built-ins and installed plugins), where each comes from, what it is, and the sampler
    settings each one declares, with their defaults (--sampler NAME=VALUE sets any; read from the models' source,
    or with --check from the models themselves)."""
    from rich.table import Table

    from gentool.registry import describe_models

    entries = describe_models(load=check, settings=True)
    if json_out:
        o.print_json([{"name": e.name, "source": e.source, "description": e.description,
                       **({"sampler_settings": e.sampler_settings and list(e.sampler_settings)} if check else {})} for e in entries])
        return
    table = Table("model", "source", "description", "sampler settings (sample/evaluate/train)",
                  title="registered models")
    for e in entries:
        table.add_row(e.name, e.source, e.description, sampler_line(e.sampler_settings))
    o.out_console().print(table)


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
