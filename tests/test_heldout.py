"""Held-out losses: recorded after each epoch for likelihood families, the same terms as training on a fixed subset
of the test split; --heldout N|0; kept on resume; drawn in loss.png and the sweep's curves."""

import json
import math

import imageio.v3 as iio
import pytest
import torch

from gentool import figures, sweep_figures
from gentool.checkpoint import load_checkpoint
from gentool.data import load_dataset
from gentool.heldout import heldout_size
from gentool.metrics.likelihood import fixed_subset, loss_terms

TINY = ("--limit", "64", "--batch-size", "32", "--width", "0.25", "-q")


def records(run):
    return json.loads((run / "metrics.json").read_text())


def test_size_defaults_to_a_tenth_of_the_training_images_up_to_2000():
    assert heldout_size(None, 60_000, 10_000) == 2000
    assert heldout_size(None, 2000, 500) == 200
    assert heldout_size(None, 64, 64) == 7
    assert heldout_size(5000, 60_000, 10_000) == 5000 and heldout_size(5000, 100, 64) == 64
    assert heldout_size(0, 60_000, 10_000) == 0


def test_records_the_training_terms_on_a_fixed_test_subset(invoke, mnist_root, tmp_path):
    run, off = tmp_path / "vae", tmp_path / "off"
    for out, n in ((run, "16"), (off, "0")):
        result = invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--heldout", n,
                        "--out", out, *TINY)
        assert result.exit_code == 0, result.output
    history = records(run)
    assert history["heldout"] == {"split": "mnist test split", "n": 16, "of": 64, "seed": 0, "weights": "raw",
                                  "mode": "eval", "terms": history["heldout"]["terms"], "since_epoch": 1}
    last = history["epochs"][-1]
    assert {"heldout_loss", "heldout_reconstruction", "heldout_kl", "heldout_seconds"} <= set(last)
    # what the record says: the checkpoint's terms on those 16 test digits with the run's seed, in the precision the
    # run computed them in (auto picks bf16 on AMX and Zen 4 hosts)
    from gentool.device import prepare

    model = load_checkpoint(run / "last.safetensors").model
    prepare(model, torch.device("cpu"), json.loads((run / "config.json").read_text())["precision"]["used"])
    images, labels = fixed_subset(load_dataset("mnist", mnist_root, train=False), 16, 0)
    with model.amp.autocast():
        again = loss_terms(model, images, labels, 0)
    assert all(math.isclose(last["heldout_" + k], again[k], rel_tol=1e-5) for k in ("loss", "reconstruction", "kl"))
    assert math.isclose(last["heldout_loss"], last["heldout_reconstruction"] + last["heldout_kl"], rel_tol=1e-5)
    # --heldout 0: none, and the training itself is the same (the held-out pass leaves the RNG streams alone)
    plain = records(off)
    assert "heldout" not in plain and not any(k.startswith("heldout_") for r in plain["epochs"] for k in r)
    assert [r["loss"] for r in plain["epochs"]] == [r["loss"] for r in history["epochs"]]


def test_resume_keeps_the_setting_and_bad_values_are_refused(invoke, mnist_root, tmp_path):
    run = tmp_path / "vae"
    assert invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--heldout", "8",
                  "--out", run, *TINY).exit_code == 0
    assert invoke("train", "--resume", run, "--epochs", "2", "-q").exit_code == 0
    history = records(run)
    assert history["heldout"]["n"] == 8 and history["heldout"]["since_epoch"] == 1
    assert all("heldout_kl" in r for r in history["epochs"])
    bad = invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--heldout", "-1", "--out",
                 tmp_path / "bad")
    assert bad.exit_code == 2 and "--heldout" in bad.output and not (tmp_path / "bad").exists()


def test_none_for_adversarial_models_and_a_folder_without_test_split_holds_out_every_10th(invoke, mnist_root,
                                                                                          cifar_folder, tmp_path):
    gan = tmp_path / "gan"
    assert invoke("train", "gan", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--out", gan,
                  *TINY).exit_code == 0
    assert "heldout" not in records(gan) and not any(k.startswith("heldout") for k in records(gan)["epochs"][0])
    vae = tmp_path / "folder"
    result = invoke("train", "vae", "--data", cifar_folder, "--epochs", "1", "--out", vae, "--limit", "32",
                    "--batch-size", "32", "--width", "0.25")
    assert result.exit_code == 0 and "200 images in 10 class folders: 180 for training (32 of them used" in result.output
    assert "20 (every 10th image of each class) held out for `evaluate --split test`" in result.output
    made = records(vae)["heldout"]  # the 20 images training left out (a tenth of 32 would be 4: all taken)
    assert made["split"] == f"every 10th image of each class in {cifar_folder}" and made["of"] == 20


def test_curves_scale_past_a_first_epoch_far_above_the_rest():
    plt = figures.pyplot()
    ax = plt.figure().add_subplot()
    assert figures.focus_ylim(ax, [[160, 110, 105, 103], [150, 108, 104, 106]])
    lo, hi = ax.get_ylim()
    assert 102 < lo < 103 and 110 < hi < 111
    ax = plt.figure().add_subplot()
    assert not figures.focus_ylim(ax, [[112, 110, 105, 103]])  # within the later range's width: left alone
    plt.close("all")


def test_sweep_curves_show_train_and_heldout_terms(invoke, mnist_root, tmp_path):
    out = tmp_path / "sweep"
    result = invoke("sweep", "vae", "--data", "mnist", "--data-dir", mnist_root, "--latent-dim", "2,3", "--epochs",
                    "2", "--heldout", "8", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    trial = json.loads((out / "sweep.json").read_text())["trials"][0]
    assert records(out / trial["run_dir"])["heldout"]["n"] == 8
    assert {"heldout_loss", "heldout_kl"} <= set(trial["final"])
    runs = [records(out / t["run_dir"])["epochs"] for t in json.loads((out / "sweep.json").read_text())["trials"]]
    assert sweep_figures.curve_terms(runs[0]) == ["loss", "reconstruction", "kl"]
    height, width = iio.imread(out / "curves.png").shape[:2]
    assert height > 2 * width  # one row of panels per term: loss, reconstruction, kl
