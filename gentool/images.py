"""Turning image tensors into files: PNG grids, GIFs, `.npz` arrays and folders of PNGs (all written atomically).
Arrays and folders can be written chunk by chunk (`NpzWriter`, `write_png_folder(start=)`), so that a million
samples never need to be in memory at once."""

from __future__ import annotations

import contextlib
import io
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import numpy.lib.format as npy
import torch

from gentool.errors import dims
from gentool.fileio import NotRegular, atomic_open, atomic_write_bytes, make_dirs, open_regular


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


def write_grid(path: str | Path, images: torch.Tensor, rows: int, cols: int, row_names: list[str] | None = None
               ) -> None:
    """Write images in [0, 1] as a rows×cols PNG grid, each row's name at its left when `row_names` are given."""
    grid = make_grid(to_uint8(images), rows, cols)
    write_png(path, grid if row_names is None else name_rows(grid, row_names, images.shape[-2]))


ROW_NAME_CHARS = 14  # a class name beside its row: enough for CIFAR-10's and most folders'; longer ones are cut


def _row_font():
    """DejaVu Sans, which matplotlib (a dependency, for the figures) ships, at a size that fits a 28-pixel row: it
    draws accented and non-Latin names that Pillow's built-in bitmap font shows as boxes; that font otherwise."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), 11)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def name_rows(grid: np.ndarray, names: list[str], tile: int, pad: int = 2) -> np.ndarray:
    """The grid (make_grid's, tiles `tile` pixels high) with a margin at its left naming each row (`_row_font`),
    white on black like the grid's gaps."""
    from PIL import Image, ImageDraw

    from gentool.errors import printable

    font = _row_font()
    names = [n if len(n) <= ROW_NAME_CHARS else n[:ROW_NAME_CHARS - 1] + "…" for n in map(printable, names)]
    width = max(int(font.getlength(n)) for n in names) + 2 * pad
    canvas = Image.new("L", (width, grid.shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        draw.text((width - pad, pad + r * (tile + pad) + tile / 2), name, fill=255, font=font, anchor="rm")
    margin = np.repeat(np.asarray(canvas)[:, :, None], grid.shape[2], axis=2)
    return np.concatenate([margin, grid], axis=1)


def write_npz(path: str | Path, images: torch.Tensor, **extra) -> None:
    """Write `images` (uint8 N×H×W×C) and any extra arrays to a compressed `.npz`, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=to_uint8(images), **extra)
    atomic_write_bytes(path, buf.getvalue())


class NpzWriter:
    """Writes one uint8 array of a known `shape` into a compressed `.npz` (the layout `np.savez_compressed` gives,
    read back by `np.load`) as its rows arrive: the zip member is deflated as it is written, so memory holds one
    chunk, never the array. `np.savez` cannot stream, hence the `.npy` header written here by numpy's own helper.
    The file appears at `path` atomically when every row has been written."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], key: str = "images"):
        self.path, self.shape, self.key, self.rows = Path(path), tuple(shape), key, 0

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        try:
            f = self._stack.enter_context(atomic_open(self.path))
            zf = self._stack.enter_context(zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, allowZip64=True))
            self._member = self._stack.enter_context(zf.open(f"{self.key}.npy", "w", force_zip64=True))
            npy.write_array_header_1_0(self._member, {"descr": npy.dtype_to_descr(np.dtype(np.uint8)),
                                                      "fortran_order": False, "shape": self.shape})
        except BaseException:
            self._stack.close()
            raise
        return self

    def write(self, rows: np.ndarray) -> None:
        """Append uint8 rows (each of shape `shape[1:]`)."""
        if rows.dtype != np.uint8 or rows.shape[1:] != self.shape[1:] or self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"rows {rows.dtype} {dims(rows.shape)} do not continue an array {dims(self.shape)}")
        self._member.write(np.ascontiguousarray(rows).data)
        self.rows += len(rows)

    def __exit__(self, kind, exc, tb):
        if kind is None and self.rows != self.shape[0]:  # a short array would read back wrong: keep no file
            exc = ValueError(f"{self.rows} of {self.shape[0]} rows were written to {self.path}")
            self._stack.__exit__(ValueError, exc, None)
            raise exc
        return self._stack.__exit__(kind, exc, tb)


def png_name(i: int) -> str:
    """The name of image `i` in a folder of PNGs gentool writes."""
    return f"{i:06d}.png"


def write_png_folder(folder: str | Path, images: torch.Tensor, start: int = 0,
                     paths: list[Path] | None = None) -> list[Path]:
    """Write each image as `NNNNNN.png` in `folder` (created if needed), numbered from `start`; returns the paths,
    appended to `paths` as each file is written when given (so a caller knows what a failed call left)."""
    folder = make_dirs(folder)
    paths = [] if paths is None else paths
    for i, img in enumerate(to_uint8(images), start):
        path = folder / png_name(i)
        write_png(path, img)
        paths.append(path)
    return paths


def write_gif(path: str | Path, frames: list[np.ndarray], durations_ms: list[int] | int = 200) -> None:
    """Write H×W×C uint8 pictures (all one size) as a looping GIF, atomically; `durations_ms` is one number or one
    per frame. Colour frames are reduced to 256 colours by Pillow's fast octree, undithered: imageio's default
    (Pillow's median cut) took 116 s for a 120-frame progress.gif of CIFAR-10 grids on a busy 2-core CPU, the
    octree 1.7 s, at a mean error of 4.1 against 3.5 levels of 255 (and truer colours where median cut's 256 fell
    short: a yellow aeroplane turned grey-brown). Grey frames (MNIST's captioned RGB ones too) are written as they
    are: a GIF's palette holds all 256 greys."""
    from PIL import Image

    if isinstance(durations_ms, list) and len(durations_ms) == 1:
        durations_ms = durations_ms[0]  # Pillow takes a list only for several frames
    grey = all(f.ndim == 2 or f.shape[2] == 1 or (f[..., :1] == f[..., :3]).all() for f in frames)
    pictures = [Image.fromarray(f[:, :, 0] if f.ndim == 3 and grey else f) for f in frames]
    if pictures[0].mode != "L":
        pictures = [p.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
                    for p in pictures]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations_ms, loop=0)
    atomic_write_bytes(path, buffer.getvalue())


