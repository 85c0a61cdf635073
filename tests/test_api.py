"""gentool as a library (gentool.api): keyword options, results as Python values, errors as exceptions naming the
model's own fields; and the sampler settings a family declares, plugins' included, reaching every command."""

import numpy as np
import pytest

from gentool import api
from gentool.errors import ConfigError, UsageError
from gentool.train_options import cli_message

TINY = dict(data="mnist-sample", limit=32, width=0.25, precision="fp32", sample_every=0, heldout=0)


def test_train_then_sample_from_python(tmp_path, invoke):
    run = api.train("flow", epochs=1, out=str(tmp_path / "f"), sampler={"steps": 2}, **TINY)
    assert run.last == tmp_path / "f" / "last.safetensors" and run.last.is_file() and run["epochs"] == 1
    images = api.sample(run.last, n=5, sampler={"solver": "heun"}, steps=2, seed=3, precision="fp32")
    assert images.dtype == np.uint8 and images.shape == (5, 28, 28, 1)
    # exactly what `gentool sample --n` writes for the same options
    written = invoke("sample", run.last, "--n", "5", "--sampler", "solver=heun", "--sampler", "steps=2", "--seed", "3",
                     "--precision", "fp32", "--out", tmp_path / "s.npz")
    assert written.exit_code == 0, written.output
    assert np.array_equal(np.load(tmp_path / "s.npz")["images"], images)
    with pytest.raises(ConfigError) as err:  # an exception naming the sampler's setting, not an exit code
        api.sample(run.last, n=2, steps=0)
    assert err.value.field == "steps" and str(err.value).startswith("steps: got 0; expected an integer")
    with pytest.raises(UsageError, match="grid: not an option of gentool.api.sample"):
        api.sample(run.last, n=2, grid="2x2")
    with pytest.raises(UsageError, match="^n: got 5; expected an integer between 10"):
        api.evaluate(run.last, n=5)


def test_a_model_names_its_field_and_the_command_line_its_option(tmp_path, invoke):
    with pytest.raises(ConfigError) as err:
        api.train("gan", epochs=1, out=str(tmp_path / "g"), lr=-1.0, **TINY)
    assert (err.value.field, str(err.value)) == ("lr", "lr: got -1.0; expected a number above 0 up to 1,000,000")
    assert not (tmp_path / "g").exists()
    with pytest.raises(ConfigError, match="n_critic: got 0; expected an integer between 1 and 100"):
        api.train("wgan", epochs=1, out=str(tmp_path / "w"), params={"n_critic": 0}, **TINY)
    with pytest.raises(UsageError, match="epochz: not an option of gentool.api.train"):
        api.train("flow", epochz=1)
    for args, line in [(["--lr", "-1"], "error: --lr: got -1.0; expected a number above 0 up to 1,000,000"),
                       (["--param", "n_critic=0"], "error: --param n_critic: got 0; expected an integer between 1 and 100"),
                       (["--sampler", "eta=1"], "error: --sampler eta: not a setting of wgan's sampler")]:
        result = invoke("train", "wgan", "--data", "mnist-sample", "--out", tmp_path / "x", *args)
        assert result.exit_code == 2 and line in result.stderr, result.stderr
    given_twice = invoke("train", "flow", "--data", "mnist-sample", "--steps", "4", "--sampler", "steps=8")
    assert given_twice.exit_code == 2 and "--sampler steps: got 8, and --steps 4; give it once" in given_twice.stderr


@pytest.mark.parametrize("family, setting, value, accepted", [
    ("wgan", "n_critic", 10**6, "an integer between 1 and 100"),
    ("wgan", "clip", 1e9, "a number in (0, 100]"),
    ("wgan-gp", "gp_weight", 1e9, "a number in [0, 10000]"),
    ("mlp-wgan-gp", "gp_weight", 1e9, "a number in [0, 10000]"),
    ("mlp-wgan-gp", "batchnorm_eps", 5.0, "a number in (0, 1]"),
    ("cgan", "class_weight", 1e9, "a number in [0, 10000]"),
    ("vae", "min_epoch_steps", 10**8, "an integer between 0 and 100,000 (0 keeps the batch size)"),
    ("flow", "lr", 1e30, "a number above 0 up to 1,000,000"),
    ("reflow", "adversarial", 1e9, "a number in [0, 100] (0: no critic)"),
])
def test_every_model_setting_states_and_applies_an_upper_bound(family, setting, value, accepted):
    """A value far too large for a setting is refused with its range (it was accepted, or refused as "a positive
    integer"/"≥ 0" without a bound: n_critic=10**6 stalls the first step for hours)."""
    from gentool.data import Geometry
    from gentool.registry import get_entry

    with pytest.raises(ConfigError) as err:
        get_entry(family).cls.config_class.create(Geometry(1, 28, 28, 10), **{setting: value})
    message = cli_message(err.value)
    assert err.value.field == setting and message.endswith(f"; expected {accepted}"), message


@pytest.mark.parametrize("family", ["wgan", "wgan-gp", "mlp-wgan-gp"])
def test_the_critic_steps_check_holds_for_every_critic_family(family):
    from gentool.data import Geometry
    from gentool.registry import get_entry

    with pytest.raises(ConfigError) as err:
        get_entry(family).cls.config_class.create(Geometry(1, 28, 28, 10), n_critic=0)
    assert cli_message(err.value) == "--param n_critic: got 0; expected an integer between 1 and 100"


def test_every_family_constructs_through_its_parent():
    """No model module calls an ancestor's __init__ by name (skipping its parent's): a family that wants other
    networks overrides `build_networks`, so what its parent's constructor sets up still happens."""
    import re
    from pathlib import Path

    import gentool.models

    calls = {p.name: re.findall(r"\b[\w.]+\.__init__\(self", p.read_text())
             for p in Path(gentool.models.__file__).parent.glob("*.py")}
    assert {name: found for name, found in calls.items() if found} == {}
