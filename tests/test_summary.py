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


def test_runs_of_many_families_print_within_a_fixed_width_without_a_terminal(invoke, tmp_path):
    """Without a terminal there is no width to fit: a summary of runs of mixed families printed one table of every
    family's columns, 618 columns wide. Now a table per family, with its own columns, none wider than 120 columns
    (more columns go on in further tables, each led by the run's name); --json is as it was."""
    families = {"vae": ["loss", "reconstruction", "kl"], "wgan-gp": ["critic_loss", "emd", "gradient_penalty"],
                "gan": ["d_loss", "g_loss", "d_acc_real", "d_acc_fake", "jsd"]}
    for model, metrics in families.items():
        for seed in range(3):
            run = tmp_path / f"{model}-with-a-long-run-name-{seed}"
            run.mkdir()
            config = {f"{model}_setting_{k}": k + seed for k in range(8)}
            (run / "config.json").write_text(json.dumps({"model": model, "config": config, "data": {"name": "mnist"}}))
            record = {"epoch": 1, "step": 10, "seconds": 1.5, "images_per_second": 100.0,
                      **{m: 0.123456 * (seed + 1) for m in metrics}}
            (run / "metrics.json").write_text(json.dumps({"epochs": [record]}))
    result = invoke("summary", tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 120
    assert sum(line.startswith("┃ run ") for line in lines) >= 4  # the families apart, their columns split
    tables = result.output.split("┏")[1:]
    assert not [t for t in tables if "vae-with" in t and ("critic_loss" in t or "d_loss" in t)]
    assert all(f"{model}_setting_7" in result.output for model in families)  # every column is shown somewhere
    rows = json.loads(invoke("summary", tmp_path, "--json").output)
    assert len(rows) == 9 and {r["model"] for r in rows} == set(families)
