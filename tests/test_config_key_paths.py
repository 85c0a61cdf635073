"""Issue 26 leftovers, class: every value a --config file gives that gentool refuses is one line naming the file and
the key path of the value at fault (`params.beta1`, `lr[1]`, `sampler.steps`), whatever the table (top level,
[params], [sampler]), the value's type (a list, a table, inf, NaN, a date, a string) or the check that refuses it
(its type, the option's own check, the model's), with --print-config too. A table used to be refused whole:
`params = {"beta1": NaN}; expected a table of NAME = ...`, naming no key."""

from __future__ import annotations

import pytest

TRAIN = ["train", "vae", "--data", "mnist-sample", "--print-config"]
SWEEP = ["sweep", "vae", "--data", "mnist-sample", "--print-config"]


@pytest.mark.parametrize("command, text, where", [
    (TRAIN, "[params]\nbeta1 = [0.5, 0.9]\n", "params.beta1 = [0.5, 0.9]; expected a number"),
    (TRAIN, "[params]\nbeta1 = inf\n", "params.beta1 = Infinity; expected a number"),
    (TRAIN, "[params]\nbeta1 = nan\n", "params.beta1 = NaN; expected a number"),
    (TRAIN, "params = {beta1 = {a = 1}}\n", 'params.beta1 = {"a": 1}; expected a number'),
    (TRAIN, '[params]\n"odd key" = nan\n', 'params."odd key" = NaN; expected a number'),
    (TRAIN, "[sampler]\nsteps = nan\n", "sampler.steps = NaN; expected a number"),
    (TRAIN, "[params]\nbeta1 = 1979-05-27\n", 'params.beta1 = "1979-05-27"; expected a number'),
    (SWEEP, "[params]\nbeta1 = nan\n", "params.beta1 = NaN; expected a non-empty list"),
    (SWEEP, "[params]\nbeta1 = [0.5, nan]\n", "params.beta1[1] = NaN; expected a number"),
    (SWEEP, "lr = [0.001, inf]\n", "lr[1] = Infinity; expected a number"),
])
def test_a_wrong_value_in_a_table_or_list_names_its_key_path(tmp_path, entry_point, command, text, where):
    (tmp_path / "c.toml").write_text(text)
    result = entry_point(*command, "--config", "c.toml", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"--config c.toml: {where}" in result.stderr, result.stderr


@pytest.mark.parametrize("text, where", [
    ("[sampler]\nsteps = 0\n", "sampler.steps in c.toml: got 0; expected an integer"),  # was: --steps
    ("[params]\nbeta1 = 5\n", "params.beta1 in c.toml: got 5.0"),  # was, with --print-config: --param beta1
    ("[params]\nnosuch = 1\n", "params.nosuch in c.toml: not a setting of VAEConfig"),
])
def test_a_value_the_options_or_the_model_refuse_names_the_files_key(tmp_path, entry_point, text, where):
    (tmp_path / "c.toml").write_text(text)
    result = entry_point(*TRAIN, "--config", "c.toml", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert where in result.stderr, result.stderr
