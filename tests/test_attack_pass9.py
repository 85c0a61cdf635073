"""The ninth attacker pass's leftovers (issue 26): finite, well-typed values that no gentool run writes. Couplings
a user trains on whose noise is beyond any standard normal draw or whose labels name a class for an unconditional
teacher are refused; the step copies --checkpoint-minutes keeps are counted before a run starts (with --max-minutes)
and stop, with a warning, when the disk runs short, whatever the interval."""

from __future__ import annotations

import warnings
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_attack_hour4 import couplings_folder
from test_attack_hour6 import save_part

from gentool import couplings as cp
from gentool import rundir
from gentool.errors import GentoolError


@pytest.mark.parametrize("key, value, said", [("latents", 60000.0, "beyond ±12"), ("labels", 3, "labels hold 3")])
def test_couplings_with_impossible_values_are_refused(tmp_path, key, value, said):
    folder = couplings_folder(tmp_path / "c")
    tensors = load_file(cp.part_path(folder, 1))
    save_part({**tensors, key: torch.full_like(tensors[key], value)}, cp.part_path(folder, 1))
    with pytest.raises(GentoolError, match=said):
        cp.load_couplings(folder)
    assert len(cp.load_couplings(folder, limit=500)) == 500  # the sound first part alone still reads


@pytest.mark.parametrize("minutes, max_minutes, steps, copies", [
    (5, None, 10**6, 0),     # the run's length in minutes is unknown: each copy checks its room when due
    (5, 60, 10**6, 12),
    (1e-300, 60, 1_000, 1_000),  # shorter than a step: at most one copy a step
    (0, 60, 1_000, 0),
    (5, 60, None, 12),  # a sweep's plan (steps not known yet): the intervals alone bound them
])
def test_the_start_counts_the_step_copies(minutes, max_minutes, steps, copies):
    opts = SimpleNamespace(checkpoint_minutes=minutes, max_minutes=max_minutes)
    assert rundir.kept_copies(opts, steps) == copies


def test_step_copies_stop_with_one_warning_when_the_disk_runs_short(tmp_path, monkeypatch):
    last = tmp_path / "last.safetensors"
    last.write_bytes(b"x" * 1000)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage(10**6, 0, 2999))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = set()
        assert not rundir.room_for_copy(last, 1e-300, warned) and not rundir.room_for_copy(last, 1e-300, warned)
        assert not rundir.room_for_copy(last, 1e-300, set())  # another run (a sweep's next trial) warns again
    assert len(caught) == 2 and "no more step_*.safetensors copies" in str(caught[0].message)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage(10**6, 0, 3000))
    assert rundir.room_for_copy(last, 1e-300, warned)


def test_a_relative_home_is_not_used_for_the_cache(tmp_path, monkeypatch):
    from gentool.cache import cache_dir

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "relative/home")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="HOME='relative/home' is a relative path; using the account's home"):
        folder = cache_dir()
    assert folder.is_absolute() and not (tmp_path / "relative").exists()


def test_extractor_counts_no_training_had_are_damage():
    from gentool import schema
    from gentool.metrics.extractor import EXTRACTOR_META

    meta = {"format": "gentool-extractor", "id": "x", "recipe": {}, "num_classes": 10, "test_accuracy": 0.9,
            "train_seconds": 1.0, "geometry": {"channels": 1, "height": 28, "width": 28}}
    schema.check({**meta, "n_train": 60000}, EXTRACTOR_META, "meta")
    with pytest.raises(schema.Invalid, match="n_train"):
        schema.check({**meta, "n_train": -3}, EXTRACTOR_META, "meta")



@pytest.mark.parametrize("forge, says", [
    (lambda m: m.update(class_names=[str(i) for i in range(11)]), "11 class names do not name its 10 classes"),
    (lambda m: m.update(class_names=["a"] * 10), "class names do not name"),
    (lambda m: m.update(kind="rotation-pretext"), "kind 'rotation-pretext' is not 'classifier'"),
    (lambda m: m.update(kind=["x"]), "is not 'classifier'"),
    (lambda m: m["recipe"].update(task="rotation"), "kind 'classifier' is not 'rotation-pretext'"),
    (lambda m: (m["recipe"].update(task="rotation"), m.update(kind="rotation-pretext")), "names 10 classes, not 4")])
