"""gentool sample."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gentool.cli import options as o


@o.cli_errors
def sample(
    checkpoint: Annotated[str, typer.Argument(help="A .safetensors checkpoint written by gentool train.")],
    grid: Annotated[Optional[str], typer.Option(help="Write a ROWSxCOLS PNG grid (default 8x8 when --n is not given).")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Number of samples for an .npz file or a folder of PNGs.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Output: .png for a grid; .npz (key 'images', uint8 N×H×W×C) or DIR/ for --n.")] = None,
    seed: o.SeedOpt = 0,
    device: o.DeviceOpt = "auto",
    overwrite: o.OverwriteOpt = False,
    interpolate: Annotated[bool, typer.Option("--interpolate", help="Write a GIF (--out walk.gif): one walk through random latent points per grid cell.")] = False,
    frames: Annotated[int, typer.Option(help="Frames between two latent points of an --interpolate walk.")] = 16,
    label: o.ClassOpt = None,
    by_class: Annotated[bool, typer.Option("--by-class", help="Grid with row r drawn from class r (class-conditional models).")] = False,
    weights: o.WeightsOpt = "auto",
    precision: o.PrecisionOpt = "auto",
    steps: o.StepsOpt = None,
    solver: o.SolverOpt = None,
    guidance: o.GuidanceOpt = None,
    json_out: o.JsonOpt = False,
):
    """Draw samples from a checkpoint (the checkpoint alone rebuilds the model)."""
    from gentool.sampling import SampleRequest, sample as draw

    result = draw(SampleRequest(checkpoint, grid, n, out, seed, device, overwrite, interpolate, frames, label,
                                by_class, weights, precision, o.sampler_settings(steps, solver, guidance)))
    if json_out:
        o.print_json(result)
    else:
        print(result["out"])
