"""Finite, well-typed and impossible values in gentool's own caches (ninth attacker pass, session 10): damage,
moved aside and rebuilt, as NaN and wrong shapes are."""

import json
import os

import pytest
import torch

import gentool.precision as d


@pytest.mark.parametrize("entry", [{"fp32": 0.01, "bf16": 1e-9, "measured": 1.0},  # a 1 ns probe
                                   {"fp32": 0.01, "bf16": 0.005, "measured": 4e10}])  # measured in the year 3237
def test_a_precision_entry_no_probe_could_have_made_is_set_aside(tmp_path, entry):
    cache = tmp_path / "precision.json"
    cache.write_text(json.dumps({"format": 1, "entries": {"0" * 24: entry}}))
    with pytest.warns(UserWarning, match="damaged"):
        assert d.read_cache(cache, now=2e9) == {}
    assert (tmp_path / "precision.json.bad").exists()


@pytest.mark.parametrize("forge, says", [(lambda m: m.update(labels=[-1] + m["labels"][1:]), "labels"),
                                         (lambda m: m.update(class_names=["a", "a"]), "class names repeat")])
def test_a_folder_cache_entry_with_impossible_labels_or_names_is_set_aside(tmp_path, monkeypatch, forge, says):
    from gentool import folder_cache
    from test_attack_hour import Notes, image_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)
    data = image_folder(tmp_path / "images")
    good = folder_cache.load_folder(data, reporter=Notes())
    entry = next(p for p in (tmp_path / "cache" / "gentool" / "folders").iterdir() if p.is_dir())
    meta = json.loads((entry / folder_cache.META).read_text())
    forge(meta)
    (entry / folder_cache.META).write_text(json.dumps(meta))
    notes = Notes()
    again = folder_cache.load_folder(data, reporter=notes)
    assert any("damaged" in line and says in line for line in notes.lines), notes.lines
    assert torch.equal(again.labels, good.labels)


@pytest.mark.parametrize("change", ["pixels", "labels swapped", "digest taken out"])
def test_a_folder_cache_entry_whose_values_changed_is_set_aside(tmp_path, monkeypatch, change):
    """Attacker hour 14: 50 images inverted in the cached images.npy, meta.json intact, were trained on as "the
    folder's files, unchanged since"."""
    import numpy as np

    from gentool import folder_cache
    from test_attack_hour import Notes, image_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)
    data = image_folder(tmp_path / "images")
    good = folder_cache.load_folder(data, reporter=Notes())
    good_images = good.images.clone()  # (memory-mapped from the entry, which the change below rewrites)
    entry = next(p for p in (tmp_path / "cache" / "gentool" / "folders").iterdir() if p.is_dir())
    meta = json.loads((entry / folder_cache.META).read_text())
    if change == "pixels":
        images = np.load(entry / folder_cache.IMAGES)
        images[:1] = 255 - images[:1]
        np.save(entry / folder_cache.IMAGES, images)
    elif change == "labels swapped":
        assert len(set(meta["labels"])) > 1
        meta["labels"] = meta["labels"][::-1]
    else:
        del meta["sha256"]
    (entry / folder_cache.META).write_text(json.dumps(meta))
    notes = Notes()
    again = folder_cache.load_folder(data, reporter=notes)
    assert any("damaged" in line and "SHA-256" in line for line in notes.lines), notes.lines
    assert torch.equal(again.images, good_images) and torch.equal(again.labels, good.labels)


@pytest.mark.parametrize("kind", ["file", "folder", "link"])
def test_an_entry_damaged_again_and_again_keeps_a_bounded_number_of_copies(tmp_path, kind):
    """Every damaged copy was kept (NAME.bad, .bad1, ... without end): a cache damaged on every run filled the disk."""
    from gentool.cache import KEEP_ASIDE, put_aside

    entry, decoy = tmp_path / "cache" / "e", tmp_path / "decoy"
    entry.parent.mkdir()
    decoy.mkdir()
    (decoy / "keep").write_text("the user's")
    for k in range(KEEP_ASIDE + 3):
        if kind == "file":
            entry.write_text(f"damaged {k}")
        elif kind == "folder":
            entry.mkdir()
            (entry / "part").write_text(f"damaged {k}")
            (entry / "out").symlink_to(decoy)  # removed with its folder, never followed
        else:
            entry.symlink_to(decoy)
        said = put_aside(entry)
        assert not os.path.lexists(entry)
        assert ("moved to" in said) == (k < KEEP_ASIDE), said
    assert sorted(p.name for p in entry.parent.iterdir()) == ["e.bad", "e.bad1", "e.bad2"]
    assert (decoy / "keep").read_text() == "the user's"


def test_a_cache_without_room_for_an_entry_is_refused_before_the_work(tmp_path, monkeypatch):
    """evaluate trained the extractor for minutes on a cache disk that could not hold it (twelfth attacker hour):
    the room the files need is checked with the probe, before the work."""
    from collections import namedtuple

    from gentool import cache
    from gentool.data import Geometry
    from gentool.errors import GentoolError
    from gentool.metrics.extractor import default_recipe, extractor_bytes

    geometry = Geometry(1, 28, 28, 10)
    need = extractor_bytes(default_recipe(geometry), geometry)
    assert 300 << 10 < need < 1 << 20  # MNIST's extractor file: about 430 KiB
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: usage(1 << 30, 0, need - 1))
    with pytest.raises(GentoolError, match=r"XDG_CACHE_HOME: only .* MiB free in .*; the cache's e.safetensors needs "
                                           r"about 0.4 MiB; free some space"):
        cache.prepare_entry(tmp_path / "c" / "e.safetensors", need=need)
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: usage(1 << 30, 0, need))
    cache.prepare_entry(tmp_path / "c" / "e.safetensors", need=need)