def test_extractor_metadata_contradicting_its_task_or_classes_is_damage(tmp_path, forge, says):
    """Values each well-typed but contradicting each other (attacker hour h26u, F6): the metric JSONs would say the
    extractor was what it is not."""
    from gentool.metrics.extractor import Extractor, FeatureNet, default_recipe, load_extractor, save_extractor
    from gentool.metrics.pretext import ROTATION
    from gentool.datatypes import Geometry

    geometry = Geometry(1, 8, 8)
    recipe = default_recipe(geometry)
    meta = {"format": "gentool-extractor", "id": "x", "recipe": recipe.to_dict(), "geometry": geometry.to_dict(),
            "num_classes": 10, "test_accuracy": 0.9, "train_seconds": 1.0, "kind": "classifier"}
    save_extractor(tmp_path / "good.safetensors", Extractor(FeatureNet(recipe, geometry, 10), meta))
    assert load_extractor(tmp_path / "good.safetensors").meta["kind"] == "classifier"
    forge(meta)
    task = meta["recipe"].get("task", "classes")
    net = FeatureNet(default_recipe(geometry, task) if task == ROTATION else recipe, geometry, 10)
    save_extractor(tmp_path / "bad.safetensors", Extractor(net, meta))
    with pytest.raises(ValueError, match=says):
        load_extractor(tmp_path / "bad.safetensors")


def test_by_class_row_names_use_a_font_with_accented_letters():
    """Row names in DejaVu Sans (matplotlib's): 'ß' of a new user's class folder drew as a box in Pillow's bitmap
    font."""
    from gentool.images import _row_font

    font = _row_font()
    assert getattr(font, "path", "").endswith("DejaVuSans.ttf")
    assert font.getbbox("ß")[2] > 0


def test_a_hook_cannot_retype_the_trainers_fields_nor_nest_a_key_too_deep(tmp_path):
    """The tenth hour: `record["epoch"] = 1.0` (equal to 1) and a 100-level key in the document passed the mend."""
    from gentool import schema
    from gentool.history import HISTORY, RunHistory

    history = RunHistory({"epochs": [{"epoch": 1, "step": 2}], "events": []})
    history.records[0].update(epoch=1.0, step=True)
    deep = {}
    for _ in range(100):
        deep = {"x": deep}
    history.doc["zzz"] = deep
    with pytest.warns(UserWarning, match="a hook changed"):
        history.write(tmp_path / "metrics.json")
    schema.read(tmp_path / "metrics.json", HISTORY)  # read back as every command reads it
    # (issue 26: what lies deeper than gentool reads is written null, rather than the key dropped)
    assert type(history.records[0]["epoch"]) is int and schema.depth(history.doc) == schema.MAX_DEPTH


