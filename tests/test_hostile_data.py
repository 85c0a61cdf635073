"""Hostile data files (issue 26, round 4): MNIST's idx files, CIFAR-10's python files and the decoded-folder cache
are checked field by field, and their sizes held against what their headers claim, before any data are read. Each
refusal is one line naming the file, exit 2; nothing is read in full, downloaded over the files, or hangs."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from gentool.data import load_dataset
from gentool.errors import GentoolError, UsageError

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _grow(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _loop(path: Path, _=None) -> None:
    path.unlink()
    os.symlink(path.name, path)


def _fewer(path: Path, _=None) -> None:
    _patch(path, 4, struct.pack(">I", 200))
    _grow(path, 8 + 200)


@pytest.mark.parametrize("damaged, named, damage, needle", [
    (IMAGES, IMAGES, lambda p: _patch(p, 0, b"\x00\x00\x0d\x05"), "magic number is 0x00000D05"),  # AssertionError
    (IMAGES, IMAGES, lambda p: _patch(p, 0, b"\x00\x00\x0a\x03"), "magic number is 0x00000A03"),  # was a KeyError
    (IMAGES, IMAGES, lambda p: _patch(p, 8, struct.pack(">II", 65535, 65535)), "says 256x65535x65535; expected"),
    (IMAGES, IMAGES, lambda p: _patch(p, 4, struct.pack(">I", 0x7FFFFFFF)), "claims 1,683,627,179,248 bytes"),
    (IMAGES, IMAGES, lambda p: _grow(p, 1 << 30), "holds 1,073,741,808 bytes after its header"),  # was read in full
    (IMAGES, IMAGES, lambda p: _grow(p, 3), "ends after 3 bytes"),
    (LABELS, LABELS, lambda p: _patch(p, 8, b"\xff"), "holds the label 255; expected digits 0 to 9"),
    (LABELS, IMAGES, _fewer, "holds 256 images and"),
    (IMAGES, IMAGES, _loop, "cannot be read (Too many levels of symbolic links)"),  # was taken as missing: download
])
def test_a_damaged_mnist_file_is_one_line_naming_it(mnist_root, tmp_path, damaged, named, damage, needle):
    root = tmp_path / "data"
    shutil.copytree(mnist_root / "MNIST" / "raw", root)
    damage(root / damaged)
    with pytest.raises(GentoolError) as err:  # a damaged file: exit 1 (UsageError, 2, for one that cannot be read)
        load_dataset("mnist", root)
    message = str(err.value)
    assert message.startswith(f"--data-dir: {root / named} ") and needle in message and "\n" not in message, message


def test_the_cli_refuses_a_bad_mnist_header_in_one_line(mnist_root, tmp_path, invoke):
    from test_links_and_pipes import one_line

    root = tmp_path / "data"
    shutil.copytree(mnist_root / "MNIST" / "raw", root)
    _patch(root / IMAGES, 0, b"\x00\x00\x0d\x05")
    result = invoke("train", "vae", "--data", "mnist", "--data-dir", root, "--epochs", "1", "--out", tmp_path / "run")
    one_line(result, 1, "--data-dir", IMAGES, "magic number")  # a damaged file (docs/guides/batch-jobs.md)
    assert not (tmp_path / "run").exists()


@pytest.fixture()
def offline(monkeypatch):
    """torchvision's downloads go to a local port nothing listens on (as without a network)."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")


@pytest.mark.parametrize("name", ["data_batch_1", "cifar-10-python.tar.gz"])
def test_a_cifar_file_far_larger_than_cifar_is_refused_before_its_checksum(cifar_official, offline, name):
    """torchvision checksums a file before reading it: 40 GiB of holes took a minute or more to be refused."""
    if name.endswith(".gz"):  # the archive alone, as downloaded
        shutil.rmtree(cifar_official / "cifar-10-batches-py")
    path = cifar_official / "cifar-10-batches-py" / name if name.startswith("data") else cifar_official / name
    path.touch()
    _grow(path, 1 << 30)
    with pytest.raises(UsageError, match=rf"--data-dir: {path} has 1,073,741,824 bytes; CIFAR-10's file"):
        load_dataset("cifar10", cifar_official)


def test_a_cifar_file_that_is_a_dangling_link_is_refused_not_downloaded_over(cifar_official, offline):
    meta = cifar_official / "cifar-10-batches-py" / "batches.meta"
    meta.unlink()
    os.symlink(cifar_official / "gone", meta)
    with pytest.raises(UsageError, match="is a symbolic link to .*gone, which leads to no file"):
        load_dataset("cifar10", cifar_official)


@pytest.mark.parametrize("claim", ["more images", "huge side", "four channels"])
def test_a_folder_cache_entry_claiming_more_than_the_folder_holds_is_set_aside(tmp_path, monkeypatch, claim):
    """A consistent entry (array and meta.json agree) that claims more images than the folder has files, or a shape
    no folder decodes to, is damage: moved aside and decoded again (it was served: three times the images)."""
    import json

    import numpy as np

    from gentool import folder_cache
    from test_attack_hour import Notes, image_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)
    data = image_folder(tmp_path / "images")
    folder_cache.load_folder(data, reporter=Notes())
    entry = next(p for p in (tmp_path / "cache" / "gentool" / "folders").iterdir() if p.is_dir())
    meta = json.loads((entry / folder_cache.META).read_text())
    images = np.load(entry / folder_cache.IMAGES)
    forged = {"more images": np.concatenate([images] * 3), "huge side": np.zeros((6, 3, 8, 5000), np.uint8),
              "four channels": np.zeros((6, 4, 8, 8), np.uint8)}[claim]
    np.save(entry / folder_cache.IMAGES, forged)
    meta.update(shape=list(forged.shape), labels=meta["labels"] * (len(forged) // 6))
    (entry / folder_cache.META).write_text(json.dumps(meta))
    notes = Notes()
    loaded = folder_cache.load_folder(data, reporter=notes)
    assert loaded.images.shape == (6, 3, 8, 8)
    assert any("damaged" in line and "not what the folder can decode to" in line for line in notes.lines), notes.lines


def test_the_cache_setting_is_named_when_it_cannot_hold_the_cache(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME/gentool a file: one line naming the variable (was a bare 'Not a directory', exit 1); a
    relative XDG_CACHE_HOME is ignored, as the XDG specification says, with a warning."""
    from gentool import cache
    from gentool.errors import UsageError

    (tmp_path / "gentool").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="XDG_CACHE_HOME: the cache folder .* is not a folder"):
        cache.cache_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.warns(UserWarning, match="relative path"):
        assert cache.cache_dir() == tmp_path / "home" / ".cache" / "gentool"
