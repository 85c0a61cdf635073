"""End to end through the CLI: every model × data set trains, samples and reloads to identical outputs."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from gentool.registry import get_entry, list_models
from test_contract import ONE_GEOMETRY

MODELS = [e.name for e in list_models()]
KINDS = ["mnist", "cifar10-folder"]


def data_args(kind, mnist_root, cifar_folder):
    if kind == "mnist":
        return ["--data", "mnist", "--data-dir", mnist_root]
    return ["--data", cifar_folder]


@pytest.mark.parametrize("model, kind", [(m, k) for m in MODELS for k in KINDS
                                         if m not in ONE_GEOMETRY or k == "mnist"])
def test_train_sample_reload(invoke, tmp_path, mnist_root, cifar_folder, model, kind):
    run = tmp_path / "run"
    # iterative samplers at 2 steps and narrow networks: the round trip is under test, not the images
    steps = ["--steps", "2"] if any(o.name == "steps" for o in get_entry(model).cls.sample_options) else []
    fast = steps + ["--width", "0.25"]
    result = invoke("train", model, *data_args(kind, mnist_root, cifar_folder), "--epochs", "1", "--limit", "160",
                    "--batch-size", "32", "--out", run, "--json", "-q", "--seed", "3", *fast)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 1 and summary["step"] == 5
    for name in ("config.json", "metrics.json", "last.safetensors", "samples/epoch_0001.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    record = metrics["epochs"][0]
    assert {"epoch", "step", "seconds", "images_per_second"} <= record.keys()

    ckpt = run / "last.safetensors"
    assert invoke("sample", ckpt, "--grid", "4x5", "--out", tmp_path / "g.png", *steps).exit_code == 0
    grid = iio.imread(tmp_path / "g.png")
    side = 28 if kind == "mnist" else 32
    assert grid.shape[:2] == (4 * (side + 2) + 2, 5 * (side + 2) + 2)
    for name in ("a.npz", "b.npz"):
        assert invoke("sample", ckpt, "--n", "12", "--out", tmp_path / name, "--seed", "5", *steps).exit_code == 0
    a, b = np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    assert a.dtype == np.uint8 and a.shape == (12, side, side, 1 if kind == "mnist" else 3)
    assert np.array_equal(a, b)


def test_family_metrics_are_recorded(invoke, tmp_path, mnist_root):
    expected = {"vae": {"loss", "reconstruction", "kl"},
                "gan": {"d_loss", "g_loss", "d_acc_real", "d_acc_fake", "jsd"},
                "wgan": {"critic_loss", "g_loss", "emd"}}
    for model, keys in expected.items():
        run = tmp_path / model
        assert invoke("train", model, "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--limit", "96",
                      "--batch-size", "16", "--out", run, "-q").exit_code == 0
        records = json.loads((run / "metrics.json").read_text())["epochs"]
        assert [r["epoch"] for r in records] == [1, 2]
        assert keys <= records[-1].keys()
        if model == "gan":
            assert records[-1]["jsd"] >= 0 and 0 <= records[-1]["d_acc_real"] <= 1


def test_seeded_cpu_runs_repeat_exactly(invoke, tmp_path, mnist_root):
    for name in ("a", "b"):
        assert invoke("train", "gan", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit", "64",
                      "--out", tmp_path / name, "--seed", "7", "-q").exit_code == 0
    from safetensors.torch import load_file
    a, b = load_file(tmp_path / "a/last.safetensors"), load_file(tmp_path / "b/last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_to_the_total(invoke, tmp_path, mnist_root):
    args = ["--data", "mnist", "--data-dir", mnist_root, "--limit", "64", "--batch-size", "16", "--seed", "2", "-q"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert invoke("train", "wgan", *args, "--epochs", "3", "--out", straight).exit_code == 0
    assert invoke("train", "wgan", *args, "--epochs", "1", "--out", resumed).exit_code == 0
    result = invoke("train", "wgan", "--resume", resumed, "--epochs", "3", "--data-dir", mnist_root, "-q", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 12
    records = json.loads((resumed / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    from safetensors.torch import load_file

    a, b = load_file(straight / "last.safetensors"), load_file(resumed / "last.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_checkpoint_every_and_sample_every(invoke, tmp_path, mnist_root):
    run = tmp_path / "run"
    assert invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "4", "--limit", "64",
                  "--checkpoint-every", "2", "--sample-every", "3", "--out", run, "-q").exit_code == 0
    assert sorted(p.name for p in run.glob("epoch_*.safetensors")) == ["epoch_0002.safetensors", "epoch_0004.safetensors"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0003.png", "epoch_0004.png"]


def test_plain_progress_lines_when_not_a_terminal(invoke, tmp_path, mnist_root):
    result = invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--limit", "64",
                    "--out", tmp_path / "run")
    assert result.exit_code == 0
    lines = [l for l in result.stderr.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 2 and "img/s" in lines[0] and "loss=" in lines[0]


def test_official_cifar10_files(invoke, tmp_path, cifar_official):
    run = tmp_path / "run"
    result = invoke("train", "vae", "--data", "cifar10", "--data-dir", cifar_official, "--epochs", "1", "--out", run, "-q", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["geometry"] == {"channels": 3, "height": 32, "width": 32, "num_classes": 10}


def test_mnist_sample_ships_with_the_package(invoke, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "vae", "--data", "mnist-sample", "--epochs", "1", "--limit", "200", "--out", run, "-q").exit_code == 0
    assert (run / "last.safetensors").exists()


def test_png_folder_output(invoke, tmp_path, mnist_root):
    run = tmp_path / "run"
    invoke("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit", "32", "--out", run, "-q")
    result = invoke("sample", run / "last.safetensors", "--n", "3", "--out", f"{tmp_path / 'pngs'}/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["000000.png", "000001.png", "000002.png"]
