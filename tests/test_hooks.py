"""Hooks passed in by the caller: the events the loop sends and their order, no import circle between the loop and
its hooks, plugin hooks through the `gentool.hooks` entry point (the example plugin, through the installed
executable), a broken plugin warning while the run goes on, and SIGUSR1 stopping a run like SIGTERM."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tomllib
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from gentool import hooks as hooks_module
from gentool import registry
from gentool.errors import UsageError
from gentool.hooks import Guarded, TrainHook, plugin_hooks
from gentool.train import train
from gentool.train_options import TrainOptions
from test_journeys import ENV, GENTOOL, SHELL, epochs_of, printed_command, start, stop, wait_until

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin"


class Recorder(TrainHook):
    def __init__(self):
        self.events = []

    def setup(self, opts):
        self.events.append(("setup", opts.epochs))

    def on_train_start(self, session, reporter):
        self.events.append(("start", session.step))

    def on_step(self, session, losses):
        self.events.append(("step", session.step, sorted(losses)))

    def on_sample_grid(self, session, epoch, grid):
        self.events.append(("grid", epoch, grid.shape, grid.dtype))

    def on_epoch_end(self, session, record, reporter):
        self.events.append(("epoch", record["epoch"], record["step"]))

    def on_train_end(self, session, reporter):
        self.events.append(("end", session.epoch))

    def teardown(self, session):
        self.events.append(("teardown", session is not None))


class ReadOnly(TrainHook):
    """Tries to move the loop's step counter: a hook sees the run read-only (gentool.hooks.RunView)."""

    def __init__(self):
        self.steps = []

    def on_epoch_end(self, session, record, reporter):
        with pytest.raises(AttributeError, match="read-only"):
            session.step = 0
        self.steps.append((type(session).__name__, session.step))


def test_the_loop_runs_the_hooks_it_is_given_in_order(tmp_path, mnist_root):
    first, second, third = Recorder(), Recorder(), ReadOnly()
    opts = TrainOptions(model="vae", data="mnist", data_dir=str(mnist_root), epochs=2, limit=64, batch_size=32,
                        out=str(tmp_path / "run"))
    train(opts, hooks=[first, second, third])
    assert third.steps == [("RunView", 2), ("RunView", 4)]
    steps = [("step", s, ["kl", "loss", "reconstruction"]) for s in (1, 2)]
    grid = lambda e: ("grid", e, (242, 242, 1), np.dtype("uint8"))  # 8×8 digits of 28 px, 2 px apart
    expected = ([("setup", 2), ("start", 0)] + steps + [grid(1), ("epoch", 1, 2)]
                + [(k, s + 2, n) for k, s, n in steps] + [grid(2), ("epoch", 2, 4), ("end", 2), ("teardown", True)])
    assert first.events == expected and second.events == expected
    assert not (tmp_path / "run" / "loss.png").exists()  # no hook passed draws nothing: figures are a hook too


def test_teardown_runs_when_the_run_fails_to_start(tmp_path):
    hook = Recorder()
    with pytest.raises(Exception):
        train(TrainOptions(model="vae", data=str(tmp_path / "missing"), epochs=1, out=str(tmp_path / "run")),
              hooks=[hook])
    assert hook.events == [("setup", 1), ("teardown", False)]


