"""--config FILE and --print-config: the printed settings run from the file give the same run, a run's config.json
re-runs it, the command line overrides the file, and a bad file is one line naming the key and what is accepted.
The runs are walked with the installed `gentool` executable in subprocesses (no terminal); what only prints or
refuses runs the console script's entry point in-process (`entry_point`), which says the same without a process's
start-up."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from test_journeys import gentool

SMALL = ["--data", "mnist-sample", "--limit", "128", "--epochs", "1", "--latent-dim", "4", "--threads", "1",
         "--sample-every", "0"]


def config_json(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def weights(run: Path) -> dict:
    return {k: v for k, v in load_file(run / "last.safetensors").items() if k.startswith("model.")}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def without(record: dict, *keys: str) -> dict:
    """`record` without the options `keys` and the precision's reason: on a busy machine the probe is not cached
    and its timings (which the reason quotes) differ from run to run; the precision used is still compared."""
    precision = {k: v for k, v in record.get("precision", {}).items() if k != "reason"}
    return {**record, "options": {k: v for k, v in record["options"].items() if k not in keys}, "precision": precision}


def test_train_print_config_round_trip(tmp_path, entry_point):
    printed = entry_point("train", "vae", *SMALL, "--param", "kl_weight=0.5", "--out", "runs/a", "--print-config",
                          cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert not (tmp_path / "runs").exists(), "--print-config ran something"
    settings = tomllib.loads(printed.stdout)
    assert settings["model"] == "vae" and settings["params"] == {"kl_weight": 0.5} and settings["epochs"] == 1
    (tmp_path / "c.toml").write_text(printed.stdout)

    first = gentool("train", "vae", *SMALL, "--param", "kl_weight=0.5", "--out", "runs/a", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = gentool("train", "--config", "c.toml", "--out", "runs/b", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    a, b = config_json(tmp_path / "runs/a"), config_json(tmp_path / "runs/b")
    assert b["options"]["out"] == "runs/b"
    # the printed file gives the model's own settings explicitly (a's options left them to the model: None)
    model_settings = ("out", "latent_dim", "width", "lr", "batch_size", "ema", "sampler")
    assert without(a, *model_settings) == without(b, *model_settings) and a["config"] == b["config"]
    assert settings["lr"] == a["config"]["lr"] and settings["batch_size"] == a["config"]["batch_size"] == 16  # 128 images
    assert same_weights(tmp_path / "runs/a", tmp_path / "runs/b")

    # a run's own config.json re-runs it: the same model config and data, the same weights
    rerun = gentool("train", "--config", "runs/a/config.json", "--out", "runs/c", "-q", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    c = config_json(tmp_path / "runs/c")
    assert (c["model"], c["config"], c["data"]) == (a["model"], a["config"], a["data"])
    pinned = ("out", "params", "latent_dim", "width", "lr", "batch_size")  # the model config, now spelled out
    assert without(c, *pinned) == without(a, *pinned)
    assert same_weights(tmp_path / "runs/a", tmp_path / "runs/c")


def test_command_line_overrides_the_file(tmp_path, entry_point):
    (tmp_path / "c.toml").write_text('model = "vae"\ndata = "mnist-sample"\nepochs = 3\nseed = 7\n'
                                     '[params]\nkl_weight = 0.5\ninit = "torch"\n')
    printed = entry_point("train", "--config", "c.toml", "--epochs", "5", "--param", "init=kaiming",
                          "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    settings = tomllib.loads(printed.stdout)
    assert (settings["epochs"], settings["seed"]) == (5, 7)
    assert settings["params"] == {"kl_weight": 0.5, "init": "kaiming"}
    assert settings["checkpoint_every"] == 10  # every value a new run uses is spelled out


@pytest.mark.parametrize("text, message", [
    ('model = "vae"\nepoch = 3\n', "unknown key 'epoch' (did you mean epochs?); valid keys: model, data, data_dir"),
    ('model = "vae"\nepochs = "ten"\n', "epochs = 'ten'; expected an integer"),
    ('model = "vae"\nwidth = true\n', "width = true; expected a number"),
    ('model = "vae"\n[params]\nclip = [1]\n', 'params.clip = [1]; expected a number, string or true/false'),
    ('model = "vae\n', "not valid TOML (Illegal character"),
])
def test_bad_file_is_one_line(tmp_path, text, message, entry_point):
    (tmp_path / "c.toml").write_text(text)
    result = entry_point("train", "--config", "c.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"--config c.toml: {message}" in result.stderr


@pytest.mark.parametrize("table, args, message", [
    ('[params]\nkl_weight = "abc"\n', [], "params.kl_weight in c.toml: got 'abc'; expected a finite number"),
    ("[params]\nlr = 0.1\n", [], "params.lr in c.toml: set it with --lr"),
    ("[sampler]\nbogus = 3\n", [], "sampler.bogus in c.toml: not a setting of vae's sampler"),
    ("[params]\nbeta1 = 2\n", ["--param", "beta1=3"], "--param beta1: got 3.0"),  # the command line's value
])
def test_a_files_bad_setting_names_the_file(tmp_path, table, args, message, entry_point):
    # a model refuses the value; the error names where it came from: the file's key, not the option
    (tmp_path / "c.toml").write_text(f'model = "vae"\ndata = "mnist-sample"\nepochs = 1\n{table}')
    result = entry_point("train", "--config", "c.toml", *args, "--out", "r", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()


def test_json_must_be_a_run_config(tmp_path, entry_point):
    (tmp_path / "x.json").write_text('{"options": []}')
    result = entry_point("train", "--config", "x.json", cwd=tmp_path)
    assert result.returncode == 2 and "not a run's config.json" in result.stderr
    assert result.stderr.count("\n") == 1


def trial_view(manifest: dict) -> dict:
    """What a sweep is and what its trials did, without times, hosts and process ids."""
    trials = [{k: t.get(k) for k in ("index", "values", "run_dir", "status", "epochs")} for t in manifest["trials"]]
    return {**{k: manifest[k] for k in ("model", "data", "grid", "options", "epochs")}, "trials": trials}


def test_sweep_print_config_round_trip(tmp_path, entry_point):
    args = ["vae", "--data", "mnist-sample", "--limit", "128", "--latent-dim", "2,4", "--param", "kl_weight=0.5",
            "--epochs", "1", "--sample-every", "0", "--checkpoint-every", "0"]
    printed = entry_point("sweep", *args, "--out", "sweeps/a", "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    settings = tomllib.loads(printed.stdout)
    assert settings["latent_dim"] == [2, 4] and settings["params"] == {"kl_weight": [0.5]}
    (tmp_path / "s.toml").write_text(printed.stdout)

    first = gentool("sweep", *args, "--out", "sweeps/a", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = gentool("sweep", "--config", "s.toml", "--out", "sweeps/b", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    a, b = (json.loads((tmp_path / f"sweeps/{x}/sweep.json").read_text()) for x in "ab")
    assert trial_view(a) == trial_view(b) and all(t["status"] == "done" for t in a["trials"])
    for trial in a["trials"]:
        run_a, run_b = tmp_path / "sweeps/a" / trial["run_dir"], tmp_path / "sweeps/b" / trial["run_dir"]
        assert without(config_json(run_a), "out") == without(config_json(run_b), "out")
        assert same_weights(run_a, run_b)


def test_sweep_file_lists_are_checked(tmp_path, entry_point):
    (tmp_path / "s.toml").write_text('model = "vae"\ndata = "mnist-sample"\nlatent_dim = [2, 2]\n')
    repeated = entry_point("sweep", "--config", "s.toml", "--list", cwd=tmp_path)
    assert repeated.returncode == 2 and "--latent-dim: got [2, 2]; expected a list without repeated" in repeated.stderr
    (tmp_path / "s.toml").write_text('model = "vae"\ndata = "mnist-sample"\nwidth = "0.5,1"\n')
    text = entry_point("sweep", "--config", "s.toml", "--list", cwd=tmp_path)
    assert text.returncode == 2 and "width = '0.5,1'; expected a non-empty list of numbers" in text.stderr
