"""Issue 26's attacker hour (see the issue note): what it found beyond the instances the issue named, each class
tested on several instances. Links: the per-user cache and a teacher's couplings folder are gentool's to write in,
so a link inside them is never written through (the couplings: tests/test_distill.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gentool import folder_cache
from gentool.progress import Reporter


class Notes(Reporter):
    """A reporter keeping the lines it is given."""

    def __init__(self):
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def image_folder(root: Path) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)  # cache even this tiny folder
    return tmp_path / "cache" / "gentool" / "folders"


def elsewhere(tmp_path: Path) -> Path:
    """A folder of the user's, with a file in it, that links will point at."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    (path / "precious.txt").write_text("the user's own words")
    return path


def untouched(path: Path) -> bool:
    return sorted(p.name for p in path.iterdir()) == ["precious.txt"] and \
        (path / "precious.txt").read_text() == "the user's own words"


def test_the_decoded_folder_cache_never_writes_through_a_link(tmp_path, cache):
    """cache/gentool/folders being a link: the images are decoded (not cached), a note names the link, and nothing
    is written where it points (the decoded array, its lock)."""
    data = image_folder(tmp_path / "images")
    target = elsewhere(tmp_path)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(target)
    notes = Notes()
    images = folder_cache.load_folder(data, reporter=notes)
    assert len(images) == 6 and untouched(target)
    assert any("not cached" in line and "symbolic link" in line for line in notes.lines), notes.lines


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_special_file_in_a_decoded_folder_entry_is_set_aside_not_waited_on(tmp_path, cache, kind):
    """The entry's images.npy a named pipe (np.load used to block on it forever) or a link to a device: the entry is
    reported damaged, moved aside, and the folder decoded again."""
    data = image_folder(tmp_path / "images")
    folder_cache.load_folder(data, reporter=Notes())
    entry = next(p for p in cache.iterdir() if p.is_dir())
    (entry / folder_cache.IMAGES).unlink()
    if kind == "pipe":
        os.mkfifo(entry / folder_cache.IMAGES)
        threading.Thread(target=release_after, args=(entry / folder_cache.IMAGES, 3.0), daemon=True).start()
    else:
        (entry / folder_cache.IMAGES).symlink_to("/dev/zero")
    notes = Notes()
    started = time.monotonic()
    images = folder_cache.load_folder(data, reporter=notes)
    assert time.monotonic() - started < 2.5 and len(images) == 6
    assert any("damaged" in line and "not a regular file" in line for line in notes.lines), notes.lines


def release_after(path: Path, seconds: float) -> None:
    """Open the writing end of a pipe after `seconds`: a reader blocked on it is released (and its test fails)."""
    time.sleep(seconds)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass
