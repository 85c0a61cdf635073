"""`gentool summary` counts parameters exactly as the study's tables printed them."""

import json

import pytest

# (model, data) → {network: (trainable, total)}; None where the study gives no figure.
STUDY = {
    ("vae", "mnist"): {"encoder": (1_462_538, 1_462_538), "decoder": (1_462_032, 1_462_032), "__total__": 2_924_570},
    ("vae", "cifar10"): {"__total__": 178_445},
    ("gan", "mnist"): {"discriminator": (69_825, 69_825), "generator": (1_164_289, 1_164_289)},
    ("gan", "cifar10"): {"discriminator": (522_497, 522_497), "generator": (1_466_115, 1_466_115)},
    ("wgan", "mnist"): {"critic": (70_081, 70_337), "generator": (851_201, 851_713)},
    ("wgan", "cifar10"): {"critic": (663_747, None)},
}


@pytest.mark.parametrize("model,data", sorted(STUDY))
def test_totals_match_the_study(invoke, model, data):
    result = invoke("summary", model, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for name, expected in STUDY[(model, data)].items():
        if name == "__total__":
            assert summary["total_params"] == expected
            continue
        net = summary["networks"][name]
        trainable, total = expected
        assert net["trainable_params"] == trainable
        assert net["non_trainable_params"] + net["trainable_params"] == net["total_params"]
        if total is not None:
            assert net["total_params"] == total


def test_batchnorm_counters_are_not_counted(invoke):
    summary = json.loads(invoke("summary", "wgan", "--data", "mnist", "--json").stdout)
    critic = summary["networks"]["critic"]
    # Two BatchNorm2d(64) layers: 2 × 64 running means + 2 × 64 running variances, no num_batches_tracked.
    assert critic["non_trainable_params"] == 256
    assert [row["type"] for row in critic["layers"]].count("BatchNorm2d") == 2


def test_table_lists_layers_shapes_and_totals(invoke):
    result = invoke("summary", "gan", "--data", "mnist")
    assert result.exit_code == 0
    out = result.stdout
    for text in ("generator", "discriminator", "ConvTranspose2d", "(-, 128, 14, 14)", "1,164,289", "69,825", "total"):
        assert text in out


def test_width_and_latent_change_the_networks(invoke):
    base = json.loads(invoke("summary", "vae", "--data", "mnist", "--json").stdout)
    wide = json.loads(invoke("summary", "vae", "--data", "mnist", "--width", "2", "--json").stdout)
    latent = json.loads(invoke("summary", "vae", "--data", "mnist", "--latent-dim", "10", "--json").stdout)
    assert wide["total_params"] > 2 * base["total_params"]
    assert latent["config"]["latent_dim"] == 10
    assert latent["networks"]["encoder"]["layers"][-1]["output_shape"] == [None, 10]


def test_summary_of_a_checkpoint(invoke, tmp_path, mnist_root):
    run = tmp_path / "run"
    assert invoke("train", "wgan", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit", "64",
                  "--out", run, "-q").exit_code == 0
    summary = json.loads(invoke("summary", run / "last.safetensors", "--json").stdout)
    assert summary["model"] == "wgan" and summary["networks"]["critic"]["total_params"] == 70_337
