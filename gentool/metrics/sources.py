"""What `gentool evaluate` scores: a checkpoint (samples are drawn from it), an `.npz` of images (key `images`,
uint8 N×H×W×C, as `gentool sample` writes) or a folder of PNGs. Every input is checked (shape, dtype, geometry)
and a problem is one line naming SOURCE and the real cause. Images are handed to the evaluator in chunks: an
`.npz` is read lazily from its zip member (only the images asked for are kept, whatever the file claims to hold),
a folder image's size is checked from its header before it is decoded, and a checkpoint's samples are drawn chunk
by chunk."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.lib.format as npy
import torch

from gentool.checkpoint import Checkpoint, load_checkpoint
from gentool.datatypes import shape_differences, shape_text
from gentool.errors import GentoolError, UsageError, dims
from gentool.fileio import not_regular, read_regular
from gentool.paths import check_input_file
from gentool.images import ImageError, image_pixels, is_grey, open_image, to_uint8

SOURCE_HELP = "a checkpoint (.safetensors), an .npz of images (key 'images', uint8 N×H×W×C) or a folder of PNGs"
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg")
CHUNK = 4096  # images handed to the evaluator at a time
MAX_NPZ_IMAGES = 10**8  # what one .npz may claim to hold
MAX_SIDE = 4096
READ_BYTES = 16 << 20  # an .npz member is streamed in blocks of about this size


@dataclass
class Source:
    """An opened SOURCE: its kind (checkpoint, npz, folder), geometry (C, H, W) and how to get N images from it."""

    path: Path
    kind: str
    shape: tuple[int, int, int]
    checkpoint: Checkpoint | None = None
    npz: "NpzImages | None" = None
    files: list[Path] = field(default_factory=list)

    @property
    def available(self) -> int | None:
        """How many images the source holds (None: a checkpoint draws any number)."""
        if self.kind == "checkpoint":
            return None
        return self.npz.count if self.kind == "npz" else len(self.files)

    def count(self, n: int) -> int:
        """How many images `chunks(n, …)` gives: n, or all the source holds when that is fewer."""
        return n if self.available is None else min(n, self.available)

    @property
    def data_spec(self) -> str | None:
        """The data set a checkpoint was trained on (its `--data`), else None."""
        return self.checkpoint.data.get("source") if self.checkpoint else None

    @property
    def data_dir(self) -> str | None:
        """The --data-dir a checkpoint was trained with (where its MNIST or CIFAR-10 files were), else None."""
        return self.checkpoint.data.get("data_dir") if self.checkpoint else None

    def labels(self, n: int) -> torch.Tensor | None:
        """The classes a conditional checkpoint's `n` samples are drawn for (0, 1, …, K−1, 0, … so every class gets
        the same share); None for any other source."""
        return self.checkpoint.model.spread_labels(n) if self.kind == "checkpoint" else None

    def chunks(self, n: int, seed: int, settings: dict | None = None, progress=None) -> Iterator[torch.Tensor]:
        """uint8 N×C×H×W chunks: `n` samples drawn with `seed` (for `labels(n)`, with the sampler's `settings`), or
        a seeded random `n` of the stored images in file order (all of them when the source holds fewer).
        `progress` (a checkpoint's): told each batch's count as it is drawn (`gentool.progress.Drawing`)."""
        if self.kind == "checkpoint":
            from gentool.sampling import sample_chunks

            drawn = sample_chunks(self.checkpoint.model, n, torch.Generator().manual_seed(seed), self.labels(n),
                                  settings=settings, progress=progress)
            for images in drawn:
                yield torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).contiguous()
            return
        count = self.available
        pick = np.arange(count) if n >= count else np.sort(np.random.default_rng(seed).choice(count, n, replace=False))
        if self.kind == "npz":
            rows = self.npz.rows(pick)
        else:
            rows = (np.stack([self._decode(self.files[i]) for i in part]) for part in np.array_split(
                pick, max(1, -(-len(pick) // CHUNK))))
        for part in rows:
            yield torch.from_numpy(part).permute(0, 3, 1, 2).contiguous()

    def _decode(self, path: Path) -> np.ndarray:
        first = self.files[0].name
        try:
            with open_image(path) as img:
                if (img.size[1], img.size[0]) != self.shape[1:]:  # from the header, before decoding
                    raise UsageError(f"SOURCE: {path} is {img.size[0]}x{img.size[1]} pixels, but {first} is "
                                     f"{self.shape[2]}x{self.shape[1]}; all images must be one size")
                if is_grey(img) != (self.shape[0] == 1):
                    raise UsageError(f"SOURCE: {path} is {'grey' if is_grey(img) else 'colour'}, unlike {first}")
                return image_pixels(img, self.shape[0] == 1)
        except ImageError as exc:
            raise GentoolError(f"SOURCE: image {path} {exc}") from None


def open_source(source: str, device: torch.device | str = "cpu", weights: str = "auto") -> Source:
    """Open and check SOURCE (a checkpoint's model is rebuilt on `device` with the `weights` asked for)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _open_folder(path)
    check_input_file(path, "SOURCE", SOURCE_HELP)
    if weights != "auto" and path.suffix.lower() != ".safetensors":
        raise UsageError(f"--weights: got {weights!r}, but SOURCE {path} is not a checkpoint; leave --weights out")
    if path.suffix.lower() == ".npz":
        npz = NpzImages(path)
        return Source(path, "npz", npz.shape, npz=npz)
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"SOURCE: {path} is not a known kind of input; expected {SOURCE_HELP}")
    ckpt = load_checkpoint(path, device, "SOURCE", weights, SOURCE_HELP)
    c = ckpt.model.config
    return Source(path, "checkpoint", (c.channels, c.image_height, c.image_width), checkpoint=ckpt)


def _file_kind(path: Path) -> str:
    """What a file that is not a zip archive looks like, for messages."""
    head = read_regular(path, 512)[:512]
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array, not an .npz archive (save it with numpy.savez)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickled Python data, which gentool never loads"
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
        return "a text file, not an .npz archive"
    except UnicodeDecodeError:
        return "not an .npz (zip) archive"


class NpzImages:
    """The `images` array of an `.npz`, read lazily: the header is checked when opened (dtype, shape, the size its
    data must have), and `rows` streams the zip member once, keeping only the rows asked for. Works for compressed
    and stored archives alike; nothing is unpickled."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise UsageError(f"SOURCE: {path} is {_file_kind(path)}; expected {SOURCE_HELP}") from None
        except OSError as exc:
            raise GentoolError(f"SOURCE: cannot read {path} ({exc.strerror or exc})") from None
        names = [n[:-4] for n in self._zip.namelist() if n.endswith(".npy")]
        if "images" not in names:
            raise UsageError(f"SOURCE: {path} has no array 'images' (it holds {', '.join(names[:10]) or 'nothing'}); "
                             f"expected uint8 N×H×W×C images under 'images', as `gentool sample` writes")
        self.info = self._zip.getinfo("images.npy")
        with self._open() as member:
            shape, self.offset = self._header(member)
        if len(shape) == 3:
            shape = (*shape, 1)  # N×H×W: grey images without a channel axis
        self.count = shape[0]
        self.shape = (shape[3], shape[1], shape[2])
        self.row_bytes = int(np.prod(shape[1:]))

    def _open(self):
        try:
            return self._zip.open(self.info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
            raise GentoolError(f"SOURCE: cannot read 'images' in {self.path} ({exc})") from None

    def _header(self, member) -> tuple[tuple[int, ...], int]:
        try:
            version = npy.read_magic(member)
            reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran, dtype = reader(member)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise UsageError(f"SOURCE: 'images' in {self.path} is not a readable .npy array ({exc})") from None
        where = f"SOURCE: 'images' in {self.path}"
        if dtype != np.uint8:
            raise UsageError(f"{where} has dtype {dtype}; expected uint8 (0-255) N×H×W×C")
        if fortran:
            raise UsageError(f"{where} is stored in Fortran order; expected a C-ordered N×H×W×C array")
        if len(shape) not in (3, 4) or shape[0] < 1 or (len(shape) == 4 and shape[3] not in (1, 3)):
            raise UsageError(f"{where} has shape {dims(shape)}; expected N×H×W×C with N ≥ 1 and C = 1 or 3")
        if shape[0] > MAX_NPZ_IMAGES or not all(1 <= s <= MAX_SIDE for s in shape[1:3]):
            raise UsageError(f"{where} claims shape {dims(shape)}; at most {MAX_NPZ_IMAGES:,} images of at most "
                             f"{MAX_SIDE}x{MAX_SIDE} pixels are read")
        offset = member.tell()
        size = int(np.prod(shape))
        if self.info.file_size != offset + size:
            raise UsageError(f"{where} claims shape {dims(shape)} ({size:,} bytes) but its data are "
                             f"{self.info.file_size - offset:,} bytes; the file is damaged")
        return tuple(shape), offset

    def rows(self, pick: np.ndarray) -> Iterator[np.ndarray]:
        """The rows at the sorted indices `pick` (N×H×W×C), in chunks of up to CHUNK, reading the member once up
        to the last one asked for."""
        c, h, w = self.shape
        block = max(1, READ_BYTES // self.row_bytes)
        kept: list[np.ndarray] = []
        pending = 0
        with self._open() as member:
            member.read(self.offset)
            for start in range(0, int(pick[-1]) + 1 if len(pick) else 0, block):
                stop = min(start + block, int(pick[-1]) + 1)
                data = self._read(member, (stop - start) * self.row_bytes)
                wanted = pick[(pick >= start) & (pick < stop)] - start
                if len(wanted):
                    rows = np.frombuffer(data, np.uint8).reshape(stop - start, h, w, c)
                    kept.append(rows[wanted].copy())
                    pending += len(wanted)
                if pending >= CHUNK:
                    yield np.concatenate(kept)
                    kept, pending = [], 0
        if kept:
            yield np.concatenate(kept)

    def _read(self, member, size: int) -> bytes:
        try:
            data = member.read(size)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise GentoolError(f"SOURCE: 'images' in {self.path} cannot be read to the end ({exc})") from None
        if len(data) != size:
            raise GentoolError(f"SOURCE: 'images' in {self.path} ends early; the file is truncated")
        return data


def _open_folder(path: Path) -> Source:
    # every name of an image, links and special files included (is_file() left a pipe, a link to a device and a
    # dangling link out without a word): one that is not a regular file is refused, naming it
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FOLDER_SUFFIXES and not
                   (p.is_dir() and not p.is_symlink()))
    for p in files:
        why = not_regular(p)
        if why:
            raise UsageError(f"SOURCE: {p} {why}; a folder of samples holds regular image files only")
    if not files:
        raise UsageError(f"SOURCE: folder {path} holds no PNG or JPEG images; expected {SOURCE_HELP}")
    try:
        with open_image(files[0]) as img:
            shape = (1 if is_grey(img) else 3, img.size[1], img.size[0])
    except ImageError as exc:
        raise GentoolError(f"SOURCE: image {files[0]} {exc}") from None
    return Source(path, "folder", shape, files=files)


def check_geometry(source: Source, expected: tuple[int, int, int], data: str, native=None) -> None:
    """The source's images must have the geometry of the reference data's, `expected` (a folder at the size a
    checkpoint's model draws: `Reference.sized_for`), named `data` in the message. Each side is named as it is:
    `native`, the folder's own geometry, rather than the size it would have been decoded to (a grey model against
    a folder of colour 32×32 images said the folder's were 3×28×28)."""
    if tuple(source.shape) == tuple(expected):
        return
    side = ("SOURCE: {} draws {} images" if source.kind == "checkpoint" else "SOURCE: {} holds {} images").format(
        source.path, shape_text(source.shape))
    theirs = shape_text(native or expected)
    hint = (f"give the --data it was trained on ({source.data_spec})" if source.data_spec else
            "give the --data these images imitate")
    raise UsageError(f"{side} but --data {data} holds {theirs} ones: {shape_differences(source.shape, expected)} "
                     f"differ; {hint}")
