"""Registry: decorator registration, entry-point plugins (a real package installed here), broken plugins."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from gentool import registry
from gentool.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_builtins_are_registered(invoke):
    result = invoke("models", "--json")
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert {"vae", "gan", "wgan"} <= entries.keys()
    assert entries["vae"]["source"] == "built-in" and entries["wgan"]["description"]


def table_rows(text: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell, each cell's text with its wrapped lines joined again (a table
    without a terminal is fitted to 120 columns: a cell's text is wrapped between words)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            if cells[0] or not rows:
                rows.append([[] for _ in cells])
            for column, cell in zip(rows[-1], cells):
                column.extend([cell] if cell else [])
    return {row[0][0]: [" ".join(column) for column in row] for row in rows}


def test_models_and_help_list_each_familys_declared_sampler_settings(invoke):
    """As the command line gives them, from each family's own declaration (none for a family without any)."""
    assert re.search(r"\n  flow +--steps 16 \(1–1000\), --solver euler \(euler\|heun\)\n", invoke("sample", "--help").stdout)
    table = table_rows(invoke("models", "--check").stdout)
    assert table["flow"][-1] == "--steps 16 (1–1000), --solver euler (euler|heun)"
    assert table["cflow"][-1] == "--steps 16 (1–1000), --solver euler (euler|heun), --guidance 1.5 (0–20)"
    listed = {e["name"]: e["sampler_settings"] for e in json.loads(invoke("models", "--check", "--json").stdout)}
    assert [s["name"] for s in listed["ddpm"]] == ["steps", "solver"] and listed["gan"] == []


def test_unknown_model_lists_the_registered_ones(invoke, tmp_path):
    result = invoke("train", "diffusion", "--data", "mnist-sample", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "unknown model 'diffusion'" in result.stderr and "vae" in result.stderr and "wgan" in result.stderr
    assert not (tmp_path / "r").exists()


def test_broken_plugin_warns_and_does_not_crash(monkeypatch):
    broken = EntryPoint(name="broken", value="gentool_no_such_module_xyz", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_failed", {})
    with pytest.warns(UserWarning, match="gentool_no_such_module_xyz"):
        names = [e.name for e in registry.list_models()]
    assert "vae" in names
    with pytest.raises(UsageError, match="plugin 'gentool_no_such_module_xyz', which failed to load"):
        registry.get_model("broken")


def test_entry_point_may_name_a_class(monkeypatch):
    ep = EntryPoint(name="vae-again", value="gentool.models.vae:VAE", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    cls = registry.get_model("vae-again")
    assert cls.__name__ == "VAE"
    registry._registry.pop("vae-again")
    cls.name = "vae"


def test_a_builtin_first_imported_by_a_plugin_stays_built_in(monkeypatch):
    monkeypatch.setattr(registry, "_registry", {})
    monkeypatch.setattr(registry, "_current_source", "some-plugin")
    builtin = type("Builtin", (), {"__module__": "gentool.models.gan"})
    plugin = type("Plugin", (), {"__module__": "some_plugin"})
    registry.register_model("builtin-x")(builtin)
    registry.register_model("plugin-x")(plugin)
    assert registry._registry["builtin-x"].source == "built-in"
    assert registry._registry["plugin-x"].source == "some-plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The example plugin, pip-installed into a private folder (no network: no build isolation, no deps)."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "plugin")], check=True)
    return target


def run_gentool(args, site, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "gentool", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_installed_plugin_is_discovered_and_trains(plugin_site, tmp_path, mnist_root):
    listed = run_gentool(["models", "--json"], plugin_site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["lsgan"]["source"] == "gentool-lsgan"
    trained = run_gentool(["train", "lsgan", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1",
                           "--limit", "64", "--out", "run", "-q", "--json"], plugin_site, tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["model"] == "lsgan"
    # the plugin's own sampler setting (declared in its sample_options) is accepted and recorded like a built-in's
    sampled = run_gentool(["sample", "run/last.safetensors", "--grid", "2x2", "--out", "g.png", "--sampler",
                           "temperature=0.5", "--json"], plugin_site, tmp_path)
    assert sampled.returncode == 0 and (tmp_path / "g.png").exists(), sampled.stderr
    assert json.loads(sampled.stdout)["sampling"] == {"temperature": 0.5}
    # the plugin's hooks entry point imports its package, which imports the built-in GAN before the built-ins load
    built_in = run_gentool(["train", "gan", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit",
                            "64", "--out", "gan", "-q"], plugin_site, tmp_path)
    assert built_in.returncode == 0, built_in.stderr
    assert json.loads((tmp_path / "gan" / "config.json").read_text())["model_source"] == "built-in"


def test_models_are_described_from_source_as_loading_them_would():
    """`gentool models` reads names and docstrings without importing (no torch); the same as importing them."""
    described = {(m.name, m.source, m.description) for m in registry.describe_models()}
    loaded = {(m.name, m.source, m.description) for m in registry.describe_models(load=True)}
    assert described == loaded and {"vae", "gan", "wgan"} <= {name for name, _, _ in described}
    # and the sampler settings each declares (what `--help` and `gentool models` show without importing torch)
    settings = {m.name: m.sampler_settings for m in registry.describe_models(settings=True)}
    assert settings == {m.name: m.sampler_settings for m in registry.describe_models(load=True)}
    assert [s["name"] for s in settings["cflow"]] == ["steps", "solver", "guidance"] and settings["gan"] == ()


def test_a_broken_plugin_warns_in_the_listing(monkeypatch, tmp_path):
    (tmp_path / "gentool_broken_syntax.py").write_text("class Broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint(name="missing", value="gentool_no_such_module_xyz", group=registry.ENTRY_POINT_GROUP),
           EntryPoint(name="syntax", value="gentool_broken_syntax", group=registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    with pytest.warns(UserWarning) as caught:
        names = [m.name for m in registry.describe_models()]
    assert "vae" in names and "missing" not in names and "syntax" not in names
    assert [str(w.message).split("'")[1] for w in caught] == ["gentool_no_such_module_xyz", "gentool_broken_syntax"]


@pytest.mark.parametrize("name", ["../../evil", "evil\x1b[31m", "a/b", "", "-x", "x" * 65, "mödel", "a b"])
def test_a_model_name_that_cannot_name_a_run_folder_is_ignored_with_a_warning(name):
    """A plugin's model "../../evil\\x1b[31m" was registered: its default run folder escaped runs/ and its name
    printed an escape sequence (twelfth attacker hour)."""
    class Odd:
        pass

    with pytest.warns(UserWarning, match="ignored: a model's name is"):
        registry.register_model(name)(Odd)
    assert name.lower() not in {e.name for e in registry.list_models()}
    assert registry.valid_name("mlp-wgan-gp") and registry.valid_name("v2.1_x")
    # `models --check` fails for it (attacker hour h26x, F7: it exited 0 with the model ignored)
    assert any(f"(model {name!r} ignored" in line for line in registry.unloaded([]))
    registry._ignored.clear()


def test_a_plugin_model_named_as_a_built_in_fails_the_check(monkeypatch):
    class Other:
        pass

    monkeypatch.setattr(registry, "_ignored", [])
    monkeypatch.setattr(registry, "_failed", {})
    with pytest.warns(UserWarning, match="'vae' from .* ignored: already provided by built-in"):
        registry.register_model("vae")(Other)
    assert registry.unloaded([]) == [f"{registry._current_source!r} (model 'vae' ignored: already provided by built-in)"]
