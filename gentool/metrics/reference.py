"""The real data set generated images are compared with (labelled, or a folder of images without classes): where
its training and held-out splits live, and a cheap fingerprint of its files so that cached extractors and statistics
are never reused for other data."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from pathlib import Path

from gentool.data import (IMAGE_SUFFIXES, MNIST_FILES, ImageData, load_dataset, mnist_folder, peek_geometry,
                          resolve_data_dir)
from gentool.errors import UsageError, bad_value
from gentool.evaluate_options import SPLITS
from gentool.folders import held_out, list_folder

BUILTIN = ("mnist", "cifar10", "mnist-sample")
_TORCHVISION_DIRS = {"mnist": "MNIST/raw", "cifar10": "cifar-10-batches-py"}


@dataclass(frozen=True)
class Reference:
    """A data set: `name` (for file names), how to load its splits, and what `--data` said; an image folder's images
    are decoded to image_size² when that is set (the size a model was trained at)."""

    name: str
    spec: str
    data_dir: str | None = None
    train_folder: Path | None = None
    test_folder: Path | None = None
    image_size: int | None = None

    @cached_property  # a frozen dataclass still has its __dict__: the folder is listed once
    def labelled(self) -> bool:
        """Whether it has classes to train a classifier on: a built-in data set, or a folder with at least two class
        subfolders (one class teaches a classifier nothing). Else its extractor learns a pretext task."""
        return self.train_folder is None or len(list_folder(self.train_folder).classes) >= 2

    @property
    def holdout(self) -> bool:
        """True for a folder with no separate test split (every HOLDOUT_EVERY-th image of each class is held out)."""
        return self.train_folder is not None and self.test_folder is None

    def describe_split(self, split: str) -> str:
        """Where a split comes from, for messages and results."""
        if self.train_folder is None:
            return f"{self.name} {split} split"
        size = f" at {self.image_size}x{self.image_size}" if self.image_size else ""
        if self.holdout:
            part = "" if split == "test" else "all but "
            return f"{part}{held_out(self.labelled)}{' in' if self.labelled else ''} {self.train_folder}{size}"
        return f"{self.test_folder if split == 'test' else self.train_folder}{size}"

    def load(self, split: str, reporter=None) -> ImageData:
        """The split's images and labels (-1: an unlabelled folder's)."""
        if self.train_folder is None:
            data = load_dataset(self.spec, self.data_dir, train=split == "train")
        else:
            folder = self.test_folder if split == "test" and not self.holdout else self.train_folder
            data = load_dataset(str(folder), image_size=self.image_size, part=split if self.holdout else None,
                                reporter=reporter)
        if len(data) == 0:
            raise bad_value("--data", self.spec, f"images in its {split} split")
        return data

    def sized_for(self, shape: tuple[int, int, int]) -> "Reference":
        """This reference with a folder's images decoded to the side of square images of C×H×W `shape` (what a
        model trained with --image-size draws) when they do not have that geometry as they are."""
        if self.train_folder is None or shape[1] != shape[2]:
            return self
        try:
            native = peek_geometry(str(self.train_folder)).shape
        except UsageError:  # images of several sizes: only a size given makes them one geometry
            native = None
        return self if native == tuple(shape) else replace(self, image_size=shape[1])

    def at_size(self, image_size: int | None) -> "Reference":
        """This reference as a model trained with --image-size `image_size` draws it (None: as it is)."""
        if image_size is None or self.train_folder is None:
            return self
        channels = reference_geometry(replace(self, image_size=image_size)).shape[0]  # mixed sizes too
        return self.sized_for((channels, image_size, image_size))

    def fingerprint(self) -> str:
        """A short hash of the data files' relative names and sizes (and the image size they are decoded to):
        cheap, and different for different data."""
        return self._digest(times=False)

    def content_fingerprint(self) -> str:
        """`fingerprint` with every file's modification time: a folder changed in place (same names and sizes)
        gets a new one, so statistics of its images are never served stale."""
        return self._digest(times=True)

    def _digest(self, times: bool) -> str:
        digest = hashlib.sha256(self.spec.encode() if self.train_folder is None else b"folder")
        for root in self._roots():
            _digest_tree(digest, root, root.name, images_only=self.train_folder is not None, times=times)
        if self.image_size:
            digest.update(f"size:{self.image_size}".encode())
        return digest.hexdigest()[:8]

    def _roots(self) -> list[Path]:
        if self.train_folder is not None:
            return [p for p in (self.train_folder, self.test_folder) if p is not None]
        if self.spec == "mnist-sample":
            with resources.as_file(resources.files("gentool") / "resources" / "mnist_sample.npz") as path:
                return [Path(path)]
        root = resolve_data_dir(self.data_dir)
        if self.spec == "mnist":  # its four files may also lie flat in the data folder: digest just those
            folder = mnist_folder(root)
            if folder is None or folder == root / _TORCHVISION_DIRS["mnist"]:
                return [folder] if folder is not None else []
            return [folder / name for name in MNIST_FILES]
        root = root / _TORCHVISION_DIRS[self.spec]
        return [root] if root.exists() else []


def own_shape(reference: Reference) -> tuple[int, int, int]:
    """The C×H×W of the reference's images as its files have them, for messages: a folder decoded at a model's
    size (`Reference.sized_for`) by its own size; the decoded one where its images have several."""
    try:
        return peek_geometry(str(reference.train_folder or reference.spec)).shape
    except UsageError:
        return reference_geometry(reference).shape


def reference_geometry(reference: Reference):
    """The geometry of the reference's images as it is loaded (a folder: at its image size, when set)."""
    return peek_geometry(str(reference.train_folder or reference.spec), reference.image_size)


