"""A plugin's import that hangs says so on stderr after a few seconds (issue 26): `train` with a hanging hook
plugin, or `summary` with a hanging model plugin, used to wait without a word."""

import time

from gentool import registry


def test_a_slow_plugin_step_is_said_once_on_stderr(monkeypatch, capfd):
    monkeypatch.setattr(registry, "NOTICE_SECONDS", 0.05)
    with registry.watched("the import of plugin 'slow' (entry point 'sl')"):
        time.sleep(0.5)
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert "still waiting for the import of plugin 'slow' (entry point 'sl')" in err


def test_a_quick_step_or_a_watched_one_says_nothing(monkeypatch, capfd):
    monkeypatch.setattr(registry, "NOTICE_SECONDS", 0.2)
    with registry.watched("the import of plugin 'quick' (entry point 'q')"):
        pass
    monkeypatch.setattr(registry, "NOTICE_SECONDS", 0.05)
    monkeypatch.setattr(registry, "_watch", lambda step: None)  # models --check's own timeout speaks instead
    with registry.watched("the import of plugin 'timed' (entry point 't')"):
        time.sleep(0.3)
    time.sleep(0.3)
    assert capfd.readouterr().err == ""
