"""What a sweep may set: every train option, fixed for all trials or as an axis, derived from TrainOptions; the
bound on trials; sweep directories written before this derivation."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from gentool import sweep as sw
from gentool.errors import UsageError
from gentool.sweep_options import MAX_TRIALS, NOT_AXES, SET_BY_SWEEP, SweepOptions, value_kind
from gentool.train_options import TrainOptions

DATA = Path(__file__).parent / "data"
SAMPLES = {int: (3, 4), float: (0.5, 0.25), str: ("a", "b"), bool: (True, False), dict: ({"temperature": 0.5}, None)}


def trial_settings(tmp_path, index: int = 0, **given) -> TrainOptions:
    """The TrainOptions trial `index` of a sweep made of `given` is started with (as `gentool sweep` builds it)."""
    opts = SweepOptions(**{"model": "vae", "data": "mnist", **given})
    spec = sw.SweepSpec(opts.model, opts.data, opts.axes(), tmp_path, opts.options(), opts.runtime())
    manifest = spec.manifest()
    return sw.trial_options(manifest, manifest["trials"][index], tmp_path, spec.runtime)


def test_every_train_option_reaches_a_trial_fixed_and_as_an_axis(tmp_path):
    """Fails when a train option is added that a sweep cannot set (or that never reaches the trials)."""
    for f in dataclasses.fields(TrainOptions):
        name = f.name
        if name in SET_BY_SWEEP:
            continue
        if name == "params":
            assert trial_settings(tmp_path, 1, params={"clip": [0.1, 0.2]}).params == {"clip": 0.2}
            continue
        kind = value_kind(name)
        first, second = SAMPLES[kind]
        axis = {} if name in ("latent_dim", "width") else {"latent_dim": [2]}
        if name in NOT_AXES or kind in (bool, dict):  # one value for every trial (settings: --sampler NAME=VALUE)
            assert getattr(trial_settings(tmp_path, **axis, **{name: first}), name) == first, name
        else:
            assert getattr(trial_settings(tmp_path, **{**axis, name: [first]}), name) == first, name
            assert getattr(trial_settings(tmp_path, 1, **{**axis, name: [first, second]}), name) == second, name
        if kind is bool:  # a switch is an axis through --param NAME=true,false
            opts = trial_settings(tmp_path, 1, latent_dim=[2], params={name: [True, False]})
            assert getattr(opts, name) is False and name not in opts.params, name


def test_fixed_options_that_make_the_sweep_and_those_that_may_change(tmp_path):
    opts = SweepOptions(model="vae", data="mnist", latent_dim=[2], ema=[0.999], precision=["fp32"], seeds=3)
    assert opts.axes() == {"latent_dim": [2], "seed": [0, 1, 2]}
    assert opts.options() == {"ema": 0.999}  # a resume may not change it: another value is another sweep
    assert opts.runtime()["precision"] == "fp32"  # a resume may: each invocation passes it on
    assert SweepOptions(model="vae", data="mnist", seed=[5], seeds=2).axes() == {"seed": [5, 6]}
    with pytest.raises(UsageError, match="--seeds: not with a list of --seed"):
        SweepOptions(model="vae", data="mnist", seed=[1, 2], seeds=2).axes()
    with pytest.raises(UsageError, match="--param deterministic: also given as --deterministic"):
        SweepOptions(model="vae", data="mnist", deterministic=True, params={"deterministic": [True, False]}).axes()


def test_too_many_trials_are_refused_before_anything_is_written(invoke, tmp_path):
    out = tmp_path / "huge"
    many = ",".join(str(i) for i in range(1, 1002))
    result = invoke("sweep", "vae", "--data", "mnist", "--latent-dim", many, "--lr", ",".join(
        f"0.{i:04d}" for i in range(1, 1001)), "--out", out)
    assert result.exit_code == 2 and not out.exists()
    assert result.output.count("\n") == 1 and "1,001 --latent-dim × 1,000 --lr values make 1,001,000 trials" in \
        result.output and f"at most {MAX_TRIALS:,}" in result.output
    result = invoke("sweep", "vae", "--data", "mnist", "--latent-dim", "2,3", "--seeds", str(MAX_TRIALS), "--out", out)
    assert result.exit_code == 2 and "20,000 trials" in result.output and not out.exists()


def test_a_sweep_at_the_bound_reads_its_own_manifest(tmp_path):
    opts = SweepOptions(model="vae", data="mnist", latent_dim=list(range(1, 101)), seeds=MAX_TRIALS // 100)
    spec = sw.SweepSpec("vae", "mnist", opts.axes(), tmp_path / "big", opts.options(), {"epochs": 1})
    sw.open_sweep(spec)
    assert len(sw.read_manifest(spec.out)["trials"]) == MAX_TRIALS


def test_a_sweep_written_before_resumes(invoke, tmp_path):
    """tests/data/sweep_v1/sweep.json: written by gentool 0.1.0 before this change, by `gentool sweep vae --data
    mnist-sample --limit 32 --batch-size 32 --epochs 1 --latent-dim 2 --width 0.25,0.5 --trial 0`."""
    out = tmp_path / "old"
    shutil.copytree(DATA / "sweep_v1", out)
    same = ("sweep", "vae", "--data", "mnist-sample", "--limit", "32", "--batch-size", "32", "--epochs", "1",
            "--latent-dim", "2", "--width", "0.25,0.5", "--sample-every", "0")
    args = (*same, "--out", out, "-q")
    listed = invoke(*args, "--list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [r["status"] for r in json.loads(listed.stdout)] == ["done", "pending"]
    assert invoke(*args).exit_code == 0
    trials = json.loads((out / "sweep.json").read_text())["trials"]
    assert [(t["status"], t["epochs"]) for t in trials] == [("done", 1), ("done", 1)]
    config = json.loads((out / trials[1]["run_dir"] / "config.json").read_text())
    assert config["options"]["seed"] == 0 and config["config"]["batch_size"] == 32
    other = invoke(*same, "--seed", "1", "--out", out)
    assert other.exit_code == 2 and "seed 0 (now 1)" in other.output


def test_a_precision_axis_and_a_fixed_ema_are_recorded_by_the_trials(invoke, mnist_root, tmp_path):
    from gentool.device import _bf16_supported

    low = "bf16" if _bf16_supported(torch.device("cpu")) else "auto"  # auto: fp32 where bf16 is not fast
    out = tmp_path / "pe"
    result = invoke("sweep", "vae", "--data", "mnist", "--data-dir", mnist_root, "--limit", "32", "--batch-size", "32",
                    "--epochs", "1", "--width", "0.25", "--sample-every", "0", "--precision", f"fp32,{low}", "--ema",
                    "0.999", "--out", out, "-q", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["grid"] == {"width": [0.25], "precision": ["fp32", low]} and manifest["options"]["ema"] == 0.999
    rows = json.loads((out / "results.json").read_text())
    assert [(r["precision"], r["status"]) for r in rows] == [("fp32", "done"), (low, "done")]
    for trial in manifest["trials"]:
        config = json.loads((out / trial["run_dir"] / "config.json").read_text())
        assert config["options"]["ema"] == 0.999
        assert config["precision"]["requested"] == trial["values"]["precision"]


@pytest.mark.parametrize("args", [["--workers", "1024"], ["--workers", "3", "--threads", "2"]])
def test_more_workers_than_threads_are_refused_before_any_starts(invoke, tmp_path, args):
    """`--workers 1024 --seeds 1024` started 1,024 processes, each importing torch and loading the data (about
    0.5 GB each): the machine's memory, not the sweep, set the bound."""
    result = invoke("sweep", "vae", "--data", "mnist-sample", "--seeds", "4", *args, "--list", "--out", tmp_path / "sw")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and f"--workers: got {args[1]}; expected at most" in lines[0]
    assert not (tmp_path / "sw").exists()
