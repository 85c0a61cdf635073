"""A folder of the user's own images (issue 24 item 3, issue 26 class 4): what was found and skipped is told, the
images are decoded once into a cache keyed by the files' names, sizes and times, the decoded bytes are bounded from
the headers before anything is decoded, and evaluate scores against the held-out part at the model's size."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentool import folder_cache, folders
from gentool.data import load_dataset
from gentool.metrics.extractor import RECIPE_ENV
from gentool.progress import PlainReporter
from test_image_inputs import png
from test_metrics import one_thread  # noqa: F401 (an autouse fixture: tiny networks run faster on one thread)

# Smaller than test_metrics' TINY_RECIPE: one stage, 12 steps (its accuracy is not what is tested here)
RECIPE = json.dumps({"widths": [8], "epochs": 1, "min_steps": 12, "batch_size": 32, "feature_dim": 16})


def own_folder(root: Path, n: int = 24) -> Path:
    """`n` images in cats/ and dogs/ (some a level deeper): JPEG and PNG, sizes from 12x20 up, some grey; a
    broken JPEG, a text file, a PNG whose header claims 60000x60000 pixels and a named pipe."""
    rng = np.random.default_rng(0)
    for k in range(n):
        folder = root / ("cats", "dogs")[k % 2] / ("nested" if k % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 256, (20 - k % 5, 12 + k, 3), dtype=np.uint8))
        (img.convert("L") if k % 4 == 1 else img).save(folder / f"{k:02d}.{'png' if k % 4 < 2 else 'jpg'}")
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "dogs" / "notes.txt").write_text("taken in the garden\n")
    png(root / "dogs" / "huge.png", 60000, 60000, colour=2)
    os.mkfifo(root / "cats" / "pipe.png")
    return root


def load(root: Path, **kwargs) -> tuple:
    told = io.StringIO()
    data = load_dataset(str(root), reporter=PlainReporter(told, every=0), **kwargs)
    return data, told.getvalue()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)  # cache even these few bytes
    return tmp_path / "cache" / "gentool" / "folders"


def test_a_folder_is_told_decoded_once_and_decoded_again_when_it_changes(tmp_path, cache):
    root = own_folder(tmp_path / "own")
    tracemalloc.start()
    try:
        first, told = load(root, image_size=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB"  # the 60000x60000 image was never allocated
    assert first.images.shape == (24, 3, 16, 16) and first.class_names == ["cats", "dogs"]
    assert first.labels.tolist() == [0, 1] * 12
    for needle in ("24 images in 2 class folders (12 each)", "6 grey images made colour (most are colour)",
                   "each decoded to 16x16: 23 not square (centre-cropped), 4 smaller (enlarged)",
                   "skipped 1 file (not PNG/JPEG): dogs/notes.txt", "dogs/huge.png (is 60000x60000 pixels",
                   "cats/broken.jpg (cannot be decoded", "cats/pipe.png (a pipe", "cached the decoded images"):
        assert needle in told, needle
    second, told = load(root, image_size=16)
    assert "read from the cache" in told and "decoded 24" not in told and "skipped 1 file (too large)" in told
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    # the same name and size with new pixels (and a new time): decoded again, the stale entry removed
    changed = root / "cats" / "02.jpg"
    pixels = np.asarray(Image.open(changed))
    Image.fromarray(255 - pixels).save(changed)
    os.utime(changed, ns=(1, 10**18))
    third, told = load(root, image_size=16)
    assert "decoded 24 images" in told and not torch.equal(first.images, third.images)
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1
    # a damaged entry: one line, moved aside, decoded again
    expected = third.images.clone()  # (third maps the file damaged here)
    npy = entries[0] / "images.npy"
    npy.write_bytes(npy.read_bytes()[:-100])
    fourth, told = load(root, image_size=16)
    assert "are damaged" in told and "decoded 24 images" in told and torch.equal(expected, fourth.images)


def test_a_folder_is_listed_once_per_command_and_its_geometry_read_from_its_decoded_cache(tmp_path, cache,
                                                                                       monkeypatch):
    """evaluate of a checkpoint trained on CIFAR-10's folder was silent for ~35 s: it listed the 50,000 files five
    times and read every header again for the folder's geometry, which train had decoded into the cache."""
    root = own_folder(tmp_path / "own")
    load(root, image_size=16)  # as train does: decoded into the cache
    listed, real = [], folders._list_folder
    monkeypatch.setattr(folders, "_list_folder", lambda r: listed.append(r) or real(r))
    with folders.one_listing():
        first = folders.list_folder(root)
        first.files.clear()  # a caller's changes stay in its own copy
        assert len(folders.list_folder(root).files) == 26 and len(listed) == 1
    folders.list_folder(root)
    assert len(listed) == 2  # outside the block: listed again (the folder may have changed)
    monkeypatch.setattr(folder_cache, "read_headers", lambda *a, **k: pytest.fail("headers read again"))
    assert folder_cache.folder_geometry(root, 16).shape == (3, 16, 16)
    with pytest.raises(BaseException, match="headers read again"):
        folder_cache.folder_geometry(root, 15)  # not in the cache at that size: read from the headers


