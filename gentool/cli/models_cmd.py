"""gentool models."""

from __future__ import annotations

from rich.table import Table

from gentool.cli import options as o
from gentool.registry import list_models


@o.cli_errors
def models(json_out: o.JsonOpt = False):
    """List the registered models, where each comes from, and what it is."""
    entries = list_models()
    if json_out:
        o.print_json([{"name": e.name, "source": e.source, "description": e.description} for e in entries])
        return
    table = Table("model", "source", "description", title="registered models")
    for e in entries:
        table.add_row(e.name, e.source, e.description)
    o.out_console().print(table)