def test_no_import_circle_between_the_loop_and_its_hooks():
    """The loop imports no hook module (figures, watch, loggers), and the whole package has no import cycle."""
    code = ("import sys, gentool.train; print(' '.join(m for m in sys.modules if m.startswith('gentool')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "gentool.train" in loaded and "gentool.hooks" in loaded
    assert not {"gentool.figures", "gentool.metrics.watch", "gentool.loggers.tensorboard", "gentool.api"} & set(loaded)
    code = "import sys, gentool.hooks; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "torch" not in loaded and "gentool.session" not in loaded and "gentool.train" not in loaded
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    edges = graph.graph(ROOT)
    assert "gentool.figures" in edges["gentool.api"] and "gentool.hooks" in edges["gentool.figures"]
    assert graph.cycles(edges) == []


class Broken(TrainHook):
    def on_epoch_end(self, session, record, reporter):
        raise RuntimeError("server unreachable")


def test_a_failing_plugin_hook_warns_once_and_is_turned_off():
    guarded = Guarded(Broken(), "'demo' (entry point 'x')")
    with pytest.warns(UserWarning, match=r"Broken from plugin 'demo'.*on_epoch_end.*server unreachable") as caught:
        guarded.on_epoch_end(None, {}, None)
        guarded.on_epoch_end(None, {}, None)
    assert len(caught) == 1 and guarded.off

    class Refuses(TrainHook):
        def setup(self, opts):
            raise UsageError("--demo: refused")

    with pytest.raises(UsageError):  # a plugin may still refuse the options, as built-in hooks do
        Guarded(Refuses(), "demo").setup(None)


class SetsOption(TrainHook):
    """Changes one option in setup, as issue 26's attacker did."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def setup(self, opts):
        setattr(opts, self.name, self.value)


@pytest.mark.parametrize("name, value, said", [
    ("limit", -64, "limit = -64; expected an integer between 1"),  # was recorded, then every resume refused
    ("epochs", -5, "epochs = -5; expected an integer between 1"),
    ("epochs", float("nan"), "epochs = NaN; expected an integer"),  # was a traceback (format code 'd')
    ("epochs", None, "epochs = null; expected an integer"),
    ("seed", 2**70, "seed = 1180591620717411303424; expected an integer between 0"),  # was manual_seed's overflow
    ("data", "", "data = ''; expected a non-empty value"),
    ("out", "elsewhere", "changed out in setup; a hook may not change where and how the run starts"),
    ("resume", "auto", "changed resume in setup"),
])
def test_options_a_hook_changes_in_setup_are_checked_as_the_command_lines(tmp_path, monkeypatch, name, value, said):
    """Issue 26 F3: the options after a hook's setup go through the command line's checks; a refusal is one line
    naming the hook (its plugin) and the option, before anything is written."""
    monkeypatch.chdir(tmp_path)
    opts = TrainOptions(model="vae", data="mnist-sample", epochs=1, limit=64, out=str(tmp_path / "run"))
    value = str(tmp_path / value) if name == "out" else value  # (a regression writes nowhere but there)
    hook = Guarded(SetsOption(name, value), "'demo' (entry point 'x')")
    with pytest.raises(UsageError, match=r"^hook SetsOption from plugin 'demo' \(entry point 'x'\)") as caught:
        train(opts, hooks=[Recorder(), hook])
    assert said in str(caught.value) and "\n" not in str(caught.value) and caught.value.exit_code == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "elsewhere").exists()


def test_a_valid_option_a_hook_changes_is_used_and_a_folder_recorded_whole(tmp_path, monkeypatch):
    from gentool.resume import check_changes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    before = TrainOptions(model="vae", data="mnist-sample", epochs=1, out=str(tmp_path / "run"))
    opts = TrainOptions(model="vae", data="digits", epochs=3, out=str(tmp_path / "run"))
    check_changes(before, opts, "hook X")
    assert opts.epochs == 3 and opts.data == str(tmp_path / "digits")


def test_a_plugin_hook_calling_sys_exit_is_turned_off_not_obeyed():
    """sys.exit(0) in a hook's on_step ended the run mid-epoch with exit code 0; now it is a hook failure."""
    class Exits(TrainHook):
        def on_step(self, session, losses):
            raise SystemExit(0)

    guarded = Guarded(Exits(), "'demo' (entry point 'x')")
    with pytest.warns(UserWarning, match=r"Exits from plugin 'demo'.*on_step.*SystemExit"):
        guarded.on_step(None, {})
    assert guarded.off


def test_plugin_entry_points_load_lazily_and_broken_ones_warn(monkeypatch):
    eps = [EntryPoint("missing", "gentool_no_such_module_xyz:hook", hooks_module.ENTRY_POINT_GROUP),
           EntryPoint("recorder", "test_hooks:Recorder", hooks_module.ENTRY_POINT_GROUP),
           EntryPoint("wrong", "test_hooks:np", hooks_module.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == hooks_module.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(hooks_module, "_factories", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = plugin_hooks()
    assert [type(h.hook).__name__ for h in made] == ["Recorder"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "gentool_no_such_module_xyz" in messages[0] and "'wrong'" in messages[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert plugin_hooks()[0].hook is not made[0].hook  # a fresh hook for every run


def _dist_info(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
    """What `pip install` leaves for importlib.metadata: a .dist-info folder with METADATA and entry_points.txt
    (written here so that the test needs no build backend or network)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) for group, points in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))


def test_example_plugin_hook_through_the_installed_executable(tmp_path, mnist_root):
    """The example plugin's JSON-lines logger joins a run through its `gentool.hooks` entry point; a second plugin
    whose hook cannot be imported costs one warning line, and the run finishes."""
    site = tmp_path / "site"
    declared = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]
    assert "gentool.hooks" in declared
    _dist_info(site, "gentool-lsgan", "0.1.0", declared)
    _dist_info(site, "gentool-broken-hook", "0.1.0", {"gentool.hooks": {"broken": "gentool_no_such_module:hook"}})
    log = tmp_path / "epochs.jsonl"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN)]), "GENTOOL_JSONL": str(log)}
    done = subprocess.run([str(GENTOOL), "train", "vae", "--data", "mnist", "--data-dir", str(mnist_root), "--epochs",
                           "2", "--limit", "64", "--out", "run", "-q"], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[0]["run_dir"] == "run" and "loss" in lines[0]
    warned = [line for line in done.stderr.splitlines() if "gentool-broken-hook" in line]
    assert len(warned) == 1 and warned[0].startswith("warning:") and "Traceback" not in done.stderr, done.stderr


def test_sigusr1_saves_and_prints_a_resume_line_like_sigterm(tmp_path, mnist_root):
    """SLURM's --signal=USR1@T: the run finishes its step, saves, prints the resume line and exits 138; the line,
    run as printed, continues the run, which stops the same way again."""
    proc = start("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1000", "--limit", "64",
                 "--batch-size", "16", "--sample-every", "0", "--out", "run", cwd=tmp_path)
    wait_until(lambda: (tmp_path / "run" / "last.safetensors").exists(), proc)
    _, err = stop(proc, signal.SIGUSR1)
    assert proc.returncode == 128 + signal.SIGUSR1 and "Traceback" not in err, err
    assert "SIGUSR1 received" in err
    command = printed_command(err, "Resume with:")
    done = len(epochs_of(tmp_path / "run"))
    resumed = subprocess.Popen(command, shell=True, executable=SHELL, cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(epochs_of(tmp_path / "run")) > done, resumed)
    _, err = stop(resumed, signal.SIGUSR1)
    assert resumed.returncode == 128 + signal.SIGUSR1 and "resuming" in err, err
    epochs = epochs_of(tmp_path / "run")
    assert epochs == list(range(1, len(epochs) + 1))
