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
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (default: the model's).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (default: the study's for the model).")] = None,
    latent_dim: o.LatentOpt = None,
    width: o.WidthOpt = None,
    param: Annotated[Optional[List[str]], typer.Option("--param", help="Any other config field, NAME=VALUE (repeatable), e.g. clip=0.02.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Train on the first N training images only.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize image-folder data to SIZE×SIZE.")] = None,
    seed: o.SeedOpt = 0,
    device: o.DeviceOpt = "auto",
    out: Annotated[Optional[str], typer.Option(help="Run directory (default runs/<model>-<data>-<timestamp>).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Also keep epoch_NNNN.safetensors every K epochs (0: never).")] = 10,
    sample_every: Annotated[int, typer.Option(help="Write samples/epoch_NNNN.png every K epochs (0: never).")] = 1,
    resume: Annotated[Optional[str], typer.Option(help="Continue the run in RUN_DIR (or from a checkpoint) up to --epochs in total.")] = None,
    overwrite: o.OverwriteOpt = False,
    skip_nonfinite: Annotated[bool, typer.Option("--skip-nonfinite", help="Drop optimizer steps whose gradients are NaN/Inf instead of stopping the run.")] = False,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Every K epochs score samples (FID, modes) into metrics.json and keep best.safetensors (0: never).")] = 0,
    eval_n: Annotated[int, typer.Option("--eval-n", help="Samples scored by --eval-every.")] = 2000,
    stop_on_divergence: Annotated[bool, typer.Option("--stop-on-divergence", help="End the run cleanly on a divergence (a loss far outside its recent range, FID doubling from its best or stuck worse than noise's).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    json_out: o.JsonOpt = False,
):
    """Train MODEL on a data set; writes config.json, metrics.json, checkpoints and sample grids to a run directory."""
    params = dict(parse_param(p) for p in (param or []))
    opts = TrainOptions(model=model, data=data, data_dir=data_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                        latent_dim=latent_dim, width=width, params=params, limit=limit, image_size=image_size,
                        seed=seed, device=device, out=out, checkpoint_every=checkpoint_every,
                        sample_every=sample_every, resume=resume, overwrite=overwrite,
                        skip_nonfinite=skip_nonfinite, eval_every=eval_every, eval_n=eval_n,
                        stop_on_divergence=stop_on_divergence)
    result = run_training(opts, make_reporter(quiet))
    if json_out:
        o.print_json(result)
    elif not quiet:
        o.out_console().print(f"run directory: [bold]{result['run_dir']}[/]  checkpoint: {result['checkpoints']['last']}")
