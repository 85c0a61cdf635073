"""gentool distill: its options are DistillOptions' fields (gentool/distill_options.py)."""

from __future__ import annotations

from gentool.cli import options as o
from gentool.cli.train_cmd import LogEveryOpt
from gentool.distill_options import DistillOptions


@o.cli_errors
@o.options_command(DistillOptions)
def distill(opts: DistillOptions, log_every: LogEveryOpt = 30.0, quiet: o.QuietOpt = False,
            json_out: o.JsonOpt = False):
    """Turn a trained flow or ddpm (RUN) into a reflow student that draws in --steps network evaluations: draws the
    teacher's couplings (noise and sample), then trains the student on them like `gentool train` (resumable, with
    --max-minutes, grids and checkpoints)."""
    from gentool.distill import distill as run_distill
    from gentool.progress import make_reporter

    result = run_distill(opts, make_reporter(quiet, log_every))
    if json_out:
        o.print_json(result)
    elif not quiet and "run_dir" in result:
        o.out_console().print(f"run directory: [bold]{o.escape(result['run_dir'])}[/]  checkpoint: "
                              f"{o.escape(result['checkpoints']['last'])}")
