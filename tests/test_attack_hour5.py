"""Issue 26: what the fourth attacker hour saw but did not fix, each class on several instances. A run's file that is
not a regular file is named as what it is (not taken for a missing one) by `report`, `summary` and `--resume`; a
package declaring thousands of broken entry points is a few warnings and bounded work; a plugin whose import hangs
stops `models --check` in one line naming it; each package's metadata is looked at once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from test_attack_hour4 import deadline, dist_info

from gentool import installed, registry
from gentool.errors import GentoolError
from gentool.report import collect

# what is put where a run's file should be, and the words that name it
KINDS = {
    "pipe": "is a named pipe, not a regular file",
    "folder": "is a directory, not a regular file",
    "/dev/zero": "(a symbolic link to /dev/zero) is a character device, not a regular file",
    "dangling": "is a symbolic link to nowhere-at-all, which does not exist",
}


def special(path: Path, kind: str) -> Path:
    path.unlink(missing_ok=True)
    {"pipe": os.mkfifo, "folder": os.mkdir, "/dev/zero": lambda p: p.symlink_to("/dev/zero"),
     "dangling": lambda p: p.symlink_to("nowhere-at-all")}[kind](path)
    return path


@pytest.fixture()
def run(tmp_path) -> Path:
    """A run directory's files, as far as the report reads them without the model."""
    folder = tmp_path / "run"
    (folder / "samples").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": "vae", "config": {}, "options": {}, "data": {}}))
    return folder


@pytest.mark.parametrize("kind", KINDS)
def test_report_names_a_run_file_that_is_not_a_regular_file(run, kind):
    """A named pipe as metrics.json: the page said "no metrics.json: the run recorded no epoch yet"; a pipe as a
    sample grid, progress.gif, best.safetensors or an evaluation's JSON was left out without a word."""
    for name in ("metrics.json", "samples/epoch_0001.png", "progress.gif", "best.safetensors", "eval.json"):
        special(run / name, kind)
    notes: list[str] = []
    with deadline(10):
        assert collect._read_history(run, notes) == {"epochs": [], "events": []}
        collect.samples(run, [], None, notes, animation=True)
        collect.best_checkpoint({}, run, notes)
        assert collect._checkpoints(run, notes) == [] and collect.evaluation_files(run, notes) == []
    for name in ("metrics.json", "samples/epoch_0001.png", "progress.gif", "best.safetensors", "eval.json"):
        assert sum(note.startswith(f"{run / name} {KINDS[kind]}") for note in notes) == 1, (name, notes)
    assert not [note for note in notes if note.startswith("no ")], notes  # none is said to be missing


def test_report_says_a_missing_metrics_json_is_missing_and_a_pipe_config_json_is_a_pipe(run):
    notes: list[str] = []
    assert collect._read_history(run, notes) == {"epochs": [], "events": []}
    assert notes == ["no metrics.json: the run recorded no epoch yet"]
    special(run / "config.json", "pipe")
    assert collect.kind_of(run) == "run"  # was "a folder of runs", whose one run then could not be read
    with deadline(10), pytest.raises(GentoolError, match="config.json is a named pipe, not a regular file$"):
        collect.collect_run(run, "run", "run")


@pytest.mark.parametrize("kind", ["pipe", "folder", "/dev/zero", "dangling"])
def test_summary_of_a_run_names_its_metrics_json(run, entry_point, kind):
    special(run / "metrics.json", kind)
    with deadline(20):
        done = entry_point("summary", run, cwd=run.parent)
    assert done.returncode == 1 and done.stderr == f"error: TARGET: {run / 'metrics.json'} {KINDS[kind]}\n"


@pytest.mark.parametrize("kind", ["pipe", "folder", "/dev/zero"])
def test_resume_names_a_checkpoint_that_is_not_a_regular_file(run, entry_point, kind):
    """`train --resume RUN` with a pipe, a folder or a link to /dev/zero as last.safetensors said RUN "holds no
    last.safetensors and files that are not gentool's"."""
    special(run / "last.safetensors", kind)
    with deadline(20):
        done = entry_point("train", "--resume", run, "--epochs", "3", "-q", cwd=run.parent)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: --resume: {run / 'last.safetensors'} {KINDS[kind]}; expected a .safetensors "
                           f"checkpoint written by gentool\n")


@pytest.mark.parametrize("kind", ["pipe", "folder"])
def test_a_couplings_manifest_that_is_not_a_regular_file_is_named(tmp_path, kind):
    """A pipe as a couplings folder's couplings.json made it "a folder of images" that held none."""
    from gentool import couplings

    special(tmp_path / "couplings.json", kind)
    assert couplings.is_couplings(tmp_path)
    with deadline(10), pytest.raises(GentoolError) as err:
        couplings.read_manifest(tmp_path)
    assert str(err.value) == f"--data: {tmp_path / 'couplings.json'} {KINDS[kind]}"