def test_an_ascii_output_encoding_gets_no_traceback(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run(["gentool", "models"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_pixel_histogram_disagreeing_with_the_moments_is_damage():
    import numpy as np

    from gentool.metrics.stats import check_values

    images = np.random.default_rng(0).integers(0, 256, (4, 6))  # 4 images of 6 values
    hist = np.bincount(images.ravel(), minlength=256).astype(float)
    moments = np.stack([images.sum(0), (images.astype(float) ** 2).sum(0)]).astype(float)
    check_values({"pixel_hist": hist, "pixel_moments": moments}, 4)
    with pytest.raises(ValueError, match="disagree"):
        check_values({"pixel_hist": np.roll(hist, 128), "pixel_moments": moments}, 4)


def test_a_sweep_worker_stopped_while_it_imports_leaves_no_traceback(tmp_path):
    """The tenth hour: a sweep stopped while its workers still imported torch left a KeyboardInterrupt traceback
    in each worker's log (the parent's own line was clean)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "gentool.sweep_workers", str(tmp_path / "none"), "0", "1", "{}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.3)  # inside its imports (torch takes seconds)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode in (130, 1) and "Traceback" not in out, out


def test_one_row_copied_to_every_image_is_damage():
    """F5's weaker case (h26u): cached statistics whose every image has the first image's features and class
    probabilities. A few copies of one picture are a user's odd folder, not damage."""
    import numpy as np

    from gentool.metrics.stats import check_values

    rng = np.random.default_rng(0)
    features, probs = rng.random((60, 8)), np.full((60, 4), 0.25)
    probs[:, 0] = rng.random(60) * 0.5
    probs[:, 1] = 0.5 - probs[:, 0]
    check_values({"features": features, "probs": probs}, 60)
    for name, rows in (("features", features), ("probs", probs)):
        with pytest.raises(ValueError, match=f"{name} holds the same row for every one of its 60 images"):
            check_values({name: np.repeat(rows[:1], 60, 0)}, 60)
    check_values({"features": np.repeat(features[:1], 5, 0)}, 5)


@pytest.mark.parametrize("forge, says", [
    (lambda m: m["teacher"]["sampling"].update(steps=-1, solver="rm -rf"), "is no sampler gentool runs"),
    (lambda m: m.update(seed=-4), "field seed"),
    (lambda m: m["data"].update(name="a\x00b"), "field data.name"),
    (lambda m: m["data"].update(class_names=[str(i) for i in range(11)]), "11 class names do not name its 0 classes"),
])
def test_couplings_manifest_fields_impossible_together_are_refused(tmp_path, forge, says):
    """Attacker hour h26v, F3: each was used silently (the first line echoed "(rm -rf, -1 steps)")."""
    import json

    root = couplings_folder(tmp_path / "pairs", parts=1)
    manifest = json.loads((root / cp.MANIFEST).read_text())
    forge(manifest)
    (root / cp.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(GentoolError, match=says):
        cp.load_couplings(root)


def test_a_couplings_part_whose_header_is_not_gentools_is_refused_and_a_piped_manifest_is_usage(tmp_path):
    """h26v F3 (a part's header format 'evil', part '7' in part 0: used) and F6 (a pipe as couplings.json: exit 1,
    where a pipe as a part is exit 2)."""
    import os

    from gentool.errors import UsageError

    root = couplings_folder(tmp_path / "pairs", parts=1)
    tensors = load_file(cp.part_path(root, 0))
    save_file(tensors, cp.part_path(root, 0), metadata={"format": cp.FORMAT, "part": "7"})
    with pytest.raises(GentoolError, match="header says format 'gentool-couplings', part '7'; expected .*part 0"):
        cp.load_couplings(root)
    os.unlink(root / cp.MANIFEST)
    os.mkfifo(root / cp.MANIFEST)
    with pytest.raises(UsageError, match="named pipe"):
        cp.load_couplings(root)


def test_an_extractor_file_of_another_data_set_or_with_swapped_weights_is_damage(tmp_path):
    """Attacker hour h26x, F2: mnist's extractor copied under mnist-sample's name was used without a word (the
    result then named mnist's id for a --data mnist-sample score), and weights swapped under a file's own metadata
    scored with the wrong network under the right name."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from gentool.datatypes import Geometry
    from gentool.metrics.extractor import Extractor, FeatureNet, default_recipe, load_extractor, save_extractor

    geometry = Geometry(1, 8, 8)
    recipe = default_recipe(geometry)
    meta = {"format": "gentool-extractor", "id": "mnist-x", "recipe": recipe.to_dict(),
            "geometry": geometry.to_dict(), "num_classes": 10, "test_accuracy": 0.9, "train_seconds": 1.0}
    save_extractor(tmp_path / "e.safetensors", Extractor(FeatureNet(recipe, geometry, 10), meta))
    assert load_extractor(tmp_path / "e.safetensors", ident="mnist-x").meta["id"] == "mnist-x"
    with pytest.raises(ValueError, match="it is extractor 'mnist-x', not 'mnist-sample-x'"):
        load_extractor(tmp_path / "e.safetensors", ident="mnist-sample-x")
    other = {k: v.clone() for k, v in FeatureNet(recipe, geometry, 10).state_dict().items()}  # new initial weights
    with safe_open(str(tmp_path / "e.safetensors"), framework="pt") as f:
        header = f.metadata()
    save_file({**load_file(tmp_path / "e.safetensors"), **other}, tmp_path / "e.safetensors", metadata=header)
    with pytest.raises(ValueError, match="its weights are not those written with its metadata"):
        load_extractor(tmp_path / "e.safetensors", ident="mnist-x")
