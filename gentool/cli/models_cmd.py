"""gentool models."""

from __future__ import annotations

from typing import Annotated

import typer

from gentool.cli import options as o


@o.cli_errors
def models(
    check: Annotated[bool, typer.Option("--check", help="Also import every model, plugins included, to check that each loads, and list each one's sampler settings (imports torch: slower).")] = False,
    json_out: o.JsonOpt = False,
):
    """List the models (built-ins and installed plugins), where each comes from, and what it is; with --check, also
    each one's sampler settings and defaults (--steps, --solver, --guidance)."""
    from rich.table import Table

    from gentool.registry import describe_models

    entries = describe_models(load=check)
    if json_out:
        o.print_json([{"name": e.name, "source": e.source, "description": e.description,
                       **({"sampler_settings": list(e.sampler_settings)} if check else {})} for e in entries])
        return
    columns = ("model", "source", "description") + (("sampler settings (sample/evaluate/train)",) if check else ())
    table = Table(*columns, title="registered models")
    for e in entries:
        settings = ", ".join(f"--{s['name']} {s['default']}" + (f" ({'|'.join(s['choices'])})" if "choices" in s else "")
                             for s in e.sampler_settings or ())
        table.add_row(e.name, e.source, e.description, *((settings,) if check else ()))
    o.out_console().print(table)
    if not check:
        o.out_console().print("Sampler settings of each model (flow, ddpm: --steps, --solver, --guidance): "
                              "gentool models --check", highlight=False)
