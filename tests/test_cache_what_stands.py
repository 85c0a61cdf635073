"""Issue 26 leftovers, class: what gentool says when it clears or reads a cache entry is what actually stands at the
entry's path. `gentool doctor --clear-precision` said "precision cache was empty" when a named pipe or a folder
stood at the cache file's path (left there; the next read then moved it aside as "damaged"), and "cleared" for a
link without saying it was one; a decoded-images cache entry that is a file was "damaged (Not a directory)"."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from gentool import folder_cache, precision
from gentool.progress import Reporter


def make(kind: str, path, tmp_path) -> None:
    if kind == "named pipe":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
        (path / "mine.txt").write_text("the user's")
    elif kind == "symbolic link":
        (tmp_path / "mine.json").write_text("the user's")
        path.symlink_to(tmp_path / "mine.json")
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "cache file":
        path.write_text('{"format": 1, "entries": {}}')


@pytest.mark.parametrize("kind, said", [
    ("named pipe", "a named pipe, not a cache file gentool wrote; moved to precision.json.bad"),
    ("directory", "a directory, not a cache file gentool wrote; moved to precision.json.bad"),
    ("symbolic link", "a symbolic link (to {tmp}/mine.json), not a cache file gentool wrote; the link removed"),
    ("dangling link", "a symbolic link (to {tmp}/nowhere), not a cache file gentool wrote; the link removed"),
    ("cache file", "a cache file, removed"),
    ("nothing", None),
])
def test_clearing_the_precision_cache_says_what_stood_there(tmp_path, monkeypatch, kind, said):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = precision.cache_path()
    path.parent.mkdir(parents=True)
    make(kind, path, tmp_path)
    found = precision.clear_cache()
    assert found is None if said is None else found.startswith(said.format(tmp=tmp_path)), found
    assert not os.path.lexists(path)
    if kind == "directory":  # the user's folder is kept, beside
        assert (path.with_name("precision.json.bad") / "mine.txt").read_text() == "the user's"
    if kind == "symbolic link":
        assert (tmp_path / "mine.json").read_text() == "the user's"


def test_doctor_clear_precision_with_a_pipe_there_says_so(tmp_path):
    path = tmp_path / "cache" / "gentool" / precision.CACHE_FILE
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    done = subprocess.run([sys.executable, "-m", "gentool", "doctor", "--threads", "1", "--clear-precision"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())  # stdout in a file wraps at 120 columns between words (never in a path)
    assert f"precision cache cleared: {path} was a named pipe, not a cache file gentool wrote; moved to " \
           f"precision.json.bad" in said  # was: "precision cache was empty: ..."


@pytest.mark.parametrize("kind", ["named pipe", "cache file"])
def test_a_decoded_images_entry_that_is_not_a_folder_is_named_as_what_it_is(tmp_path, kind):
    entry = tmp_path / "entry"
    make(kind, entry, tmp_path)
    said = []
    reporter = Reporter()
    reporter.message = said.append
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert folder_cache.open_entry(entry, "key", reporter) is None
    expected = "a named pipe" if kind == "named pipe" else "a regular file"
    assert any(f"it is {expected}, not a folder gentool wrote" in line for line in said), said
