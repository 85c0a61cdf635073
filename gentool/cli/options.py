"""Option types shared by several commands, and the error boundary every command goes through."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from gentool.errors import GentoolError

DEBUG_ENV = "GENTOOL_DEBUG"

DataOpt = Annotated[Optional[str], typer.Option("--data", help="mnist, cifar10, mnist-sample, or a folder of PNG/JPEG images (class subfolders give labels).")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="Where MNIST/CIFAR10 live (default: $GENTOOL_DATA, else the user cache).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed repeats a CPU run exactly.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
LatentOpt = Annotated[Optional[int], typer.Option("--latent-dim", help="Latent size (default: the study's, per model and data).")]
WidthOpt = Annotated[Optional[float], typer.Option("--width", help="Multiplier for every hidden width/channel count (1 = the study's network).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output instead of refusing.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default: the model's).")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the study's for the model).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Train on the first N training images only.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", help="Resize image-folder data to SIZE×SIZE.")]
CheckpointEveryOpt = Annotated[int, typer.Option("--checkpoint-every", help="Also keep epoch_NNNN.safetensors every K epochs (0: never).")]
SampleEveryOpt = Annotated[int, typer.Option("--sample-every", help="Write samples/epoch_NNNN.png every K epochs (0: never).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
SkipNonfiniteOpt = Annotated[bool, typer.Option("--skip-nonfinite", help="Drop optimizer steps whose gradients are NaN/Inf instead of stopping the run.")]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Every K epochs score samples (FID, modes) into metrics.json and keep best.safetensors (0: never).")]
StopOnDivergenceOpt = Annotated[bool, typer.Option("--stop-on-divergence", help="End the run cleanly on a divergence (a loss far outside its recent range, FID doubling from its best or stuck worse than noise's).")]
EvalNOpt = Annotated[int, typer.Option("--eval-n", help="Samples scored by --eval-every.")]
EmaOpt = Annotated[Optional[float], typer.Option("--ema", help="Keep an exponential moving average of the sampling network's weights (generator, decoder, denoiser) with this DECAY, e.g. 0.999; sample and evaluate use it by default. Default: none, except for families that keep one (flow, ddpm); 0 turns it off.")]
MaxMinutesOpt = Annotated[Optional[float], typer.Option("--max-minutes", help="Stop after this much training time (wall clock), saving a checkpoint that --resume continues.")]
WeightsOpt = Annotated[str, typer.Option("--weights", help="auto (the EMA weights when the run kept them, else raw), ema or raw.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32 (default, safe everywhere), bf16 (autocast; CPUs with AVX512-BF16/AMX, recent GPUs) or fp16 (CUDA/MPS, with gradient scaling).")]
ChannelsLastOpt = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (default: on for convolutional networks, off on MPS).", show_default=False)]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Compile the networks with torch.compile (slow first steps; needs a C++ compiler on CPU, triton on CUDA).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for this process (default: torch's, one per core).")]
ClassOpt = Annotated[Optional[str], typer.Option("--class", help="Draw every sample of this class (index or class name) from a class-conditional model.")]
# The sampler's settings, for families that declare them (flow, ddpm; `gentool models` lists each family's).
StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Sampler steps of an iterative family (flow, ddpm): fewer is faster, more is closer to the exact sampler (default: the family's).", show_default=False)]
SolverOpt = Annotated[Optional[str], typer.Option("--solver", help="Sampler of an iterative family: flow euler|heun, ddpm ddim|ddpm (default: the family's).", show_default=False)]
GuidanceOpt = Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance weight of a class-conditional iterative family (cflow, cddpm): 1 = plain conditional, larger follows the class more closely.", show_default=False)]


def sampler_settings(steps: int | None, solver: str | None, guidance: float | None) -> dict:
    """The sampler settings given on the command line (the family checks them and fills in its defaults)."""
    given = {"steps": steps, "solver": solver, "guidance": guidance}
    return {k: v for k, v in given.items() if v is not None}


def out_console() -> Console:
    """The console for results (stdout)."""
    return Console()


def err_console() -> Console:
    """The console for errors and warnings (stderr)."""
    return Console(stderr=True)


def print_json(obj) -> None:
    """One JSON object on stdout (plain, so scripts can parse it)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def cli_errors(func):
    """Turn domain errors into one red line and their exit code; a traceback only with GENTOOL_DEBUG=1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except GentoolError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            err_console().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper
