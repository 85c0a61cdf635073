"""Failures as one line: every command's output path in an impossible place, GENTOOL_DEBUG's values, Adam settings
checked in one place for every family, and NaN reaching a loss reported in the NaN guard's terms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gentool.data import Geometry
from gentool.errors import ConfigError, UsageError
from gentool.guards import GuardState, NonFinite, guard_optimizers
from gentool.models.base import AdamConfig
from gentool.registry import get_entry, list_models


def gentool(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "gentool", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=env)


def one_line(result, code=None):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert code is None or result.returncode == code, result.returncode
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from gentool.train import TrainOptions, train

    run = tmp_path_factory.mktemp("fail") / "run"
    train(TrainOptions(model="vae", data="mnist-sample", limit=64, epochs=1, width=0.25, out=str(run), sample_every=0))
    return run / "last.safetensors"


IMPOSSIBLE = ["/proc/gentool-test/{name}", "/proc/self/{name}", "{file}/{name}"]


@pytest.mark.parametrize("place", IMPOSSIBLE)
@pytest.mark.parametrize("name, extra", [("g.png", []), ("s.npz", ["--n", "20"]), ("pngs/", ["--n", "5"]),
                                         ("w.gif", ["--interpolate", "--frames", "2", "--grid", "2x2"])])
def test_sample_into_impossible_places(ckpt, tmp_path, invoke, place, name, extra):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    out = place.format(name=name, file=a_file)
    result = invoke("sample", ckpt, "--out", out, *extra)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --out: ") and "cannot be" in lines[0], lines[0]
    assert a_file.read_text() == "mine"


def test_sample_into_proc_as_a_user_would(ckpt):
    line = one_line(gentool("sample", ckpt, "--n", "10", "--out", "/proc/gentool-test/s.npz"), 2)
    assert line == "error: --out: /proc/gentool-test/s.npz cannot be written (No such file or directory)", line


@pytest.mark.parametrize("place", IMPOSSIBLE)
def test_other_commands_into_impossible_places(ckpt, tmp_path, invoke, place, mnist_root):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    where = place.format(name="out", file=a_file)
    commands = [("train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--out", where),
                ("evaluate", ckpt, "--data", "mnist", "--data-dir", mnist_root, "--n", "10", "--out", where + ".json"),
                ("sweep", "vae", "--data", "mnist-sample", "--latent-dim", "2", "--epochs", "1", "--out", where)]
    for command in commands:
        result = invoke(*command)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: --out: ") and where in lines[0], lines[0]
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("value, on", [("0", False), ("false", False), ("No", False), ("off", False), ("", False),
                                       (" 0 ", False), ("1", True), ("true", True), ("YES", True), ("on", True)])
def test_gentool_debug_only_for_a_true_value(monkeypatch, value, on):
    from gentool.cli.options import debugging

    monkeypatch.setenv("GENTOOL_DEBUG", value)
    assert debugging() is on


# "0" is the "maybe" case's path (no traceback) without its warning: the table above checks that it is off
@pytest.mark.parametrize("value, shows_traceback", [("1", True), ("maybe", False)])
def test_gentool_debug_as_a_user_sets_it(tmp_path, value, shows_traceback):
    result = gentool("sample", tmp_path / "missing.safetensors", env={**__import__("os").environ,
                                                                       "GENTOOL_DEBUG": value})
    assert result.returncode != 0 and ("Traceback" in result.stderr) == shows_traceback, result.stderr[-2000:]
    if value == "maybe":
        assert "GENTOOL_DEBUG: got 'maybe'" in result.stderr and "does not exist" in result.stderr


ADAM_FAMILIES = [e.name for e in list_models() if issubclass(e.cls.config_class, AdamConfig)]


def test_every_family_that_uses_adam_takes_its_settings_from_one_place():
    """A family building Adam optimizers has an AdamConfig, and its optimizers carry the config's betas."""
    assert {"gan", "vae", "cvae", "sngan", "cgan", "wgan-gp"} <= set(ADAM_FAMILIES)
    for entry in list_models():
        cls = entry.cls
        config = cls.config_class.create(Geometry(1, 28, 28, 10), None, 0.25)
        optimizers = cls(config).build_optimizers()
        for opt in optimizers.values():
            if isinstance(opt, torch.optim.Adam):
                assert isinstance(config, AdamConfig), entry.name
                assert opt.param_groups[0]["betas"] == (config.beta1, config.beta2), entry.name


@pytest.mark.parametrize("model", ADAM_FAMILIES)
@pytest.mark.parametrize("param", ["beta1=1.5", "beta2=1", "beta1=-0.1", "beta2=nan"])
def test_adam_settings_are_checked_for_every_family(model, param):
    name, value = param.split("=")
    with pytest.raises(ConfigError, match=f"^{name}: got"):
        get_entry(model).cls.config_class.create(Geometry(1, 28, 28, 10), None, None, **{name: float(value)})


@pytest.mark.parametrize("model", ["gan", "vae", "cvae"])
def test_adam_settings_on_the_command_line(tmp_path, invoke, model):
    result = invoke("train", model, "--data", "mnist-sample", "--param", "beta1=1.5", "--out", tmp_path / "r")
    assert result.exit_code == 2 and result.stderr.strip() == \
        "error: --param beta1: got 1.5; expected a number in [0, 1)", result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", [e.name for e in list_models()])
def test_nan_in_a_network_output_is_reported_in_the_guards_terms(model):
    """NaN in the sampling network's output at step 2: every family stops naming a network and the step, whether
    its loss raises on NaN (VAE BCE) or passes it on to the gradients."""
    cls = get_entry(model).cls
    torch.manual_seed(0)
    net = cls(cls.config_class.create(Geometry(1, 28, 28, 10), None, 0.25))
    state = GuardState(False)
    optimizers = guard_optimizers(net.build_optimizers(), state)
    poison = getattr(net, net.sampling_networks[0])
    poison.register_forward_hook(lambda m, i, out: out * float("nan") if state.step == 2 else None)
    real = torch.rand(8, 1, 28, 28) * (net.pixel_range[1] - net.pixel_range[0]) + net.pixel_range[0]
    labels = torch.arange(8) % 10
    with pytest.raises(NonFinite, match=r"(the \w+ at step 2|\w+ at step 2 \(epoch 1\))"):
        for step in range(net.config.__dict__.get("n_critic", 1) * 3):
            state.step, state.epoch = step, 1
            state.run_step(net, optimizers, lambda: net.train_step(real, labels, optimizers, step))


def test_vae_with_a_huge_learning_rate_stops_in_one_line(tmp_path, entry_point):
    line = one_line(entry_point("train", "vae", "--data", "mnist-sample", "--lr", "1e6", "--epochs", "1",
                                "--out", tmp_path / "r", "-q", "--threads", "1", cwd=tmp_path), 1)
    assert "NaN in the output of the decoder at step" in line and "last good checkpoint" in line


def test_vae_with_a_huge_learning_rate_can_skip_the_steps(tmp_path, invoke):
    result = invoke("train", "vae", "--data", "mnist-sample", "--lr", "1e6", "--epochs", "1", "--limit", "512",
                    "--skip-nonfinite", "--sample-every", "0", "--out", tmp_path / "s", "-q", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"skipped_steps"' in result.stdout
