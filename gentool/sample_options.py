"""What `gentool sample` accepts: one keyword-only dataclass, each option declared once (with its help text and
flags), checked before any work. Also the options sample and evaluate share, declared here once for both, and the
sampler's settings, which export takes too.

Imports nothing heavy: `gentool sample --help` reads this module without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gentool.errors import UsageError, bad_value
from gentool.parsing import parse_grid
from gentool.checks import Ints, choice
from gentool.train_options import DEVICE, PRECISION, SEED, copy_option, fold_sampler, option, sampler_settings

MAX_SAMPLES = 1_000_000
MAX_FRAMES = 500


@dataclass(kw_only=True)
class SamplerOptions:
    """The sampler's settings of a command that draws from a checkpoint (sample, evaluate, export): --steps,
    --solver, --guidance and each --sampler NAME=VALUE, one place per setting."""

    steps: int | None = copy_option("steps")
    solver: str | None = copy_option("solver")
    guidance: float | None = copy_option("guidance")
    sampler: dict = copy_option("sampler")

    def __post_init__(self):
        fold_sampler(self)

    @property
    def sample_options(self) -> dict:
        """The settings given, by name (the model's family checks them and fills in its defaults)."""
        return sampler_settings(self)


@dataclass(kw_only=True)
class DrawOptions(SamplerOptions):
    """The options of both sample and evaluate: how a checkpoint's samples are drawn (the sampler's settings too),
    and whether to replace an existing output."""

    seed: int = option("Random seed; the same seed gives the same result on the CPU.", default=0, metavar="S",
                       check=SEED)
    device: str = option("auto (cuda, then mps, then cpu), cpu, cuda or mps.", default="auto",
                         metavar="auto|cpu|cuda|mps", check=DEVICE)
    weights: str = option("auto (the EMA weights when the run kept them, else raw), ema or raw.", default="auto",
                          metavar="auto|ema|raw", check=choice("auto", "ema", "raw"))
    precision: str = option("auto (bf16 where this machine runs it measurably faster, else fp32; "
                            "$GENTOOL_AUTO_PRECISION=fp32|bf16 fixes what auto picks), fp32 (safe everywhere), "
                            "bf16 (autocast; CPUs with AVX512-BF16/AMX, recent GPUs) or fp16 (CUDA/MPS).",
                            default="auto", metavar="auto|fp32|bf16|fp16", check=PRECISION)
    overwrite: bool = option("Replace existing output instead of refusing.", default=False)
    threads: int | None = copy_option("threads")


@dataclass(kw_only=True)
class SampleOptions(DrawOptions):
    """What `gentool sample` was asked for; `grid` and `n` are mutually exclusive."""

    checkpoint: str = option("A .safetensors checkpoint written by gentool train.", metavar="CKPT",
                             argument=True, required=True)
    grid: str | None = option("Write a ROWSxCOLS PNG grid (default 8x8 when --n is not given).", metavar="RxC")
    n: int | None = option("Number of samples for an .npz file or a folder of PNGs.", metavar="N", flags=("--n",),
                           check=Ints(1, MAX_SAMPLES))
    out: str | None = option("Output: .png for a grid; .npz (key 'images', uint8 N×H×W×C) or DIR/ for --n.",
                             metavar="PATH")
    interpolate: bool = option("Write a GIF (--out walk.gif): one walk through random latent points per grid cell.",
                               default=False)
    frames: int = option("Frames between two latent points of an --interpolate walk.", default=16, metavar="N",
                         check=Ints(2, MAX_FRAMES))
    label: str | None = option("Draw every sample of this class (index or class name) from a class-conditional "
                               "model.", metavar="K", flags=("--class",))
    by_class: bool = option("Grid with row r drawn from class r (class-conditional models).", default=False)

    def resolve(self) -> tuple[str, int, tuple[int, int] | None, Path]:
        """Validate and work out (kind, count, grid shape, output path); kind is grid, gif, npz or folder."""
        if self.grid is not None and self.n is not None:
            raise UsageError("--n: not allowed with --grid (a grid's size sets the number of samples)")
        if self.by_class and (self.n is not None or self.label is not None):
            raise UsageError(f"--by-class: not allowed with {'--n' if self.n is not None else '--class'} "
                             f"(it draws a grid with one row per class)")
        if self.interpolate:
            return self._resolve_walk()
        if self.n is not None and not 1 <= self.n <= MAX_SAMPLES:
            raise bad_value("--n", self.n, f"an integer between 1 and {MAX_SAMPLES:,}")
        ckpt = Path(self.checkpoint)
        if self.n is None:
            rows, cols, out = self._grid_out("grid", ".png", "a .png path for a grid")
            return "grid", rows * cols, (rows, cols), out
        tag = f"_class{self.label}" if self.label is not None else ""
        out = Path(self.out) if self.out else ckpt.parent / f"{ckpt.stem}{tag}_n{self.n}_seed{self.seed}.npz"
        if str(self.out or "").endswith(("/", "\\")) or out.is_dir():
            return "folder", self.n, None, out
        if out.suffix.lower() != ".npz":
            raise bad_value("--out", str(out), "a .npz file or a folder (ending in /) when --n is given")
        return "npz", self.n, None, out

    def _resolve_walk(self) -> tuple[str, int, tuple[int, int], Path]:
        if self.n is not None:
            raise UsageError("--n: not allowed with --interpolate (the --grid sets the number of walks)")
        if not 2 <= self.frames <= MAX_FRAMES:
            raise bad_value("--frames", self.frames, f"an integer between 2 and {MAX_FRAMES}")
        rows, cols, out = self._grid_out("walk", ".gif", "a .gif path with --interpolate")
        return "gif", rows * cols, (rows, cols), out

    def _grid_out(self, name: str, suffix: str, accepted: str) -> tuple[int, int, Path]:
        """The --grid shape and the output path (by default beside the checkpoint, named by shape and seed)."""
        rows, cols = parse_grid(self.grid or "8x8")
        ckpt = Path(self.checkpoint)
        tag = "_byclass" if self.by_class else f"_class{self.label}" if self.label is not None else ""
        out = Path(self.out) if self.out else ckpt.parent / f"{ckpt.stem}{tag}_{name}{rows}x{cols}_seed{self.seed}{suffix}"
        if out.suffix.lower() != suffix:
            raise bad_value("--out", str(out), accepted)
        return rows, cols, out
