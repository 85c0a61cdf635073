"""gentool train."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from gentool.cli import options as o
from gentool.parsing import parse_param
from gentool.progress import make_reporter
from gentool.train import TrainOptions, train as run_training


@o.cli_errors
def train(
    model: Annotated[str, typer.Argument(help="Model name (see `gentool models`).")],
    data: o.DataOpt = None,
    data_dir: o.DataDirOpt = None,
    epochs: Annotated[int, typer.Option(help="Total epochs (with --resume: the total, not more).")] = 10,
    batch_size: o.BatchSizeOpt = None,
    lr: o.LrOpt = None,
    latent_dim: o.LatentOpt = None,
    width: o.WidthOpt = None,
    param: Annotated[Optional[List[str]], typer.Option("--param", help="Any other config field, NAME=VALUE (repeatable), e.g. clip=0.02.")] = None,
    limit: o.LimitOpt = None,
    image_size: o.ImageSizeOpt = None,
    seed: o.SeedOpt = 0,
    device: o.DeviceOpt = "auto",
    out: Annotated[Optional[str], typer.Option(help="Run directory (default runs/<model>-<data>-<timestamp>).")] = None,
    checkpoint_every: o.CheckpointEveryOpt = 10,
    sample_every: o.SampleEveryOpt = 1,
    resume: Annotated[Optional[str], typer.Option(help="Continue the run in RUN_DIR (or from a checkpoint) up to --epochs in total.")] = None,
    overwrite: o.OverwriteOpt = False,
    ema: o.EmaOpt = None,
    max_minutes: o.MaxMinutesOpt = None,
    precision: o.PrecisionOpt = "fp32",
    channels_last: o.ChannelsLastOpt = None,
    compile: o.CompileOpt = False,
    threads: o.ThreadsOpt = None,
    skip_nonfinite: o.SkipNonfiniteOpt = False,
    eval_every: o.EvalEveryOpt = 0,
    eval_n: o.EvalNOpt = 2000,
    stop_on_divergence: o.StopOnDivergenceOpt = False,
    steps: o.StepsOpt = None,
    solver: o.SolverOpt = None,
    guidance: o.GuidanceOpt = None,
    quiet: o.QuietOpt = False,
    json_out: o.JsonOpt = False,
):
    """Train MODEL on a data set; writes config.json, metrics.json, checkpoints and sample grids to a run directory."""
    params = dict(parse_param(p) for p in (param or []))
    opts = TrainOptions(model=model, data=data, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                        latent_dim=latent_dim, width=width, params=params, limit=limit, image_size=image_size,
                        seed=seed, device=device, out=out, checkpoint_every=checkpoint_every,
                        sample_every=sample_every, resume=resume, overwrite=overwrite,
                        skip_nonfinite=skip_nonfinite, eval_every=eval_every, eval_n=eval_n,
                        stop_on_divergence=stop_on_divergence, ema=ema, max_minutes=max_minutes,
                        precision=precision, channels_last=channels_last, compile=compile, threads=threads,
                        sample_options=o.sampler_settings(steps, solver, guidance))
    result = run_training(opts, make_reporter(quiet))
    if result["rank"] != 0:  # under torchrun, rank 0 speaks for the run
        return
    if json_out:
        o.print_json(result)
    elif not quiet:
        o.out_console().print(f"run directory: [bold]{result['run_dir']}[/]  checkpoint: {result['checkpoints']['last']}")
