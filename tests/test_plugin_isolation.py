"""Issue 26, class 6: listing plugins runs none of their code; where their code must run (loading them, training
with one), what they print cannot corrupt `--json` output, and whatever they raise (even SystemExit) is one line
naming the plugin."""

import contextlib
import json
import sys
from importlib.metadata import EntryPoint

import pytest

from gentool import hooks, registry
from gentool.errors import UsageError

PACKAGE = "gentool_noisy_plugin_pkg"
MODEL = '''
from gentool import register_model
from gentool.models.vae import VAE

print("noise from the plugin's module")


@register_model("noisy-vae")
class NoisyVAE(VAE):
    """A VAE from a plugin whose package is noisy."""
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    """A plugin package `PACKAGE` with `init` as its __init__ and a module `models` registering noisy-vae; the
    entry point names the module (a dotted name: finding it must not import the package)."""
    def make(init: str, value: str = f"{PACKAGE}.models"):
        pkg = tmp_path / PACKAGE
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text(init)
        (pkg / "models.py").write_text(MODEL)
        monkeypatch.syspath_prepend(str(tmp_path))
        ep = EntryPoint(name="noisy-vae", value=value, group=registry.ENTRY_POINT_GROUP)
        monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
        monkeypatch.setattr(registry, "_plugins_loaded", False)
        registry._load_builtins()  # before the registry is copied: they stay loaded after the test
        monkeypatch.setattr(registry, "_registry", dict(registry._registry))
        monkeypatch.setattr(registry, "_failed", {})
        monkeypatch.setattr(hooks, "_factories", None)  # `models --check` loads the hook plugins: none here
    yield make
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[name]


@pytest.mark.parametrize("init", [
    "raise RuntimeError('the package refuses to be imported')\n",
    "print('hello from __init__')\n",
    "import sys\nsys.exit(3)\n",
])
def test_listing_runs_no_plugin_code(plugin, invoke, init):
    plugin(init)
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.stderr
    listed = {m["name"]: m for m in json.loads(result.stdout)}  # stdout is the JSON alone
    assert listed["noisy-vae"]["description"] == "A VAE from a plugin whose package is noisy."
    assert PACKAGE not in sys.modules and "noise" not in result.stdout + result.stderr


def test_what_a_plugin_prints_while_it_loads_goes_to_stderr(plugin, invoke):
    plugin("print('hello from __init__')\n")
    result = invoke("models", "--check", "--json")
    assert result.exit_code == 0, result.stderr
    listed = {m["name"]: m for m in json.loads(result.stdout)}
    assert listed["noisy-vae"]["source"].startswith(PACKAGE) and "hello from __init__" in result.stderr
    assert "noise from the plugin's module" in result.stderr


@pytest.mark.parametrize("init, why", [
    ("raise RuntimeError('the package refuses to be imported')\n", "RuntimeError: the package refuses"),
])  # sys.exit on import, os._exit, KeyboardInterrupt: one error line, exit 1 (test_plugin_exits)
def test_a_plugin_that_fails_to_load_is_one_line_naming_it_and_fails_the_check(plugin, invoke, tmp_path, init, why):
    """The check exited 0 (the warning alone) for a plugin that raises on import, 1 for one that hangs or exits."""
    plugin(init)
    with pytest.warns(UserWarning) as caught:  # gentool prints each warning as one line (gentool.cli.app)
        result = invoke("models", "--check", "--json")
    assert result.exit_code == 1, result.stderr
    assert "noisy-vae" not in {m["name"] for m in json.loads(result.stdout)}
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and PACKAGE in messages[0] and why in messages[0] and "\n" not in messages[0]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"1 plugin did not load: '{PACKAGE}.models' (entry point 'noisy-vae')" in errors[0]
    failed = invoke("train", "noisy-vae", "--data", "mnist-sample", "--out", tmp_path / "run")  # loaded once: no warning
    assert failed.exit_code == 2 and f"plugin '{PACKAGE}" in failed.stderr and "failed to load" in failed.stderr
    assert not (tmp_path / "run").exists()


def test_a_plugin_model_that_fails_while_training_is_one_line_naming_it(plugin, invoke, tmp_path):
    plugin("")
    models = tmp_path / PACKAGE / "models.py"
    models.write_text(models.read_text() + "\n    def train_step(self, *args):\n        raise ValueError('bad step')\n")
    result = invoke("train", "noisy-vae", "--data", "mnist-sample", "--limit", "16", "--batch-size", "8",
                    "--width", "0.25", "--epochs", "1", "--out", tmp_path / "run", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"plugin '{PACKAGE}" in lines[-1] and "ValueError: bad step" in lines[-1] and "Traceback" not in result.stderr


@pytest.mark.parametrize("value, needle", [
    ("math:pi", "comes from the plugin 'math', which failed to load"),  # a float: was ignored, then "unknown model"
    ("fractions:Fraction", "from the plugin 'fractions' is <class 'fractions.Fraction'>, not a gentool model"),
])
def test_an_entry_point_naming_what_is_not_a_model_is_refused_naming_the_plugin(monkeypatch, value, needle):
    ep = EntryPoint(name="odd-model", value=value, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    registry._load_builtins()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_failed", {})
    with pytest.warns(UserWarning) if value == "math:pi" else contextlib.nullcontext():
        with pytest.raises(UsageError) as err:
            registry.get_entry("odd-model")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_plugin_model_that_fails_outside_training_is_one_line_naming_it(plugin, invoke, tmp_path):
    """`summary` (as `sample`, `evaluate`, `export`) with a plugin's model that raises: a traceback (only training
    named the plugin)."""
    plugin("")
    models = tmp_path / PACKAGE / "models.py"
    models.write_text(models.read_text() + "\n    def __init__(self, config):\n        raise ValueError('no build')\n")
    result = invoke("summary", "noisy-vae")
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # the module's own print, then gentool's
    assert result.exit_code == 1 and lines[0] == "noise from the plugin's module" and len(lines) == 2, result.stderr
    assert f"plugin '{PACKAGE}" in lines[1] and "ValueError: no build" in lines[1] and "Traceback" not in result.stderr
