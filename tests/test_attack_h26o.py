"""What the attacker hour of issue 26 (h26o) found: a folder of images larger than a checkpoint's side gave a
traceback after decoding them all (its own cache refused what it had just written), and a link or pipe in place of
a cache entry whose sidecar was gone or stale was refused on every later evaluate instead of being set aside."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.cache import prepare_entry
from gentool.models.fields import MAX_SIDE
from test_links_and_pipes import use_cache


@pytest.mark.parametrize("size", [(MAX_SIDE + 4, MAX_SIDE + 4), (MAX_SIDE + 8, 64)])
def test_a_folder_of_images_wider_than_a_checkpoint_side_is_refused_before_decoding(tmp_path, monkeypatch, invoke,
                                                                                   size):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "scans"
    root.mkdir()
    for i in range(2):  # within the per-image pixel bound, decodable, and large enough to be cached
        Image.new("L", size, color=i).save(root / f"{i}.png")
    result = invoke("train", "vae", "--data", root, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data:") and "--image-size" in lines[0], result.stderr
    assert f"at most {MAX_SIDE} pixels a side" in lines[0]
    folders = tmp_path / "cache" / "gentool" / "folders"  # nothing decoded, so nothing left behind in the cache
    assert not folders.exists() or not [p for p in folders.iterdir() if p.is_dir()]


def user_file(tmp_path: Path) -> Path:
    precious = tmp_path / "user" / "precious.txt"
    precious.parent.mkdir()
    precious.write_text("the user's\n")
    return precious


@pytest.mark.parametrize("damage", ["link", "dangling link", "pipe", "folder", "hard link"])
def test_a_link_or_pipe_where_a_cache_entry_goes_is_set_aside_not_refused(tmp_path, damage):
    precious = user_file(tmp_path)
    folder = tmp_path / "cache" / "gentool" / "extractors"
    folder.mkdir(parents=True)
    npz, sidecar = folder / "x.test.npz", folder / "x.test.json"  # the sidecar gone: the entry is never read
    make = {"link": lambda: npz.symlink_to(precious), "dangling link": lambda: npz.symlink_to(tmp_path / "gone"),
            "pipe": lambda: os.mkfifo(npz), "folder": lambda: npz.mkdir(), "hard link": lambda: os.link(precious, npz)}
    make[damage]()
    with pytest.warns(UserWarning, match="moved to x.test.npz.bad"):
        prepare_entry(npz, sidecar)
    assert not os.path.lexists(npz) and os.path.lexists(folder / "x.test.npz.bad")
    assert precious.read_text() == "the user's\n"


def test_a_regular_stale_entry_is_left_to_be_replaced(tmp_path, recwarn):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "x.npz").write_bytes(b"an older version's")
    prepare_entry(folder / "x.npz", folder / "x.json")
    assert (folder / "x.npz").read_bytes() == b"an older version's" and not recwarn.list


def test_evaluate_statistics_behind_a_link_without_sidecar_are_computed_again(tmp_path, monkeypatch):
    from gentool.metrics.extractor import get_extractor
    from gentool.metrics.reference import resolve_reference
    from gentool.metrics.stats import real_stats

    precious = user_file(tmp_path)
    cache = use_cache(monkeypatch, tmp_path / "cache")
    reference = resolve_reference("mnist-sample")
    extractor = get_extractor(reference, torch.device("cpu"))
    good = real_stats(extractor, reference, "test")
    npz = next(cache.glob("*.test.npz"))
    npz.with_suffix(".json").unlink()
    npz.unlink()
    npz.symlink_to(precious)
    with pytest.warns(UserWarning, match="it is a symbolic link"):
        again = real_stats(extractor, reference, "test")  # computed again, the link set aside
    assert np.array_equal(again.features, good.features)
    assert np.array_equal(real_stats(extractor, reference, "test").features, good.features)  # from the cache
    assert precious.read_text() == "the user's\n" and npz.is_file() and not npz.is_symlink()


@pytest.mark.parametrize("variable,command", [
    ("GENTOOL_RUNS", ["train", "vae", "--data", "mnist-sample"]),
    ("GENTOOL_SWEEPS", ["sweep", "vae", "--data", "mnist-sample", "--latent-dim", "2,3"])])
@pytest.mark.parametrize("what", ["file", "pipe", "inside a file"])
def test_a_runs_or_sweeps_variable_that_is_no_folder_is_named_not_out(tmp_path, monkeypatch, invoke, variable,
                                                                      command, what):
    precious = user_file(tmp_path)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    monkeypatch.setenv(variable, str({"file": precious, "pipe": pipe, "inside a file": precious / "runs"}[what]))
    result = invoke(*command, "--epochs", "1", "--limit", "64")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {variable}: got ") and "--out" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and precious.read_text() == "the user's\n"


def test_summary_names_only_its_own_options_for_a_model_too_large(invoke):
    result = invoke("summary", "mlp-wgan-gp", "--width", "64")
    assert result.exit_code == 2 and result.stderr.startswith("error: --width/--latent-dim: mlp-wgan-gp"), result.stderr
