"""gentool models."""

from __future__ import annotations

from rich.table import Table

from gentool.cli import options as o
from gentool.registry import list_models


@o.cli_errors
def models(json_out: o.JsonOpt = False):
    """List the registered models, where each comes from, what it is, and its sampler's settings and defaults."""
    entries = list_models()
    if json_out:
        o.print_json([{"name": e.name, "source": e.source, "description": e.description,
                       "sampler_settings": e.sampler_settings()} for e in entries])
        return
    table = Table("model", "source", "description", "sampler settings (sample/evaluate/train)",
                  title="registered models")
    for e in entries:
        settings = ", ".join(f"--{s['name']} {s['default']}" + (f" ({'|'.join(s['choices'])})" if "choices" in s else "")
                             for s in e.sampler_settings())
        table.add_row(e.name, e.source, e.description, settings)
    o.out_console().print(table)
