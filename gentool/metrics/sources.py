"""What `gentool evaluate` scores: a checkpoint (samples are drawn from it), an `.npz` of images (key `images`,
uint8 N×H×W×C, as `gentool sample` writes) or a folder of PNGs. Every input is checked (shape, dtype, geometry)
and a problem is one line naming SOURCE."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gentool.checkpoint import Checkpoint, load_checkpoint
from gentool.errors import GentoolError, UsageError
from gentool.images import to_uint8

SOURCE_HELP = "a checkpoint (.safetensors), an .npz of images (key 'images', uint8 N×H×W×C) or a folder of PNGs"
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "I;16", "I")  # PIL modes decoded as one channel


@dataclass
class Source:
    """An opened SOURCE: its kind (checkpoint, npz, folder), geometry (C, H, W) and how to get N images from it."""

    path: Path
    kind: str
    shape: tuple[int, int, int]
    checkpoint: Checkpoint | None = None
    array: np.ndarray | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def available(self) -> int | None:
        """How many images the source holds (None: a checkpoint draws any number)."""
        if self.kind == "checkpoint":
            return None
        return len(self.array) if self.kind == "npz" else len(self.files)

    @property
    def data_spec(self) -> str | None:
        """The data set a checkpoint was trained on (its `--data`), else None."""
        return self.checkpoint.data.get("source") if self.checkpoint else None

    def labels(self, n: int) -> torch.Tensor | None:
        """The classes a conditional checkpoint's `n` samples are drawn for (0, 1, …, K−1, 0, … so every class gets
        the same share); None for any other source."""
        return self.checkpoint.model.spread_labels(n) if self.kind == "checkpoint" else None

    def images(self, n: int, seed: int, settings: dict | None = None) -> torch.Tensor:
        """uint8 N×C×H×W: `n` samples drawn with `seed` (for `labels(n)`, with the sampler's `settings`), or a
        seeded random `n` of the stored images (all of them when the source holds fewer)."""
        if self.kind == "checkpoint":
            drawn = self.checkpoint.model.generate(n, torch.Generator().manual_seed(seed), labels=self.labels(n),
                                                   settings=settings)
            return torch.from_numpy(to_uint8(drawn)).permute(0, 3, 1, 2).contiguous()
        count = self.available
        pick = np.arange(count) if n >= count else np.sort(np.random.default_rng(seed).choice(count, n, replace=False))
        if self.kind == "npz":
            return torch.from_numpy(np.ascontiguousarray(self.array[pick])).permute(0, 3, 1, 2).contiguous()
        return torch.from_numpy(np.stack([self._decode(self.files[i]) for i in pick])).permute(0, 3, 1, 2).contiguous()

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("L" if self.shape[0] == 1 else "RGB"))
                grey = img.mode in GREY_MODES
        except (OSError, UnidentifiedImageError) as exc:
            raise GentoolError(f"SOURCE: cannot decode image {path}: {exc}") from None
        if grey != (self.shape[0] == 1):
            raise UsageError(f"SOURCE: {path} is {'grey' if grey else 'colour'}, unlike {self.files[0].name}")
        array = array[:, :, None] if array.ndim == 2 else array
        if array.shape[:2] != self.shape[1:]:
            raise UsageError(f"SOURCE: {path} is {array.shape[1]}x{array.shape[0]} pixels, but "
                             f"{self.files[0].name} is {self.shape[2]}x{self.shape[1]}; all images must be one size")
        return array


def open_source(source: str, device: torch.device | str = "cpu", weights: str = "auto") -> Source:
    """Open and check SOURCE (a checkpoint's model is rebuilt on `device` with the `weights` asked for)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _open_folder(path)
    if not path.exists():
        raise UsageError(f"SOURCE: {path} does not exist; expected {SOURCE_HELP}")
    if weights != "auto" and path.suffix.lower() != ".safetensors":
        raise UsageError(f"--weights: got {weights!r}, but SOURCE {path} is not a checkpoint; leave --weights out")
    if path.suffix.lower() == ".npz":
        return _open_npz(path)
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"SOURCE: {path} is not a known kind of input; expected {SOURCE_HELP}")
    try:
        ckpt = load_checkpoint(path, device, weights=weights)
    except GentoolError as exc:
        raise type(exc)(str(exc).replace("CKPT:", "SOURCE:", 1)) from None
    c = ckpt.model.config
    return Source(path, "checkpoint", (c.channels, c.image_height, c.image_width), checkpoint=ckpt)


def _open_npz(path: Path) -> Source:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise UsageError(f"SOURCE: {path} has no array 'images' (it holds {', '.join(z.files) or 'nothing'}); "
                                 f"expected uint8 N×H×W×C images under 'images', as `gentool sample` writes")
            array = z["images"]
    except (OSError, ValueError) as exc:
        raise GentoolError(f"SOURCE: {path} is not a readable .npz file ({exc})") from None
    if array.dtype != np.uint8:
        raise UsageError(f"SOURCE: 'images' in {path} has dtype {array.dtype}; expected uint8 (0-255) N×H×W×C")
    if array.ndim == 3:
        array = array[..., None]  # N×H×W: grey images without a channel axis
    if array.ndim != 4 or array.shape[3] not in (1, 3) or len(array) == 0:
        raise UsageError(f"SOURCE: 'images' in {path} has shape {tuple(array.shape)}; expected N×H×W×C with "
                         f"N ≥ 1 and C = 1 or 3")
    return Source(path, "npz", (array.shape[3], array.shape[1], array.shape[2]), array=array)


def _open_folder(path: Path) -> Source:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
    if not files:
        raise UsageError(f"SOURCE: folder {path} holds no PNG or JPEG images; expected {SOURCE_HELP}")
    from PIL import Image

    try:
        with Image.open(files[0]) as img:
            channels = 1 if img.mode in GREY_MODES else 3
            shape = (channels, img.size[1], img.size[0])
    except OSError as exc:
        raise GentoolError(f"SOURCE: cannot decode image {files[0]}: {exc}") from None
    return Source(path, "folder", shape, files=files)


def check_geometry(source: Source, expected: tuple[int, int, int], data_name: str) -> None:
    """The source's images must have the reference data's geometry."""
    if tuple(source.shape) != tuple(expected):
        got, want = "x".join(map(str, source.shape)), "x".join(map(str, expected))
        raise UsageError(f"SOURCE: images are {got} (C×H×W) but {data_name} images are {want}; "
                         f"pass --data for the data set these images imitate")