def test_the_split_of_an_unlabelled_folder_is_said_as_parts_of_the_whole(tmp_path):
    listing = folders.Listing(tmp_path, [tmp_path / f"{i:02d}.png" for i in range(60)], [-1] * 60, [(1, 1)] * 60, [])
    header = folders.Header(8, 8, False, "PNG")
    lines = {part: folders.found_lines(folders.split_part(listing, part), [header] * (54 if part == "train" else 6),
                                       None, None)[0] for part in ("train", "test")}
    assert lines["train"] == (f"--data {tmp_path}: 60 images (no class subfolders: unlabelled): 54 for training, 6 "
                              f"(every 10th image of the folder) held out for `evaluate --split test` (and the "
                              f"held-out losses of the families that have them)")
    assert lines["test"].endswith(": 6 images (no class subfolders: unlabelled): every 10th image of the folder, "
                                  "held out from training for `evaluate --split test`")


def test_held_out_part_and_limit(tmp_path, cache):
    root = own_folder(tmp_path / "own", n=44)
    train, told = load(root, image_size=8, part="train", limit=30)
    test, _ = load(root, image_size=8, part="test")
    assert len(train) == 30 and len(test) == 4 and test.labels.tolist() == [0, 1, 0, 1]
    # the whole folder's image files first (the damaged ones too, named below), then how they divide (the held-out
    # count read as a part of the training images before)
    assert ("46 images in 2 class folders: 42 for training (30 of them used, 15 of each class), 4 (every 10th image "
            "of each class) held out for `evaluate --split test`") in told
    whole, _ = load(root, image_size=8)
    rows = {bytes(x.numpy()) for x in whole.images}
    assert all(bytes(x.numpy()) in rows for x in (*train.images, *test.images))
    assert not {bytes(x.numpy()) for x in train.images} & {bytes(x.numpy()) for x in test.images}


def test_decoded_bytes_beyond_the_bound_are_refused_from_the_headers(tmp_path, monkeypatch, invoke):
    monkeypatch.setattr(folders, "memory_bound", lambda: 1 << 30)
    root = tmp_path / "big"
    root.mkdir()
    for i in range(6):  # each within the per-image bound (8192x8192), together 1.1 GiB decoded
        png(root / f"{i}.png", 8192, 8192, colour=2)
    tracemalloc.start()
    try:
        result = invoke("train", "flow", "--data", root, "--out", tmp_path / "run")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2 and peak < 64 << 20, (result.output, peak)
    assert "--data: 6 images of 3x8192x8192 pixels decode to 1.12 GiB; at most 1.00 GiB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_evaluate_scores_the_held_out_part_at_the_samples_size_and_never_stale(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(RECIPE_ENV, RECIPE)
    root = own_folder(tmp_path / "own", n=60)
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=np.random.default_rng(1).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    args = ("evaluate", samples, "--data", root, "--n", "12", "--metrics", "fid,pixels", "--json")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["real_source"] == f"every 10th image of each class in {root.resolve()} at 16x16"
    assert out["n_real"] == 6 and "training the reference extractor" in result.stderr
    assert f"build it ahead with: gentool prepare --data {root} --image-size 16" in " ".join(result.stderr.split())
    assert invoke(*args).stderr.count("computing real-data statistics") == 0  # cached
    os.utime(root / "dogs" / "01.png", ns=(1, 10**18))  # same names and sizes, changed in place
    again = invoke(*args)
    assert "computing real-data statistics" in again.stderr and "training the reference extractor" not in again.stderr


def test_a_stray_subfolder_in_a_flat_folder_is_refused_not_trained_on(tmp_path):
    """300 photos and one image in a subfolder trained on that one image, exit 0 (new-user walk, session 10): loose
    images outnumbering the class folders' are refused, naming both ways out; a stray file beside real class folders
    is still skipped."""
    from gentool.errors import UsageError

    for k in range(3):
        Image.new("RGB", (8, 8), (k, 0, 0)).save(tmp_path / f"p{k}.png")
    (tmp_path / "extra").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "extra" / "one.png")
    with pytest.raises(UsageError, match=r"holds 3 images directly in it but only 1 in its 1 subfolder\(s\) \(extra\)"):
        folders.list_folder(tmp_path)
    for k in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "extra" / f"more{k}.png")
    listing = folders.list_folder(tmp_path)  # 4 in the class folder against 3 loose: those are skipped, as before
    assert len(listing.files) == 4 and sum(why == "not in a class folder" for _, why, _ in listing.skipped) == 3
