"""Issue 26 leftovers, class: plugin code that tries to end the process while gentool runs it (its import, a hook's
factory or event) is one line naming the plugin and a non-zero exit, never a silent end with the plugin's own exit
code (`os._exit(0)` on import: `gentool models --check` exited 0 with nothing said). Run as a user would: an
installed distribution (a .dist-info with its entry points) on PYTHONPATH, the gentool executable, stderr read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gentool import plugin_exits

ENDINGS = {
    "os._exit(0)": "import os\nos._exit(0)\n",
    "os._exit(3)": "from os import _exit\n_exit(3)\n",  # bound at import: still the plugin's step
    "sys.exit(0): SystemExit": "import sys\nsys.exit(0)\n",
    "raise KeyboardInterrupt": "raise KeyboardInterrupt\n",
}


def install(site: Path, group: str, body: str) -> None:
    """A distribution 'h26m-exit-plugin' whose module `exit_plugin` (entry point 'exity' in `group`) runs `body`."""
    (site / "exit_plugin.py").write_text(body)
    info = site / "h26m_exit_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: h26m-exit-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\nexity = exit_plugin\n")


def gentool(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    err = tmp_path / "stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path]),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with open(err, "w") as stderr:
        code = subprocess.run([sys.executable, "-m", "gentool", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=300).returncode
    return code, [line for line in err.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("how", sorted(ENDINGS))
def test_a_plugin_ending_the_process_on_import_fails_the_check_in_one_line_naming_it(tmp_path, how):
    (tmp_path / "site").mkdir()
    install(tmp_path / "site", "gentool.models", ENDINGS[how])
    code, lines = gentool(tmp_path, "models", "--check")
    assert code == 1 and len(lines) == 1, lines
    assert "plugin 'h26m-exit-plugin' (entry point 'exity')" in lines[0] and f"({how})" in lines[0]


def test_training_a_plugin_model_that_ends_the_process_on_import_is_one_line(tmp_path):
    (tmp_path / "site").mkdir()
    install(tmp_path / "site", "gentool.models", ENDINGS["os._exit(0)"])
    code, lines = gentool(tmp_path, "train", "exity", "--data", "mnist-sample", "--out", str(tmp_path / "run"))
    assert code == 1 and len(lines) == 1 and "plugin 'h26m-exit-plugin'" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_hook_plugin_ending_the_process_on_import_is_one_line_not_a_silent_exit(tmp_path):
    (tmp_path / "site").mkdir()
    install(tmp_path / "site", "gentool.hooks", ENDINGS["os._exit(0)"])
    code, lines = gentool(tmp_path, "train", "vae", "--data", "mnist-sample", "--limit", "16", "--epochs", "1",
                          "--width", "0.25", "--threads", "1", "--precision", "fp32", "--out", str(tmp_path / "run"))
    assert code == 1 and "plugin 'h26m-exit-plugin'" in lines[-1] and "os._exit(0)" in lines[-1], lines


def test_os_exit_is_itself_again_after_the_step_and_on_other_threads():
    real = os._exit
    with pytest.raises(plugin_exits.PluginEnded):
        with plugin_exits.no_exit("step"):
            assert os._exit is not real
            os._exit(5)
    assert os._exit is real