@pytest.fixture()
def site(tmp_path, monkeypatch):
    """A folder on sys.path for distributions; gentool's view of packages and plugins as new."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(installed, "_warned", set())
    monkeypatch.setattr(installed, "_verdicts", {}, raising=False)  # (raising=False: for the check without it)
    monkeypatch.setattr(registry, "_failed", {})
    return tmp_path


def test_a_package_of_thousands_of_broken_entry_points_is_a_few_warnings_and_bounded_work(site, monkeypatch):
    """200,000 entry points to modules that do not exist: each was tried and warned about (minutes). Now at most
    MAX_PER_DISTRIBUTION of a package are tried, a few warned about and the rest counted in one line; an
    entry_points.txt larger than any real one is not parsed at all."""
    lines = "".join(f"m{i} = missing_module_{i}\n" for i in range(1000))
    dist_info(site, "many-broken", "[gentool.models]\n" + lines)
    huge = dist_info(site, "huge-broken", "[gentool.models]\n" + lines * 20)  # > MAX_ENTRY_POINTS_BYTES
    assert (huge / "entry_points.txt").stat().st_size > 256 << 10  # installed.MAX_ENTRY_POINTS_BYTES
    tried = []
    declared = registry._declared

    def counted(module, *args, **kwargs):
        tried.append(module)
        return declared(module, *args, **kwargs)

    monkeypatch.setattr(registry, "_declared", counted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = {m.name for m in registry.describe_models()}
    said = [str(w.message) for w in caught if "broken" in str(w.message)]
    assert "vae" in names and sum(m.startswith("missing_module_") for m in tried) == 100  # MAX_PER_DISTRIBUTION
    assert len(said) == 6, said  # the cap, 3 failures, the count of the rest, the oversized file
    count = lambda words: sum(words in s for s in said)  # noqa: E731
    assert count("'many-broken' declares 1,000 gentool.models entry points") == 1
    assert count("cannot be read: no module named 'missing_module_") == 3
    assert count("'many-broken': 97 more of its entry points failed too") == 1
    assert count("huge_broken-0.1.dist-info/entry_points.txt is") == count("at most 256 KiB") == 1


def test_each_packages_metadata_is_looked_at_once_per_process(site, monkeypatch):
    """hide_unreadable (at start-up) and the entry-point and version look-ups each stat-ed every package's files."""
    dist_info(site, "one-plugin", "[gentool.models]\none = one_module\n")
    looked: list[str] = []
    stat = os.stat
    monkeypatch.setattr(installed.os, "stat", lambda p, *a, **k: looked.append(str(p)) or stat(p, *a, **k))
    installed.hide_unreadable()
    installed.entry_points("gentool.models")
    installed.entry_points("gentool.hooks")
    assert installed.version("one-plugin") == "0.1"
    ours = [p for p in looked if p.startswith(str(site / "one_plugin-0.1.dist-info") + os.sep)]
    assert ours and len(ours) == len(set(ours)), ours  # each file once (METADATA, entry_points.txt, PKG-INFO)


HANG = """
import sys, time
sys.path[:0] = [{site!r}]
from gentool import registry
from gentool.plugin_check import watchdog

def expired(message):
    import os
    print(message, file=sys.stderr, flush=True)
    os._exit(1)

with watchdog(0.5, expired):
    registry.load_entry_points("gentool.models", lambda *args: None)
print("not reached")
"""


def test_a_plugin_whose_import_hangs_is_named_and_the_check_stopped(site):
    """A plugin whose import sleeps for ever hung `models --check`. The watchdog names it and ends the process
    (here without torch: the registry's loading of the entry points alone)."""
    (site / "sleepy_plugin.py").write_text("import time\ntime.sleep(10_000)\n")
    dist_info(site, "sleepy", "[gentool.models]\nsleepy = sleepy_plugin\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HANG.format(site=str(site))], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr == ("the import of plugin 'sleepy' (entry point 'sleepy') did not finish within 0.5 s "
                           "(--import-timeout); the check is stopped: fix or uninstall that package\n")
    assert time.monotonic() - started < 30


def test_models_lists_a_hanging_plugin_without_importing_it_and_check_is_timed(site, invoke, monkeypatch):
    (site / "sleepy_plugin.py").write_text('"""Sleeps."""\nimport time\ntime.sleep(10_000)\n')
    dist_info(site, "sleepy", "[gentool.models]\nsleepy = sleepy_plugin\n")
    with deadline(20):
        listed = json.loads(invoke("models", "--json").stdout)
    assert "sleepy" in {m["name"] for m in listed} and "sleepy_plugin" not in sys.modules
    steps = []
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])  # nothing to load: the watch itself is tested
    registry.watch_plugins(steps.append)
    try:
        with registry.watched("the import of plugin 'x'"):
            pass
    finally:
        registry.watch_plugins(None)
    assert steps == ["the import of plugin 'x'", None]
    result = invoke("models", "--import-timeout", "5")
    assert result.exit_code == 2 and "--import-timeout: applies to --check only" in result.stderr


def test_hook_plugins_whose_source_cannot_be_read_are_a_few_warnings_too(site):
    """The hooks listing warned once per unreadable entry point (1,000 lines for one package): now as the models'."""
    from gentool.hooks import describe_hooks

    dist_info(site, "many-hooks", "[gentool.hooks]\n" + "".join(f"h{i} = gone_{i}:H\n" for i in range(1000)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hooks = describe_hooks()
    said = [str(w.message) for w in caught if "many" in str(w.message)]
    assert sum(dist == "many-hooks" for _, dist, _ in hooks) == 100 and len(said) == 5, said  # cap, 3, the rest
    assert sum("hook plugin 'many-hooks'" in s and "cannot be read" in s for s in said) == 3
    assert sum("97 more of its entry points failed too" in s for s in said) == 1
