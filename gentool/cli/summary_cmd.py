"""gentool summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from gentool import rundir
from gentool.cli import options as o
from gentool.errors import GentoolError, UsageError
from gentool.results import compare_runs, print_table

TARGET_HELP = "a model name, a .safetensors checkpoint written by gentool, or a run or sweep directory"


def build_model(target: str, data: str | None, latent_dim, width):
    """A model from a checkpoint path, or from a model name plus data geometry and sizes."""
    from gentool.checkpoint import load_checkpoint
    from gentool.data import peek_geometry
    from gentool.registry import get_entry
    from gentool.summary import check_size

    if target.endswith(".safetensors") or os.path.lexists(target):  # a pipe or a link too: refused as one
        return load_checkpoint(target, arg="TARGET", expected=TARGET_HELP).model
    if "/" in target or os.sep in target or target.startswith(("~", ".")):  # a path, not a model name
        raise UsageError(f"TARGET: {target} does not exist; expected {TARGET_HELP}")
    try:  # the registry names its argument MODEL; here it is TARGET
        cls = get_entry(target).cls
    except GentoolError as exc:
        raise type(exc)(str(exc).replace("MODEL:", "TARGET:", 1)) from None
    config = cls.config_class.create(peek_geometry(data or "mnist"), latent_dim, width)
    # counted without allocating: a huge --width is refused before it takes the memory
    check_size(cls, config, options="--width/--latent-dim")
    return cls(config)


def render(summary: dict, console: Console) -> None:
    """Rich tables: one per network, then the totals."""
    from gentool.summary import shape_text

    for name, net in summary["networks"].items():
        table = o.table("layer", "type", "output shape", "params",
                        title=f"{summary['model']} · {name} ({summary['preset']})")
        for row in net["layers"]:
            table.add_row(row["name"], row["type"], shape_text(row["output_shape"]), f"{row['params']:,}")
        table.add_section()
        table.add_row("trainable", "", "", f"{net['trainable_params']:,}")
        table.add_row("non-trainable", "", "", f"{net['non_trainable_params']:,}")
        table.add_row("total", "", "", f"{net['total_params']:,}", style="bold")
        table.add_row("size", "", "", f"{net['size_mb']:.2f} MB")
        console.print(table)
    console.print(f"[bold]{summary['model']}[/]: {summary['total_params']:,} parameters in all "
                  f"({summary['trainable_params']:,} trainable), {summary['size_mb']:.2f} MB")


def show_runs(folder: Path, json_out: bool) -> None:
    """A table comparing the runs in a run or sweep directory: model, values, epochs, final metrics."""
    rows = compare_runs(folder)
    if not rows:
        rundir.refuse_if_written(folder, "TARGET")  # a run being started has no config.json yet
        raise UsageError(f"TARGET: no run directories (folders with a {rundir.CONFIG}) in {folder}; expected "
                         f"{TARGET_HELP}")
    if json_out:
        o.print_json(rows)
    else:
        print_table(rows, f"{len(rows)} run(s) in {folder}")


@o.cli_errors
def summary(
    target: Annotated[str, typer.Argument(help="A model name, a checkpoint file, or a run or sweep directory.",
                                          callback=o.checked())],
    data: Annotated[Optional[str], typer.Option("--data", metavar="NAME|DIR", callback=o.checked(), help="For a model name: the data set whose image geometry it is built for (mnist, cifar10 or a folder). [default: mnist]")] = None,
    latent_dim: o.LatentOpt = None,
    width: o.WidthOpt = None,
    json_out: o.JsonOpt = False,
):
    """Print each network's layers, output shapes and parameter counts, counted like the study's tables; for a run
    or sweep directory, a table comparing its runs."""
    from gentool.summary import summarize

    if Path(target).is_dir():
        return show_runs(Path(target), json_out)
    result = summarize(build_model(target, data, latent_dim, width))
    if json_out:
        o.print_json(result)
    else:
        render(result, o.out_console())
