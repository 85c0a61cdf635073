"""gentool models."""

from __future__ import annotations

from typing import Annotated

import typer

from gentool.cli import options as o


@o.cli_errors
def models(
    check: Annotated[bool, typer.Option("--check", help="Also import every model, plugins included, to check that each loads (imports torch: slower).")] = False,
    json_out: o.JsonOpt = False,
):
    """List the models (built-ins and installed plugins), where each comes from, and what it is."""
    from rich.table import Table

    from gentool.registry import describe_models

    entries = describe_models(load=check)
    if json_out:
        o.print_json([{"name": e.name, "source": e.source, "description": e.description} for e in entries])
        return
    table = Table("model", "source", "description", title="registered models")
    for e in entries:
        table.add_row(e.name, e.source, e.description)
    o.out_console().print(table)
