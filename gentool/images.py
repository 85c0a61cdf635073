"""Turning image tensors into files: PNG grids, GIFs, `.npz` arrays and folders of PNGs (all written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from gentool.fileio import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [0, 1], N×C×H×W → uint8 N×H×W×C (the layout `.npz` files and PNG writers use)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """Tile uint8 N×H×W×C images row-major into one H×W×C picture with `pad` black pixels between tiles."""
    n, h, w, c = images.shape
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(min(n, rows * cols)):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an H×W×C uint8 picture as PNG (grey when C = 1)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return iio.imwrite("<bytes>", image, extension=".png")


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write one picture as PNG, atomically."""
    atomic_write_bytes(path, png_bytes(image))


def write_grid(path: str | Path, images: torch.Tensor, rows: int, cols: int) -> None:
    """Write images in [0, 1] as a rows×cols PNG grid."""
    write_png(path, make_grid(to_uint8(images), rows, cols))


def write_npz(path: str | Path, images: torch.Tensor, **extra) -> None:
    """Write `images` (uint8 N×H×W×C) and any extra arrays to a compressed `.npz`, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=to_uint8(images), **extra)
    atomic_write_bytes(path, buf.getvalue())


def write_png_folder(folder: str | Path, images: torch.Tensor) -> list[Path]:
    """Write each image as `NNNNNN.png` in `folder` (created if needed); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(images)):
        path = folder / f"{i:06d}.png"
        write_png(path, img)
        paths.append(path)
    return paths


def write_gif(path: str | Path, frames: list[np.ndarray], durations_ms: list[int] | int = 200) -> None:
    """Write H×W×C uint8 pictures (all one size) as a looping GIF, atomically; `durations_ms` is one number or one
    per frame."""
    stack = np.stack([f[:, :, 0] if f.ndim == 3 and f.shape[2] == 1 else f for f in frames])
    if isinstance(durations_ms, list) and len(durations_ms) == 1:
        durations_ms = durations_ms[0]  # Pillow takes a list only for several frames
    atomic_write_bytes(path, iio.imwrite("<bytes>", stack, extension=".gif", duration=durations_ms, loop=0))
