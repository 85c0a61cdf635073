"""Issue 26, damaged caches: a couplings part whose values changed after it was written (a few images, a label)
with its header intact was read as the teacher's pairs unless one of the two rows re-drawn per part happened to be
among them. Each part now carries a SHA-256 of its values in its header."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_attack_hour4 import couplings_folder

from gentool import couplings as cp
from gentool.errors import GentoolError


def _rewrite(path, change) -> None:
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata=header)  # the header (and its digest) as written


@pytest.mark.parametrize("change", [
    lambda t: t["images"][300].fill_(255),  # one image of 500, not among the rows re-drawn
    lambda t: t["latents"][7].fill_(0.5),  # finite noise, within any bound
])
def test_a_part_changed_after_writing_is_damaged(tmp_path, change):
    folder = couplings_folder(tmp_path / "c")
    _rewrite(cp.part_path(folder, 1), change)
    with pytest.raises(GentoolError, match=r"part_00001.safetensors: its values are not those written"):
        cp.load_couplings(folder)
    assert len(cp.load_couplings(folder, limit=cp.PART)) == cp.PART  # the sound first part alone still reads
    _rewrite(cp.part_path(folder, 0), lambda t: None)  # rewritten with the same values: still whole
    assert len(cp.load_couplings(folder, limit=cp.PART)) == cp.PART


def test_distill_sets_a_changed_part_aside(tmp_path):
    folder = couplings_folder(tmp_path / "c")
    _rewrite(cp.part_path(folder, 1), lambda t: t["images"][300].fill_(255))
    manifest = cp.read_manifest(folder)
    with pytest.warns(UserWarning, match="its values are not those written"):
        done = cp.usable_parts(folder, manifest, lambda k: torch.zeros(cp.PART, 1, 8, 8),
                                  lambda z: torch.zeros(len(z), 1, 8, 8, dtype=torch.uint8))
    assert done == 1 and not cp.part_path(folder, 1).exists()


def test_a_part_whose_digest_was_taken_out_is_damaged_too(tmp_path):
    """Attacker hour 14: a digest that is only checked when present checks nothing once it is stripped."""
    folder = couplings_folder(tmp_path / "c")
    path = cp.part_path(folder, 1)
    with safe_open(str(path), framework="pt") as f:
        header = {k: v for k, v in f.metadata().items() if k != "sha256"}
    tensors = load_file(path)
    tensors["images"][300].fill_(255)
    save_file(tensors, path, metadata=header)
    with pytest.raises(GentoolError, match=r"part_00001.safetensors: its header has no sha256"):
        cp.load_couplings(folder)


def test_an_extractor_whose_digest_was_taken_out_is_damaged(tmp_path):
    from gentool.datatypes import Geometry
    from gentool.metrics.extractor import Extractor, FeatureNet, default_recipe, load_extractor, save_extractor

    geometry = Geometry(1, 8, 8)
    recipe = default_recipe(geometry)
    meta = {"format": "gentool-extractor", "id": "mnist-x", "recipe": recipe.to_dict(),
            "geometry": geometry.to_dict(), "num_classes": 10, "test_accuracy": 0.9, "train_seconds": 1.0}
    path = tmp_path / "e.safetensors"
    save_extractor(path, Extractor(FeatureNet(recipe, geometry, 10), meta))
    with safe_open(str(path), framework="pt") as f:
        header = {k: v for k, v in f.metadata().items() if k != "weights_sha256"}
    save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in load_file(path).items()}, path,
              metadata=header)
    with pytest.raises(ValueError, match="its header has no weights_sha256"):
        load_extractor(path, ident="mnist-x")


@pytest.mark.parametrize("damage", ["values scaled", "digest taken out"])
def test_real_data_statistics_changed_under_their_sidecar_are_set_aside(tmp_path, damage):
    """Attacker hour 14: the cached statistics' features doubled, their .json kept, moved an FID from 104 to 374
    without a word; the sidecar's content fingerprint is of the data files, not of the arrays."""
    import json

    import numpy as np

    from gentool.metrics.stats import read_cache_entry, write_cache_entry

    npz, sidecar = tmp_path / "x.test.npz", tmp_path / "x.test.json"
    features = np.random.default_rng(0).random((60, 4)).astype(np.float32)
    write_cache_entry(npz, sidecar, {"features": features}, {"split": "test", "n": 60})
    shapes = lambda n: {"features": (n, 4)}  # noqa: E731
    assert np.array_equal(read_cache_entry(npz, sidecar, {"split": "test"}, shapes)["features"], features)
    if damage == "values scaled":
        np.savez_compressed(npz, features=features * 2)
    else:
        meta = json.loads(sidecar.read_text())
        del meta["sha256"]
        sidecar.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="its values are not those written.*moved to x.test.npz.bad"):
        assert read_cache_entry(npz, sidecar, {"split": "test"}, shapes) is None
    assert not npz.exists() and (tmp_path / "x.test.npz.bad").exists()
