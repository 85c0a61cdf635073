"""`gentool evaluate` and `gentool train --eval-every` end to end, on the tiny MNIST files and a tiny extractor
recipe (see TINY_RECIPE: the default recipe takes minutes; the override enters the cache name, so it cannot be
mistaken for the default one)."""

import itertools
import json
import os
import re

import numpy as np
import pytest
import torch

from gentool.metrics.extractor import RECIPE_ENV
from gentool.metrics.watch import BEST_RULE
from gentool.progress import Pace, Reporter
from test_metrics import TINY_RECIPE, one_thread  # noqa: F401 (an autouse fixture)


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def tiny_extractor(monkeypatch, cache_home):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setenv(RECIPE_ENV, TINY_RECIPE)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, mnist_root, cache_home):
    """A VAE trained for 2 epochs with --eval-every 1 (which also trains and caches the tiny extractor)."""
    from typer.testing import CliRunner

    from gentool.cli.app import app

    run = tmp_path_factory.mktemp("vae") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_home))
        mp.setenv(RECIPE_ENV, TINY_RECIPE)
        result = CliRunner().invoke(app, ["train", "vae", "--data", "mnist", "--data-dir", str(mnist_root),
                                          "--epochs", "2", "--limit", "96", "--batch-size", "16", "--eval-every", "1",
                                          "--eval-n", "40", "--out", str(run), "-q", "--json"],
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_eval_every_records_fid_and_keeps_best(vae_run):
    run, summary = vae_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert all({"fid", "modes", "class_kl"} <= r.keys() for r in metrics["epochs"])
    best = metrics["best"]  # kept only when beyond the interval: a lower FID within it is an event instead
    assert best["rule"] == BEST_RULE == metrics["evaluation"]["best_rule"]
    assert best["fid_low"] <= best["fid"] <= best["fid_high"]
    within = {e["epoch"] for e in metrics["events"] if e["kind"] == "best_within_noise"}
    assert all(r["epoch"] in within for r in metrics["epochs"] if r["fid"] < best["fid"])
    assert (run / "best.safetensors").is_file() and summary["checkpoints"]["best"].endswith("best.safetensors")
    made = metrics["evaluation"]
    assert made["n"] == 40 and made["split"] == "test" and made["extractor"]["id"].startswith("mnist-r")
    assert all({"epoch", "kind", "message"} <= e.keys() for e in metrics["events"])


def test_evaluate_a_checkpoint(invoke, vae_run, mnist_root):
    run, _ = vae_run
    result = invoke("evaluate", run / "best.safetensors", "--data-dir", mnist_root, "--n", "30", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "checkpoint" and out["model"] == "vae" and out["data"] == "mnist" and out["n"] == 30
    assert {"split", "seed", "gentool_version", "n_real"} <= out.keys()
    assert {"id", "test_accuracy", "recipe_hash"} <= out["extractor"].keys()
    expected = {"fid", "kid_mean", "kid_std", "is_mean", "precision", "recall", "modes", "class_kl", "jsd", "emd",
                "pixel_mean", "real_pixel_mean", "pixel_spread", "real_pixel_saturated", "vae_reconstruction", "vae_kl",
                "elbo", "fid_inf", "fid_by_n", "fid_ci", "kid_ci", "precision_ci", "recall_ci", "modes_ci"}
    assert expected <= out["metrics"].keys()
    assert out["interval"]["resamples"] == 200 and out["interval"]["real_resampled"] is False
    assert out["metrics"]["fid_ci"][0] <= out["metrics"]["fid"] <= out["metrics"]["fid_ci"][1]
    assert out["metrics"]["elbo"] == pytest.approx(-(out["metrics"]["vae_reconstruction"] + out["metrics"]["vae_kl"]))
    # without --data-dir: the checkpoint names the --data-dir it was trained with ($GENTOOL_DATA is unset here)
    again = json.loads(invoke("evaluate", run / "best.safetensors", "--n", "30", "--json").stdout)
    assert again["metrics"] == out["metrics"]  # seeded: the same samples, subsets and VAE noise
    table = invoke("evaluate", run / "last.safetensors", "--data-dir", mnist_root, "--n", "30", "--metrics",
                   "fid,vae,pixels")
    assert table.exit_code == 0 and "FID" in table.stdout and "ELBO" in table.stdout and "KID" not in table.stdout
    assert "pixel spread" in table.stdout and "in brackets: 95% intervals" in table.stdout
    assert re.search(r"FID +│ [0-9.]+ \[[0-9.]+, [0-9.]+\]", table.stdout), table.stdout


def test_a_recorded_data_dir_is_only_read_never_written(invoke, vae_run, mnist_root, tmp_path, monkeypatch):
    """A checkpoint names the --data-dir it was trained with; evaluate reads the data there when it is there as it
    is, and otherwise never makes a folder, writes or downloads into it (a checkpoint from elsewhere could name
    any folder): it says so and uses the default data folder ($GENTOOL_DATA here)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run, _ = vae_run
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    empty = tmp_path / "someone's folder"
    empty.mkdir()
    data = json.loads(meta["data"])
    save_file(load_file(run / "best.safetensors"), tmp_path / "c.safetensors",
              metadata={**meta, "data": json.dumps({**data, "data_dir": str(empty)})})
    monkeypatch.setenv("GENTOOL_DATA", str(mnist_root))
    result = invoke("evaluate", tmp_path / "c.safetensors", "--n", "30", "--metrics", "fid", "--json")
    assert result.exit_code == 0, result.stderr
    assert f"trained with --data-dir {empty}, which does not hold mnist now" in result.stderr
    assert list(empty.iterdir()) == []


def test_a_damaged_file_in_a_recorded_data_dir_is_exit_1_and_named_as_recorded(invoke, vae_run, mnist_root,
                                                                                tmp_path):
    """The user gave no --data-dir: a damaged file in the one the checkpoint recorded is named as that, and is a
    damaged file's exit 1 (attacker hour 14: "--data-dir: ..." and exit 2)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "mnist"
    shutil.copytree(mnist_root, copy)
    images = next(copy.rglob("t10k-images-idx3-ubyte"))
    os.truncate(images, 1000)
    run, _ = vae_run
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    data = json.loads(meta["data"])
    save_file(load_file(run / "best.safetensors"), tmp_path / "c.safetensors",
              metadata={**meta, "data": json.dumps({**data, "data_dir": str(copy)})})
    result = invoke("evaluate", tmp_path / "c.safetensors", "--n", "30", "--metrics", "fid")
    assert result.exit_code == 1, result.stderr
    assert f"SOURCE's recorded --data-dir: {images} is not an MNIST images file" in result.stderr


def test_npz_and_png_folder_score_alike(invoke, vae_run, mnist_root, tmp_path):
    ckpt = vae_run[0] / "last.safetensors"
    assert invoke("sample", ckpt, "--n", "24", "--out", tmp_path / "s.npz").exit_code == 0
    assert invoke("sample", ckpt, "--n", "24", "--out", f"{tmp_path / 'pngs'}/").exit_code == 0
    scores = []
    for source in (tmp_path / "s.npz", tmp_path / "pngs"):
        result = invoke("evaluate", source, "--data", "mnist", "--data-dir", mnist_root, "--metrics", "fid,modes,jsd",
                        "--out", tmp_path / f"{source.stem}.json")
        assert result.exit_code == 0, result.stderr
        scores.append(json.loads((tmp_path / f"{source.stem}.json").read_text()))
    assert scores[0]["metrics"] == scores[1]["metrics"] and scores[0]["n"] == 24
    assert any("fewer than --n" in note for note in scores[0]["notes"])
    again = invoke("evaluate", tmp_path / "s.npz", "--data", "mnist", "--data-dir", mnist_root, "--out",
                   tmp_path / "s.json")
    assert again.exit_code == 2 and "--overwrite" in again.stderr


@pytest.mark.parametrize("args, needle", [
    (["--metrics", "fid,sharpness"], "--metrics"),
    (["--split", "valid"], "--split"),
    (["--n", "5"], "--n"),
    (["--metrics", "vae"], "--metrics"),
    (["--data", "cifar10"], "x.npz holds grey 28×28 (1×28×28) images but --data cifar10 holds colour 32×32"),
    (["--data", "imagenet"], "--data"),
    (["--intervals", "-1"], "--intervals"),
    (["--level", "2"], "--level"),
])
def test_bad_options_are_one_line(invoke, tmp_path, mnist_root, args, needle):
    np.savez(tmp_path / "x.npz", images=np.zeros((20, 28, 28, 1), np.uint8))
    data = [] if "--data" in args else ["--data", "mnist"]
    result = invoke("evaluate", tmp_path / "x.npz", "--data-dir", mnist_root, *data, *args)
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_bad_sources(invoke, tmp_path, mnist_root):
    np.savez(tmp_path / "x.npz", images=np.zeros((20, 28, 28, 1), np.uint8))
    missing = invoke("evaluate", tmp_path / "x.npz", "--data-dir", mnist_root)
    assert missing.exit_code == 2 and "--data: missing" in missing.stderr
    absent = invoke("evaluate", tmp_path / "nothing.safetensors", "--data", "mnist")
    assert absent.exit_code == 2 and "SOURCE:" in absent.stderr


@pytest.mark.parametrize("args, needle", [
    (["--eval-every", "-1"], "--eval-every"),
    (["--eval-every", "1", "--eval-n", "5"], "--eval-n"),
    (["--eval-every", "1", "--image-size", "28"], "--eval-every"),
])
def test_bad_watch_options(invoke, tmp_path, args, needle):
    result = invoke("train", "vae", "--data", "mnist-sample", "--out", tmp_path / "run", *args)
    assert result.exit_code == 2 and needle in result.stderr
    assert not (tmp_path / "run").exists()


def test_flow_eval_every_and_evaluate_use_the_sampler_settings(invoke, mnist_root, tmp_path):
    """--steps reaches the epoch grids and --eval-every of a run, is recorded with how the scores were made, and
    `evaluate --steps` overrides the family default; stored images take no sampler settings."""
    run = tmp_path / "flow"
    result = invoke("train", "flow", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--limit", "32",
                    "--batch-size", "16", "--width", "0.25", "--eval-every", "1", "--eval-n", "20", "--steps", "2",
                    "--solver", "heun", "--out", run, "-q", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"]["sampling"] == {"steps": 2, "solver": "heun"}
    assert all("fid" in r for r in metrics["epochs"]) and (run / "best.safetensors").is_file()
    scored = invoke("evaluate", run / "best.safetensors", "--data-dir", mnist_root, "--n", "20", "--metrics", "fid",
                    "--steps", "3", "--json")
    assert scored.exit_code == 0, scored.stderr
    assert json.loads(scored.stdout)["sampling"] == {"steps": 3, "solver": "euler"}
    assert json.loads(scored.stdout)["weights"] == "ema"  # flow keeps a weight average by default
    bad = invoke("evaluate", run / "best.safetensors", "--data-dir", mnist_root, "--n", "20", "--solver", "rk4")
    assert bad.exit_code == 2 and "--solver: got 'rk4'; expected one of euler, heun for flow" in bad.stderr
    np.savez(tmp_path / "x.npz", images=np.zeros((20, 28, 28, 1), np.uint8))
    stored = invoke("evaluate", tmp_path / "x.npz", "--data", "mnist", "--data-dir", mnist_root, "--steps", "4")
    assert stored.exit_code == 2 and "--steps: a sampler setting, but SOURCE" in stored.stderr


def test_prepare_builds_what_evaluate_then_reuses(invoke, cifar_folder, tmp_path, monkeypatch):
    """`gentool prepare` trains a folder's extractor at the size asked and its real statistics; evaluate at that
    size then starts scoring at once (no extractor training), and a bad --split is one line naming the option."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = invoke("prepare", "--data", cifar_folder, "--image-size", "16", "--split", "both", "--json")
    assert made.exit_code == 0, made.output
    assert "training the reference extractor" in made.stderr and "gentool prepare" not in made.stderr  # it is that
    found = json.loads(made.stdout)
    assert set(found["splits"]) == {"test", "train"} and found["splits"]["test"]["images"] == 20
    assert "every 10th image" in found["splits"]["test"]["source"] and "16" in found["splits"]["test"]["source"]
    again = invoke("prepare", "--data", cifar_folder, "--image-size", "16")
    assert again.exit_code == 0 and "training the reference extractor" not in again.output
    assert found["extractor"] in again.output
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images)
    scored = invoke("evaluate", tmp_path / "s.npz", "--data", cifar_folder, "--n", "20", "--metrics", "fid",
                    "--json", "--intervals", "0")
    assert scored.exit_code == 0 and "training the reference extractor" not in scored.output, scored.output
    assert json.loads(scored.stdout)["extractor"]["id"] == found["extractor"]
    bad = invoke("prepare", "--data", cifar_folder, "--split", "val")
    assert bad.exit_code == 2 and "--split" in bad.output and "Traceback" not in bad.output, bad.output


class Lines(Reporter):
    """A reporter that keeps its lines, on a clock that moves a second a reading: a line is due at every chunk."""

    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)

    def pace(self):
        return Pace(1, itertools.count().__next__)


def test_drawing_the_samples_says_how_far_it_is():
    """A checkpoint's 10,000 samples take many minutes on a CPU: the drawing announces itself and reports progress
    (a walk saw one unchanging line for 13 minutes)."""
    from gentool.progress import Drawing

    lines = Lines()
    drawing = Drawing(12, lines, "to score")
    for _ in range(3):
        drawing(4)
    assert lines.lines[0] == "drawing 12 samples to score"
    assert lines.lines[1].startswith("drawn 4 of 12 samples (") and lines.lines[2].startswith("drawn 8 of 12")
    assert len(lines.lines) == 4 and lines.lines[3].startswith("drew 12 samples in ")  # how it ended


def test_the_drawing_is_told_each_batch_the_model_draws_not_each_chunk():
    """A chunk of 4,096 from a 16-step sampler took minutes: progress comes from `generate`'s batches."""
    from gentool.datatypes import Geometry
    from gentool.models.vae import VAE, VAEConfig
    from gentool.sampling import sample_chunks

    model = VAE(VAEConfig.create(Geometry(1, 28, 28, 10), 2, 0.25))
    counts = []
    chunks = list(sample_chunks(model, 1200, torch.Generator().manual_seed(0), progress=counts.append))
    assert [len(c) for c in chunks] == [1200] and counts == [500, 500, 200]
