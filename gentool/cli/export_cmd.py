"""gentool export: its options are ExportOptions' fields (gentool/export_options.py)."""

from __future__ import annotations

from gentool.cli import options as o
from gentool.export_options import ExportOptions


@o.cli_errors
@o.options_command(ExportOptions)
def export(opts: ExportOptions, json_out: o.JsonOpt = False):
    """Write a checkpoint's sampler as one file (ONNX or TorchScript) mapping latent codes (and class labels) to
    images, checked against gentool's own images before it is written; a JSON beside it describes it."""
    from gentool.export import export as write

    result = write(opts)
    if json_out:
        o.print_json(result)
    else:
        p = result["parity"]
        o.err_console().print(f"parity: {p['runtime']} within {p['max_abs_diff']:.2g} of gentool on {p['n']} codes "
                              f"(tolerance {p['tolerance']:g}); described in {o.escape(result['json'])}",
                              highlight=False, soft_wrap=True)
        print(result["out"])
