"""Drawing samples from a checkpoint into a PNG grid, an `.npz` array or a folder of PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gentool.checkpoint import load_checkpoint
from gentool.device import pick_device
from gentool.errors import UsageError, bad_value
from gentool.images import write_grid, write_npz, write_png_folder
from gentool.parsing import parse_grid

MAX_SAMPLES = 1_000_000


@dataclass
class SampleRequest:
    """What `gentool sample` was asked for; `grid` and `n` are mutually exclusive."""

    checkpoint: str
    grid: str | None = None
    n: int | None = None
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False

    def resolve(self) -> tuple[str, int, tuple[int, int] | None, Path]:
        """Validate and work out (kind, count, grid shape, output path); kind is grid, npz or folder."""
        if self.grid is not None and self.n is not None:
            raise UsageError("--n: not allowed with --grid (a grid's size sets the number of samples)")
        if self.n is not None and not 1 <= self.n <= MAX_SAMPLES:
            raise bad_value("--n", self.n, f"an integer between 1 and {MAX_SAMPLES:,}")
        ckpt = Path(self.checkpoint)
        if self.n is None:
            rows, cols = parse_grid(self.grid or "8x8")
            out = Path(self.out) if self.out else ckpt.parent / f"{ckpt.stem}_grid{rows}x{cols}_seed{self.seed}.png"
            if out.suffix.lower() != ".png":
                raise bad_value("--out", str(out), "a .png path for a grid")
            return "grid", rows * cols, (rows, cols), out
        out = Path(self.out) if self.out else ckpt.parent / f"{ckpt.stem}_n{self.n}_seed{self.seed}.npz"
        if str(self.out or "").endswith(("/", "\\")) or out.is_dir():
            return "folder", self.n, None, out
        if out.suffix.lower() != ".npz":
            raise bad_value("--out", str(out), "a .npz file or a folder (ending in /) when --n is given")
        return "npz", self.n, None, out


def _check_target(kind: str, out: Path, n: int, overwrite: bool) -> None:
    if kind == "folder":
        clash = out.is_dir() and any(out.glob("*.png"))
        if clash and not overwrite:
            raise UsageError(f"--out: folder {out} already holds PNG files; pass --overwrite to replace them")
    elif out.exists() and not overwrite:
        raise UsageError(f"--out: {out} already exists; pass --overwrite to replace it")
    parent = out if kind == "folder" else out.parent
    if parent.exists() and not parent.is_dir():
        raise bad_value("--out", str(out), "a path inside a folder")
    parent.mkdir(parents=True, exist_ok=True)


def sample(req: SampleRequest) -> dict:
    """Draw samples as requested and write them; returns what was written."""
    kind, n, grid, out = req.resolve()
    device = pick_device(req.device)
    ckpt = load_checkpoint(req.checkpoint, device)
    _check_target(kind, out, n, req.overwrite)
    images = ckpt.model.generate(n, torch.Generator().manual_seed(req.seed))
    if kind == "grid":
        write_grid(out, images, *grid)
    elif kind == "npz":
        write_npz(out, images)
    else:
        write_png_folder(out, images)
    return {"checkpoint": str(req.checkpoint), "model": ckpt.model.name, "kind": kind, "n": n,
            "shape": list(images.shape[1:]), "seed": req.seed, "out": str(out)}
