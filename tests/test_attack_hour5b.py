"""Issue 26's fifth attacker hour (class 5, values no check looked at): what it found, each tested on several
instances. A sweep checked only at each trial what `train` refuses before any work (a device this machine lacks, a
precision the device cannot run, a batch BatchNorm cannot take), so the sweep started, wrote sweep.json and failed
trial after trial; `sweep --list` listed, with exit 0, trials the sweep itself refuses. Environment folders that are
files, and values refused with a reason that was not the reason. A run resumed from a config.json whose model field
was damaged (`"model": [1]`): resume trained on (the checkpoint names the model), after which `summary` and `report`
refused the folder."""

from __future__ import annotations

import pytest

import json

from gentool import cache, data, device, resume
from gentool.errors import GentoolError, UsageError
from gentool.parsing import parse_grid


def _one_line(result, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), (result.returncode, lines)


@pytest.mark.parametrize("args, words", [
    (["vae", "--device", "mps", "--latent-dim", "2,3"], ["--device", "mps is not available"]),
    (["vae", "--device", "cpu,mps"], ["--device", "mps is not available"]),
    (["vae", "--precision", "fp16,fp32"], ["--precision", "fp16 needs a CUDA or MPS device"]),
    (["mlp-wgan-gp", "--batch-size", "1,2"], ["--batch-size", "BatchNorm"]),
    (["mlp-wgan-gp", "--limit", "1,64"], ["--limit", "BatchNorm"]),
], ids=["mps", "mps-in-list", "fp16-on-cpu", "batchnorm-batch", "batchnorm-limit"])
def test_a_sweep_refuses_what_train_refuses_before_any_trial(tmp_path, monkeypatch, entry_point, args, words):
    monkeypatch.setattr(device, "_mps_available", lambda: False)  # as on Linux, wherever the test runs
    out = tmp_path / "sweep"
    small = [] if "--limit" in args else ["--limit", "64"]  # before the fix, the trials trained: briefly
    _one_line(entry_point("sweep", *args[:1], "--data", "mnist-sample", *args[1:], "--epochs", "1", *small, "--out",
                          out, "-q", cwd=tmp_path), *words)
    assert not out.exists()  # no sweep.json, no trial folder: nothing started


@pytest.mark.parametrize("args, words", [
    (["vae", "--param", "kl_weight=1,nan"], ["--param kl_weight", "finite number"]),
    (["vae", "--param", "nosuch=1,2"], ["--param nosuch", "not a setting"]),
    (["vae", "--ema", "1,0.9"], ["--ema"]),
    (["mlp-wgan-gp", "--batch-size", "1,2"], ["--batch-size", "BatchNorm"]),
], ids=["nan-param", "unknown-param", "ema-1", "batchnorm"])
def test_sweep_list_refuses_the_trials_the_sweep_would_refuse(tmp_path, entry_point, args, words):
    result = entry_point("sweep", *args[:1], "--data", "mnist-sample", *args[1:], "--list", "--out",
                         tmp_path / "sweep", cwd=tmp_path)
    _one_line(result, *words)
    assert result.stdout == ""


def test_sweep_list_still_lists_good_trials(tmp_path, entry_point):
    result = entry_point("sweep", "mlp-wgan-gp", "--data", "mnist-sample", "--batch-size", "2,4", "--list", "--json",
                         "--out", tmp_path / "sweep", cwd=tmp_path)
    assert result.returncode == 0 and '"batch_size": 4' in result.stdout


@pytest.mark.parametrize("where", ["xdg-file", "inside-a-file", "gentool-file"])
def test_a_cache_folder_under_a_file_names_the_variable(tmp_path, monkeypatch, where):
    user = tmp_path / "notes.txt"
    user.write_text("the user's")
    xdg = {"xdg-file": user, "inside-a-file": user / "deeper", "gentool-file": tmp_path}[where]
    if where == "gentool-file":
        (tmp_path / "gentool").write_text("a file")
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    with pytest.raises(UsageError, match="^XDG_CACHE_HOME: the cache folder .* is not a folder"):
        cache.cache_dir()
    assert user.read_text() == "the user's"


def test_a_data_folder_that_is_a_file_is_not_said_to_be_missing(tmp_path, monkeypatch):
    (tmp_path / "mnist").write_text("not a folder")
    monkeypatch.setenv("GENTOOL_DATA", str(tmp_path / "mnist"))
    with pytest.raises(UsageError, match="GENTOOL_DATA: .* is not a folder; expected a folder holding"):
        data.load_dataset("mnist", train=True)
    monkeypatch.setenv("GENTOOL_DATA", str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="GENTOOL_DATA: .* does not exist"):
        data.load_dataset("mnist", train=True)


@pytest.mark.parametrize("grid, said", [
    ("100000x100000", "each side between 1 and 64"), ("99999999999999999999x1", "each side between 1 and 64"),
    ("²x²", "digits 0-9"), ("x", "digits 0-9"),
])
def test_a_grid_is_refused_for_its_own_reason(grid, said):
    with pytest.raises(UsageError, match=said):
        parse_grid(grid)


@pytest.mark.parametrize("recorded, field", [
    ({"model": [1]}, "model"), ({"model": float("nan")}, "model"), ({"config": {"width": {"a": 1}}}, "width"),
    ({"data": {"name": 5}}, "name"), ([1], ""),
])
def test_resume_checks_the_config_json_fields_summary_and_report_check(tmp_path, recorded, field):
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(GentoolError, match=f"^--resume: .*config.json.*{field}"):
        resume._config_options(tmp_path)


def test_resume_reads_the_options_of_a_sound_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "vae", "config": {"width": 1.0},
                                                      "data": {"name": "mnist"}, "options": {"epochs": 3}}))
    assert resume._config_options(tmp_path)["epochs"] == 3
