"""gentool train: its options are TrainOptions' fields (gentool/train_options.py), plus how progress is shown."""

from __future__ import annotations

from typing import Annotated

import typer

from gentool.cli import options as o
from gentool.checks import number_parser
from gentool.progress import LOG_EVERY_RANGE
from gentool.train_options import TrainOptions

LogEveryOpt = Annotated[float, typer.Option(
    "--log-every", metavar="SECONDS", show_default=False,
    help="Without a terminal (batch logs): a progress line every SECONDS within an epoch, besides the line at each "
         "epoch's end (0: those only). [default: 30]", parser=number_parser(float, LOG_EVERY_RANGE),
    callback=o.checked(LOG_EVERY_RANGE))]


@o.cli_errors
@o.options_command(TrainOptions)
def train(opts: TrainOptions, log_every: LogEveryOpt = 30.0, quiet: o.QuietOpt = False, json_out: o.JsonOpt = False):
    """Train MODEL on a data set, or continue a run (--resume); writes config.json, metrics.json, checkpoints and
    sample grids to a run directory."""
    from gentool.api import train as run_training
    from gentool.progress import make_reporter

    result = run_training(opts, make_reporter(quiet, log_every))
    if result["rank"] != 0:  # under torchrun, rank 0 speaks for the run
        return
    if json_out:
        o.print_json(result)
    elif not quiet:
        o.out_console().print(f"run directory: [bold]{o.escape(result['run_dir'])}[/]  checkpoint: "
                              f"{o.escape(result['checkpoints']['last'])}")
