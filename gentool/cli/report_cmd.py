"""gentool report."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gentool.cli import options as o


@o.cli_errors
def report(
    path: Annotated[str, typer.Argument(help="A run directory, a sweep directory or a folder of run directories.",
                                        callback=o.checked())],
    out: Annotated[Optional[str], typer.Option("--out", callback=o.checked(), help="The HTML file to write (default: PATH/report.html).")] = None,
    overwrite: o.OverwriteOpt = False,
    animations: Annotated[bool, typer.Option("--animations/--no-animations", help="Embed each run's progress.gif (the largest part of a report of many runs).")] = True,
    json_out: o.JsonOpt = False,
):
    """Write one self-contained HTML page (images embedded, no network, no JavaScript) showing a run, a sweep or a
    folder of runs: curves, sample grids, metrics, evaluations, events, architecture, config and how each number
    was made."""
    from gentool.report import ReportOptions, build_report

    result = build_report(ReportOptions(path=path, out=out, overwrite=overwrite, animations=animations))
    if json_out:
        o.print_json(result)
    else:
        o.out_console().print(f"report: {o.escape(result['report'])} ({result['kind']}, {result['runs']} run(s), "
                              f"{result['bytes'] / 2**20:.1f} MB)", highlight=False)
