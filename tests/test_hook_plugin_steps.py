"""Issue 26, class 6, hook plugins (`gentool.hooks`): each step that runs a hook plugin's code is treated as a model
plugin's import is. A factory that hangs is said on stderr after a few seconds (it was `train` waiting without a
word); `models --check` imports the hook plugins and calls their factories, naming one that hangs, raises or
exits, and fails (exit 1) for any plugin that does not load (one raising on import was exit 0); `models` lists the
hook plugins from their source; a stop landing in a hook plugin's import is one line, exit 143 (it was blamed on
the plugin, exit 1, or "terminated" twice)."""

from __future__ import annotations

import json
import signal
import time
from importlib.metadata import EntryPoint

import pytest
from test_plugin_exits import gentool

from gentool import hooks, registry, stops


def broken_factory():
    """A factory that raises."""
    raise RuntimeError("no hook today")


def slow_factory():
    print("noise from the factory")  # to stderr, as an import's: stdout carries `train --json`'s result
    time.sleep(0.5)


def test_a_hook_factory_that_hangs_is_said_once_like_a_slow_import(monkeypatch, capfd):
    monkeypatch.setattr(registry, "NOTICE_SECONDS", 0.05)
    monkeypatch.setattr(hooks, "_factories", [("'slowhook' (entry point 'sh')", slow_factory)])
    assert hooks.plugin_hooks() == []
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 2 and "noise from the factory" in err
    assert "still waiting for the factory of hook plugin 'slowhook' (entry point 'sh')" in err


@pytest.fixture()
def hook_entry_points(monkeypatch):
    """Two hook plugins, neither installed: one whose factory raises, one whose module does not exist."""
    eps = [EntryPoint("boom", "test_hook_plugin_steps:broken_factory", hooks.ENTRY_POINT_GROUP),
           EntryPoint("gone", "gentool_no_such_hook_module:make", hooks.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == hooks.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_plugins_loaded", True)  # the models as they are: the hooks are tested
    monkeypatch.setattr(registry, "_failed", {})
    monkeypatch.setattr(hooks, "_factories", None)


def test_models_lists_hook_plugins_from_source_and_check_fails_for_those_that_do_not_load(hook_entry_points, invoke):
    with pytest.warns(UserWarning, match="'gentool_no_such_hook_module' .*cannot be read"):
        listed = invoke("models", "--json")
    assert listed.exit_code == 0 and hooks._factories is None  # listed without loading any
    found = {e["name"]: e for e in json.loads(listed.stdout) if e["kind"] == "hook"}
    assert found["boom"]["description"] == "A factory that raises." and set(found) == {"boom", "gone"}
    with pytest.warns(UserWarning) as caught:
        result = invoke("models", "--check", "--json")
    assert result.exit_code == 1, result.stderr
    messages = " ".join(str(w.message) for w in caught)
    assert "hook plugin 'test_hook_plugin_steps' (entry point 'boom') failed: RuntimeError: no hook" in messages
    assert "hook plugin 'gentool_no_such_hook_module' (entry point 'gone') failed to load" in messages
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 plugins did not load" in errors[0], result.stderr
    assert "'test_hook_plugin_steps' (entry point 'boom')" in errors[0] and "(entry point 'gone')" in errors[0]


def install_hook(site, body: str) -> None:
    """A distribution 'h26s-hook' whose module `hook_plugin` (entry point 'hooky' of gentool.hooks, naming its
    function `make`) is `body`."""
    site.mkdir()
    (site / "hook_plugin.py").write_text(body)
    info = site / "h26s_hook-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: h26s-hook\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gentool.hooks]\nhooky = hook_plugin:make\n")


def test_models_check_names_a_hook_plugin_whose_factory_hangs(tmp_path):
    """The line printed for a hanging hook plugin advises `models --check --import-timeout`: it exited 0 at once."""
    install_hook(tmp_path / "site", "import time\n\ndef make():\n    time.sleep(10_000)\n")
    code, lines = gentool(tmp_path, "models", "--check", "--import-timeout", "1")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == ("error: the factory of hook plugin 'h26s-hook' (entry point 'hooky') did not finish within "
                        "1 s (--import-timeout); the check is stopped: fix or uninstall that package")


SMALL_RUN = ("--data", "mnist-sample", "--limit", "16", "--epochs", "1", "--width", "0.25", "--threads", "1",
             "--precision", "fp32")


def test_a_stop_in_a_hook_plugins_import_is_one_line(tmp_path):
    """SIGTERM in a hook plugin's import was two lines (the stop's, then the plugin blamed for "os._exit(143)"),
    exit 1: the signal handler's own exit went through the stand-in for os._exit that catches a plugin's."""
    install_hook(tmp_path / "site", "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(60)\n")
    code, lines = gentool(tmp_path, "train", "vae", *SMALL_RUN, "--out", str(tmp_path / "run"))
    assert (code, lines) == (143, ["terminated"])
    assert not (tmp_path / "run").exists()


def test_a_stop_in_a_hook_factory_stops_the_command_not_the_plugin(monkeypatch):
    def stopped_factory():
        raise stops.stopped(signal.SIGTERM)  # as the CLI's handler raises it where the signal lands

    monkeypatch.setattr(hooks, "_factories", [("'stopped' (entry point 's')", stopped_factory)])
    with pytest.raises(stops.Terminated):  # not a warning, the run going on without the plugin
        hooks.plugin_hooks()
    stops.told()


TWICE = """import os, signal
from gentool.hooks import TrainHook

class Twice(TrainHook):
    def on_step(self, session, losses):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

def make():
    return Twice()
"""


def test_a_second_stop_during_a_plugin_hooks_event_exits_at_once(tmp_path):
    """The training loop's second SIGTERM exits at once: while a plugin hook's event ran, that exit was taken for the
    hook's own os._exit(143), a warning turning the hook off, and the run went on."""
    install_hook(tmp_path / "site", TWICE)
    code, lines = gentool(tmp_path, "train", "vae", *SMALL_RUN, "--out", str(tmp_path / "run"))
    assert code == 143 and not any("os._exit" in line or "Twice" in line for line in lines), lines
