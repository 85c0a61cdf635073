"""The real, labelled data set generated images are compared with: where its training and held-out splits live, and
a cheap fingerprint of its files so that cached extractors and statistics are never reused for other data."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gentool.data import IMAGE_SUFFIXES, MNIST_FILES, ImageData, load_dataset, mnist_folder, resolve_data_dir
from gentool.errors import UsageError, bad_value
from gentool.evaluate_options import SPLITS
BUILTIN = ("mnist", "cifar10", "mnist-sample")
HOLDOUT_EVERY = 10  # a folder with no test/ sibling holds out every 10th image of each class
_TORCHVISION_DIRS = {"mnist": "MNIST/raw", "cifar10": "cifar-10-batches-py"}


@dataclass(frozen=True)
class Reference:
    """A labelled data set: `name` (for file names), how to load its splits, and what `--data` said."""

    name: str
    spec: str
    data_dir: str | None = None
    train_folder: Path | None = None
    test_folder: Path | None = None

    @property
    def holdout(self) -> bool:
        """True for a folder with no separate test split (every HOLDOUT_EVERY-th image of each class is held out)."""
        return self.train_folder is not None and self.test_folder is None

    def describe_split(self, split: str) -> str:
        """Where a split comes from, for messages and results."""
        if self.train_folder is None:
            return f"{self.name} {split} split"
        if self.holdout:
            part = "every" if split == "test" else "all but every"
            return f"{part} {HOLDOUT_EVERY}th image of each class in {self.train_folder}"
        return str(self.test_folder if split == "test" else self.train_folder)

    def load(self, split: str) -> ImageData:
        """The split's images and labels; labels are required (the extractor is a classifier)."""
        if self.train_folder is None:
            data = load_dataset(self.spec, self.data_dir, train=split == "train")
        elif self.holdout:
            data = _every_nth(load_dataset(str(self.train_folder)), split == "test")
        else:
            data = load_dataset(str(self.test_folder if split == "test" else self.train_folder))
        if len(data) == 0 or bool((data.labels < 0).any()):
            raise bad_value("--data", self.spec, "labelled images (an image folder needs one subfolder per class)")
        return data

    def fingerprint(self) -> str:
        """A short hash of the data files' relative names and sizes: cheap, and different for different data."""
        digest = hashlib.sha256(self.spec.encode() if self.train_folder is None else b"folder")
        for root in self._roots():
            _digest_tree(digest, root, root.name, images_only=self.train_folder is not None)
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


def _digest_tree(digest, path: Path, name: str, images_only: bool) -> None:
    """Feed `name:size;` of `path` (a file) or of every file below it (by relative name, sorted) into `digest`."""
    if not path.is_dir():
        digest.update(f"{name}:{path.stat().st_size};".encode())
        return
    with os.scandir(path) as entries:  # scandir: a 50,000-image folder takes a second, not several
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir():
                _digest_tree(digest, Path(entry.path), f"{name}/{entry.name}", images_only)
            elif not images_only or Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                digest.update(f"{name}/{entry.name}:{entry.stat().st_size};".encode())


def _every_nth(data: ImageData, held_out: bool) -> ImageData:
    seen: dict[int, int] = {}
    keep = []
    for i, label in enumerate(data.labels.tolist()):
        rank = seen[label] = seen.get(label, -1) + 1
        if (rank % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == held_out:
            keep.append(i)
    return ImageData(data.name, data.images[keep], data.labels[keep], data.geometry, data.class_names)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "data"


def resolve_reference(data: str | None, data_dir: str | None = None) -> Reference:
    """The reference for `--data`: mnist, cifar10, mnist-sample or a folder with class subfolders. For a folder
    named train/ the held-out split is its sibling test/ (and the other way round); a folder holding train/ and
    test/ uses both; any other folder holds out every 10th image of each class."""
    if not data:
        raise UsageError("--data: missing; expected mnist, cifar10, mnist-sample or a folder of labelled images")
    if data.lower() in BUILTIN:
        return Reference(data.lower(), data.lower(), data_dir)
    path = Path(data).expanduser()
    if not path.is_dir():
        raise bad_value("--data", data, "mnist, cifar10, mnist-sample or an existing folder of labelled images")
    path = path.resolve()
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test, name = path / "train", path / "test", path.name
    elif path.name in SPLITS and (path.parent / _other(path.name)).is_dir():
        pair = {path.name: path, _other(path.name): path.parent / _other(path.name)}
        train, test, name = pair["train"], pair["test"], path.parent.name
    else:
        train, test, name = path, None, path.name
    return Reference(_slug(name), str(path), None, train, test)


def _other(split: str) -> str:
    return "train" if split == "test" else "test"
