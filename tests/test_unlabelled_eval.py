"""Evaluation against a folder of images without class subfolders: its extractor is trained on the folder's
training part to predict rotations (gentool.metrics.pretext), the metric JSON says so, and class metrics are left
out or refused. A tiny recipe (it enters the recipe hash, so never mixes with the default) and 40 images of 16x16."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gentool.data import Geometry
from gentool.metrics import extractor as ex
from gentool.metrics.pretext import ROTATION, rotate
from test_cli_evaluate import cache_home  # noqa: F401 (a fixture: the module's own cache folder)
from test_metrics import one_thread  # noqa: F401 (an autouse fixture)

RECIPE = json.dumps({"widths": [8], "epochs": 1, "min_steps": 12, "batch_size": 32, "feature_dim": 16})


def photos(root: Path, n: int = 40) -> Path:
    """`n` square PNG and JPEG "photos" with an up and a down (a bright sky over a dark ground, at random heights),
    directly in `root`: no class subfolders."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for k in range(n):
        img = rng.normal(40, 20, (16, 16, 3))
        img[: 5 + k % 6] += 150
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{k:02d}.{'png' if k % 2 else 'jpg'}")
    return root


@pytest.fixture(autouse=True)
def tiny(monkeypatch, cache_home):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setenv(ex.RECIPE_ENV, RECIPE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photos(tmp_path_factory.mktemp("own") / "photos")


def test_rotation_recipe_is_its_own_and_classifier_caches_keep_their_names():
    x = torch.arange(18, dtype=torch.uint8).reshape(2, 1, 3, 3)
    turned = rotate(x, torch.tensor([1, 3]))
    assert torch.equal(turned[0], torch.rot90(x[0], 1, (1, 2))) and torch.equal(turned[1], torch.rot90(x[1], 3, (1, 2)))
    assert (ex.COLOUR_RECIPE.hash, ex.GREY_RECIPE.hash) == ("fc11f56a37", "2e27e5a682")  # as before the field
    colour = Geometry(3, 16, 16, 0)
    assert ex.default_recipe(colour, ROTATION).hash != ex.default_recipe(colour).hash


def one_line(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, result.stderr
    assert all(w in result.stderr for w in words), result.stderr


def test_prepare_then_evaluate_samples_against_the_folder(folder, tmp_path, invoke):
    prepared = invoke("prepare", "--data", folder)
    assert prepared.exit_code == 0, prepared.output
    told = " ".join(prepared.stderr.split())
    assert "each class" not in told and "no classes: a rotation-prediction network" in told
    assert told.index("40 images (no class subfolders: unlabelled): 36 for training, 4 (every 10th image of the "
                      "folder) held out") < told.index("training the reference extractor")
    assert "rotation-pretext" in prepared.stdout
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=np.random.default_rng(1).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    result = invoke("evaluate", samples, "--data", folder, "--n", "12", "--intervals", "0", "--json")
    assert result.exit_code == 0, result.output
    assert "training the reference extractor" not in result.stderr  # prepare built it
    out = json.loads(result.stdout)
    made = out["extractor"]
    assert made["kind"] == "rotation-pretext" and "classes" not in made and "rotation" in made["what"]
    assert made["trained_on"] == f"all but every 10th image of the folder {folder.resolve()}"
    assert out["real_source"] == f"every 10th image of the folder {folder.resolve()}" and out["n_real"] == 4
    assert not {"modes", "classes", "class_kl", "class_histogram", "is_mean"} & out["metrics"].keys()
    assert np.isfinite(out["metrics"]["fid"]) and "kid_mean" in out["metrics"]
    assert any(n.startswith("is, modes: not computed") for n in out["notes"])
    table = invoke("evaluate", samples, "--data", folder, "--n", "12", "--split", "train", "--metrics", "fid")
    assert table.exit_code == 0 and "rotation-pretext: no classes" in " ".join(table.stdout.split())
    one_line(invoke("evaluate", samples, "--data", folder, "--metrics", "fid,modes"), 2, "--metrics", "rotations")


def test_train_watches_fid_alone_and_its_checkpoint_evaluates_against_its_own_folder(folder, tmp_path, invoke):
    run = tmp_path / "run"
    trained = invoke("train", "flow", "--data", folder, "--epochs", "1", "--width", "0.25", "--eval-every", "1",
                     "--eval-n", "16", "--steps", "2", "--out", run)
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"]["metrics"] == ["fid"] and metrics["evaluation"]["extractor"]["kind"] == "rotation-pretext"
    assert "fid" in metrics["epochs"][0] and "modes" not in metrics["epochs"][0]
    scored = invoke("evaluate", run / "last.safetensors", "--n", "12", "--intervals", "0", "--out", run / "eval.json")
    assert scored.exit_code == 0, scored.output
    assert json.loads((run / "eval.json").read_text())["extractor"]["kind"] == "rotation-pretext"
    assert invoke("report", run).exit_code == 0
    page = re.sub(r"\s+", " ", (run / "report.html").read_text())
    assert page.count("rotation-pretext: no classes") == 2 and "FID alone (--eval-every 1)" in page