# --- reading images (data folders, evaluate's PNG folders) ---------------------------------------------------

MAX_PIXELS = 8192 * 8192  # per image: larger ones are refused from their header, before any decoding
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # one channel of 0-65535 (PIL reads 16-bit grey PNG so)
WITH_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


class ImageError(ValueError):
    """An image gentool will not read; the message says why (the caller adds the file and argument)."""


def open_image(path: str | Path):
    """The PIL image at `path` with its header read but its pixels not yet decoded; refuses (ImageError) an image
    of more than MAX_PIXELS pixels, a decompression bomb, before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    # Opening reads the header only; PIL's own bomb check (which names no size) is replaced by the one below.
    try:
        f = open_regular(path)  # a named pipe named like an image would block Image.open forever
    except NotRegular as exc:
        raise ImageError(f"is {exc.kind}, not a regular file") from None
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(f)
        img._exclusive_fp = True  # PIL then closes `f` with the image, as when it opens the path itself
    except UnidentifiedImageError:  # its own message names the file object ("<_io.BufferedReader name=3>")
        f.close()
        raise ImageError("cannot be decoded (its bytes are in no image format Pillow reads)") from None
    except (OSError, ValueError) as exc:
        f.close()
        raise ImageError(f"cannot be decoded ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise ImageError(f"is {width}x{height} pixels; at most {MAX_PIXELS:,} pixels per image are read")
    return img


def is_grey(img) -> bool:
    """Whether an opened image is greyscale, from its mode (a palette image: from its palette), without decoding."""
    if img.mode in ("1", "L", "LA", "La", *SIXTEEN_BIT):
        return True
    if img.mode in ("P", "PA"):
        palette = np.asarray(img.getpalette() or [0, 0, 0], dtype=np.int32).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return False


def image_pixels(img, grey: bool | None = None) -> np.ndarray:
    """Decode an opened image to uint8 H×W×C (C = 1 for grey, else 3; `grey` forces one), for every mode PIL gives:
    16-bit grey is scaled to 8 bits (v·255/65535, rounded), palettes and other colour spaces are converted, an alpha
    channel must be opaque. Refuses (ImageError) what has no such reading: floating-point pixels, transparency."""
    grey = is_grey(img) if grey is None else grey
    try:
        if img.mode in WITH_ALPHA or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("LA" if grey and img.mode not in ("P", "PA") else "RGBA")
            alpha = img.getchannel("A").getextrema()
            if alpha != (255, 255):
                raise ImageError("has transparent pixels; expected opaque images (flatten them onto a background)")
        if img.mode in SIXTEEN_BIT:
            values = np.asarray(img).astype(np.int64)
            if values.size and (values.min() < 0 or values.max() > 65535):
                raise ImageError(f"holds {img.mode} values outside 0-65535; expected 8- or 16-bit images")
            array = ((values * 255 + 32767) // 65535).astype(np.uint8)  # v·255/65535 to the nearest integer
            array = array if grey else np.repeat(array[:, :, None], 3, axis=2)
        elif img.mode == "F":
            raise ImageError("has floating-point pixels; expected 8- or 16-bit images")
        else:
            array = np.asarray(img.convert("L" if grey else "RGB"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot be decoded as {'grey' if grey else 'RGB'} pixels ({exc})") from None
    return array[:, :, None] if array.ndim == 2 else array