def _digest_tree(digest, path: Path, name: str, images_only: bool, times: bool = False) -> None:
    """Feed `name:size;` (with `times`, `name:size:mtime_ns;`) of `path` (a file) or of every file below it (by
    relative name, sorted) into `digest`."""
    def stamp(info) -> str:
        return f"{info.st_size}:{info.st_mtime_ns}" if times else f"{info.st_size}"

    if not path.is_dir():
        digest.update(f"{name}:{stamp(path.stat())};".encode())
        return
    with os.scandir(path) as entries:  # scandir: a 50,000-image folder takes a second, not several
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir():
                _digest_tree(digest, Path(entry.path), f"{name}/{entry.name}", images_only, times)
            elif not images_only or Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                digest.update(f"{name}/{entry.name}:{stamp(entry.stat())};".encode())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "data"


def resolve_reference(data: str | None, data_dir: str | None = None) -> Reference:
    """The reference for `--data`: mnist, cifar10, mnist-sample or an image folder (with class subfolders or not).
    For a folder named train/ the held-out split is its sibling test/ (and the other way round); a folder holding
    train/ and test/ uses both; any other folder holds out every 10th image of each class (of the folder, when
    unlabelled)."""
    if not data:
        raise UsageError("--data: missing; expected mnist, cifar10, mnist-sample or a folder of images")
    if data.lower() in BUILTIN:
        return Reference(data.lower(), data.lower(), data_dir)
    path = Path(data).expanduser()
    if not path.is_dir():
        raise bad_value("--data", data, "mnist, cifar10, mnist-sample or an existing folder of images")
    path = path.resolve()
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test, name = path / "train", path / "test", path.name
    elif path.name in SPLITS and (path.parent / _other(path.name)).is_dir():
        pair = {path.name: path, _other(path.name): path.parent / _other(path.name)}
        train, test, name = pair["train"], pair["test"], path.parent.name
    else:
        train, test, name = path, None, path.name
    return Reference(_slug(name), str(path), None, train, test)


def training_folder(data: str) -> tuple[str, str | None]:
    """The folder `train --data FOLDER` trains on and the part of it: a folder holding train/ and test/ trains on
    train/; a folder with no test/ beside it trains on all but the every-10th image of each class that evaluate
    and the held-out losses score (part "train"); any other folder, all of it."""
    path = Path(data).expanduser()
    if not path.is_dir():
        return data, None  # load_dataset says what is wrong with it
    ref = resolve_reference(data)
    if ref.holdout:
        return data, "train"
    return (str(ref.train_folder), None) if ref.train_folder == path.resolve() / "train" else (data, None)


def _other(split: str) -> str:
    return "train" if split == "test" else "test"
