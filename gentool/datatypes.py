"""The data layer's plain types — an image geometry, a split in memory — in a module that imports
no other of gentool's, so the loaders (folders, their cache, a teacher's couplings) and `gentool.data` can share
them without importing each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def class_names_problem(names: list, classes: int) -> str | None:
    """What is wrong with class names read from a file for `classes` classes (None: nothing, or no names): each
    class named once, as a data set's class folders name them."""
    if names and (len(names) != classes or len(set(names)) != len(names)):
        return f"its {len(names)} class names do not name its {classes} classes once each"
    return None


@dataclass(frozen=True)
class Geometry:
    """Image geometry (channels × height × width) and the number of classes labels may take."""

    channels: int
    height: int
    width: int
    num_classes: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict:
        return asdict(self)


def shape_text(shape) -> str:
    """C×H×W images as a message names them: 'grey 28×28 (1×28×28)', 'colour 32×32 (3×32×32)'."""
    c, h, w = shape
    kind = {1: "grey", 3: "colour"}.get(c, f"{c}-channel")
    return f"{kind} {h}×{w} ({c}×{h}×{w})"


def shape_differences(ours, theirs) -> str:
    """What differs between two C×H×W shapes, ours first: 'the channels (1 against 3)', 'the size (28×28 against
    32×32)' or both."""
    parts = [f"the channels ({ours[0]} against {theirs[0]})"] if ours[0] != theirs[0] else []
    if tuple(ours[1:]) != tuple(theirs[1:]):
        parts.append(f"the size ({ours[1]}×{ours[2]} against {theirs[1]}×{theirs[2]})")
    return " and ".join(parts)


@dataclass
class ImageData:
    """A whole split in memory: `images` uint8 N×C×H×W, `labels` int64 N (-1 when unlabelled). Couplings (a
    teacher's samples, `gentool.couplings`) also hold `latents`, the noise each image was drawn from, and `origin`:
    the data set the teacher imitates (`source`), the teacher and the couplings folder."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    geometry: Geometry
    class_names: list[str]
    latents: torch.Tensor | None = None
    origin: dict | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def limit(self, n: int | None) -> "ImageData":
        """The first `n` images (all when `n` is None)."""
        if n is None or n >= len(self):
            return self
        latents = None if self.latents is None else self.latents[:n]
        return ImageData(self.name, self.images[:n], self.labels[:n], self.geometry, self.class_names, latents,
                         self.origin)
