"""Issue 26's fourth attacker hour: what it found, each class tested on several instances. Packages' metadata (the
files importlib.metadata reads to find plugins and versions) that are not regular files, and `--json` output
reached below Python's sys.stdout (descriptor 1: os.write, a child process)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gentool import installed, registry, versions
from gentool.errors import UsageError


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (TimeoutError) instead of hanging when the body blocks (an open() of a named pipe is interrupted)."""
    def expired(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def dist_info(site: Path, name: str, entry_points: str | None = None) -> Path:
    """A distribution `name` installed in `site` (METADATA and, given, entry_points.txt)."""
    folder = site / f"{name.replace('-', '_')}-0.1.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\nSummary: a test\n")
    if entry_points is not None:
        (folder / "entry_points.txt").write_text(entry_points)
    return folder


def replace(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "pipe":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    else:
        path.symlink_to(kind)


@pytest.fixture()
def site(tmp_path, monkeypatch):
    """A folder on sys.path holding one sound plugin distribution (model `sound-vae`, from its module)."""
    (tmp_path / "sound_plugin.py").write_text(
        "from gentool import register_model\nfrom gentool.models.vae import VAE\n\n\n@register_model('sound-vae')\n"
        "class Sound(VAE):\n    \"\"\"A sound plugin.\"\"\"\n")
    dist_info(tmp_path, "sound-plugin", "[gentool.models]\nsound-vae = sound_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(installed, "_warned", set())
    return tmp_path


@pytest.mark.parametrize("file, kind", [("entry_points.txt", "pipe"), ("METADATA", "pipe"),
                                        ("entry_points.txt", "loop"), ("METADATA", "loop")])
def test_a_package_whose_metadata_is_no_regular_file_is_skipped_naming_it(site, file, kind):
    """`gentool models` hung on a named pipe as a package's entry_points.txt or METADATA (importlib.metadata opens
    them plainly), and a link loop there was an OSError traceback; every command that loads plugins or hooks read
    them too. Now that package is skipped with one warning naming the file, and the others are listed."""
    bad = dist_info(site, "bad-plugin", "[gentool.models]\nbad-vae = sound_plugin\n")
    replace(bad / file, kind)
    with deadline(10), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [m.name for m in registry.describe_models()]
    assert "sound-vae" in names and "vae" in names
    assert [str(w.message) for w in caught if str(bad / file) in str(w.message)], [str(w.message) for w in caught]


def test_a_device_or_a_huge_file_as_package_metadata_is_never_read(site):
    """A link to /dev/zero as entry_points.txt took 16 GB before it was stopped; an oversized one is refused too."""
    zero = dist_info(site, "zero-plugin")
    replace(zero / "entry_points.txt", "/dev/zero")
    huge = dist_info(site, "huge-plugin")
    with open(huge / "entry_points.txt", "wb") as f:
        f.truncate(installed.MAX_BYTES + 1)
    with deadline(10), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = [ep.name for ep in installed.entry_points("gentool.models")]
    assert "sound-vae" in found
    said = " | ".join(str(w.message) for w in caught)
    assert "a character device" in said and "is 16,777,217 bytes" in said


def test_other_readers_of_package_metadata_do_not_see_a_package_whose_metadata_is_a_pipe(site, monkeypatch):
    """torch's import (its device-backend plugins) and triton's (its backends) read every package's entry points
    with importlib.metadata itself: `models --check` and `train` still hung on the pipe. At start-up gentool hides
    such a package from importlib.metadata for the process, when, and only when, there is one."""
    import importlib.machinery
    import importlib.metadata as md

    finder = importlib.machinery.PathFinder
    listed = finder.find_distributions
    monkeypatch.setattr(finder, "find_distributions", listed)  # put back after the test
    installed.hide_unreadable()
    assert finder.find_distributions == listed  # nothing to hide: importlib.metadata as it was
    replace(dist_info(site, "piped-backend", "[torch.backends]\nx = y\n") / "entry_points.txt", "pipe")
    with deadline(10), pytest.warns(UserWarning, match="entry_points.txt is a named pipe"):
        installed.hide_unreadable()
    with deadline(10):  # importlib.metadata's own functions, as torch and triton call them
        assert not md.entry_points(group="torch.backends").select(name="x")
        assert "sound-vae" in [ep.name for ep in md.entry_points(group="gentool.models")]


def test_a_version_is_not_read_from_a_pipe(site):
    """torch's and torchvision's versions are read from their METADATA the same way (doctor, the start check)."""
    replace(dist_info(site, "piped-package") / "METADATA", "pipe")
    with deadline(10), pytest.warns(UserWarning, match="named pipe"):
        assert versions.installed("piped-package") is None
    assert versions.installed("sound-plugin") == "0.1"


NOISY = """
import os, subprocess, sys
from gentool.cli.options import json_stdout, print_json
with json_stdout(True):
    print("python-level noise")
    os.write(1, b"descriptor-level noise\\n")
    subprocess.run([sys.executable, "-c", "print('child process noise')"], check=True)
    print_json({"result": 1})
os.write(1, b"after\\n")
"""


def test_json_stdout_holds_the_result_alone_whatever_writes_to_descriptor_1():
    """A plugin writing with os.write(1, ...) (or a C extension, or a child process inheriting stdout) corrupted
    `--json` output: only sys.stdout was redirected. Descriptor 1 now points at stderr while the command runs."""
    done = subprocess.run([sys.executable, "-c", NOISY], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result, after = done.stdout.rsplit("}", 1)
    assert json.loads(result + "}") == {"result": 1} and after == "\nafter\n"  # stdout is back afterwards
    for noise in ("python-level noise", "descriptor-level noise", "child process noise"):
        assert noise in done.stderr


# --- the size of the work: couplings read without a memory bound -------------------------------------------------

def couplings_folder(root: Path, parts: int = 2) -> Path:
    """A couplings folder (as `gentool distill` keeps) of `parts` parts of tiny 1×8×8 pairs."""
    import torch

    from gentool import couplings as cp

    teacher = {"checkpoint": "t.safetensors", "model": "flow", "step": 1, "epoch": 1, "weights": "raw",
               "sampling": {"steps": 2}}
    cp.new_manifest(root, teacher, {"geometry": {"channels": 1, "height": 8, "width": 8, "num_classes": 0}}, 0,
                    (1, 8, 8))
    for k in range(parts):
        n = cp.PART
        cp.write_part(root, k, torch.full((n, 1, 8, 8), k, dtype=torch.uint8), torch.zeros(n, 1, 8, 8),
                      torch.full((n,), -1))
    return root


def test_couplings_beyond_the_memory_bound_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """`train --data COUPLINGS` read every part whole, whatever the manifest claimed: a forged part of 10⁶ pairs
    at 3×64×64 (34 GiB) was mapped and read (a MemoryError traceback under a memory limit). Now the pairs' bytes are
    counted from the manifest against the bound data sets have, and only the rows asked for are read."""
    from gentool import couplings as cp
    from gentool import folders

    root = couplings_folder(tmp_path / "pairs")
    per_pair = 64 + 2 * 64 + 8
    monkeypatch.setattr(folders, "memory_bound", lambda: 600 * per_pair)
    # (one check with distill --pairs': both say how many fit)
    with pytest.raises(UsageError, match=r"--data: 1,000 couplings in .* take .* at most .* --limit N \(at most 600 "
                                         r"couplings of this teacher fit\)"):
        cp.load_couplings(root)
    with pytest.raises(UsageError, match="couplings"):
        cp.load_couplings(root, limit=700)
    data = cp.load_couplings(root, limit=550)  # within the bound: the first part and 50 rows of the second
    assert len(data.images) == 550 and int(data.images[-1].max()) == 1 and data.latents.shape == (550, 1, 8, 8)


# --- names that are not UTF-8 (a file system gives them as surrogate escapes) -------------------------------------

@pytest.mark.parametrize("name", [b"ok/\xff\xfe.png", b"caf\xe9/a.png", b"ok/sub\xe9/c.png"])
def test_a_folder_with_names_that_are_not_utf8_is_read(tmp_path, monkeypatch, name):
    """A JPEG/PNG folder holding a file or class folder named in Latin-1 (not UTF-8) was a UnicodeEncodeError
    traceback while hashing the names for the cache."""
    import numpy as np
    from PIL import Image

    from gentool import folder_cache
    from gentool.data import load_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(folder_cache, "CACHE_MIN_BYTES", 0)  # cached (named by a hash of the names) at any size
    root = tmp_path / "own"
    for rel in (b"ok/a.png", b"ok/b.png", name):
        path = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(os.fsdecode(path), format="PNG")
    data = load_dataset(str(root))
    assert len(data.images) == 3


# --- an error naming another argument than the one given -----------------------------------------------------------

@pytest.mark.parametrize("target, said", [("runs/no-such-run", "TARGET: runs/no-such-run does not exist"),
                                          ("./gone.ckpt", "TARGET: ./gone.ckpt does not exist"),
                                          ("vaee", "TARGET: unknown model 'vaee' (did you mean vae?)"),
                                          ("pipe", "TARGET: pipe is a named pipe")])
def test_summary_names_its_target_argument(tmp_path, monkeypatch, invoke, target, said):
    """`gentool summary runs/typo` said "MODEL: unknown model 'runs/typo'": a missing run directory was taken for a
    model name, and errors named arguments summary does not have (MODEL, CKPT)."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo("pipe")
    result = invoke("summary", target)
    assert result.exit_code == 2 and said in result.stderr and "MODEL" not in result.stderr, result.stderr


# --- lost user data: --overwrite removed more than the run's own files ---------------------------------------------

def test_overwrite_removes_the_runs_own_files_and_no_file_of_the_users(tmp_path):
    """`train --out RUN --overwrite` ("only gentool's own files in it are removed") deleted every *.png, *.gif and
    *.safetensors in RUN: a grid the user drew there with `gentool sample`, a checkpoint copied aside, a walk GIF,
    a PNG in samples/. Now only the names a run writes are removed."""
    from gentool import run_start, rundir

    path = tmp_path / "run"
    (path / "samples").mkdir(parents=True)
    ours = ["config.json", "metrics.json", "last.safetensors", "best.safetensors", "epoch_0002.safetensors",
            "step_00000010.safetensors", "loss.png", "progress.gif", "samples/epoch_0001.png", "samples/latest.png",
            "samples/teacher.png"]
    users = ["digits.png", "last-good-copy.safetensors", "walk.gif", "samples/my_pick.png", "notes.txt"]
    for name in ours + users:
        (path / name).write_bytes(b"x")
    start = run_start.RunStart(path)
    start.take(overwrite=True)
    start.keep()
    rundir.release_run(path)
    left = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and ".gentool" not in p.name)
    assert left == sorted(users)


# --- a value no check looked at: the extractor recipe's batch size ---------------------------------------------------

@pytest.mark.parametrize("recipe", ['{"batch_size": 1}'])
def test_an_extractor_recipe_batch_batchnorm_cannot_train_on_is_refused(monkeypatch, recipe):
    """GENTOOL_EXTRACTOR_RECIPE='{"batch_size": 1}' passed its check and `gentool prepare` ended in BatchNorm's
    traceback ("Expected more than 1 value per channel")."""
    from gentool.datatypes import Geometry
    from gentool.metrics.extractor import default_recipe

    monkeypatch.setenv("GENTOOL_EXTRACTOR_RECIPE", recipe)
    with pytest.raises(UsageError, match="GENTOOL_EXTRACTOR_RECIPE.*batch_size"):
        default_recipe(Geometry(1, 28, 28, 10))


# --- the example plugin's hook: a named pipe as its log file --------------------------------------------------------

def test_the_example_plugins_log_file_is_never_a_pipe_it_waits_on(tmp_path):
    """GENTOOL_JSONL naming a named pipe stalled the run at its first epoch's end: the example plugin (the one the
    plugin guide shows) opened it with open(). It now appends as gentool does: a pipe is an OSError (a failed hook,
    warned), and a regular file gets its line."""
    import importlib.util
    from types import SimpleNamespace

    hooks = Path(__file__).resolve().parents[1] / "examples" / "plugin" / "gentool_lsgan" / "hooks.py"
    spec = importlib.util.spec_from_file_location("example_plugin_hooks_under_test", hooks)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.mkfifo(tmp_path / "pipe")
    with deadline(10), pytest.raises(OSError, match="named pipe"):
        module.JsonlLogger(str(tmp_path / "pipe")).on_epoch_end(SimpleNamespace(run_dir="run"), {"epoch": 1}, None)
    module.JsonlLogger(str(tmp_path / "log.jsonl")).on_epoch_end(SimpleNamespace(run_dir="run"), {"epoch": 1}, None)
    assert json.loads((tmp_path / "log.jsonl").read_text()) == {"run_dir": "run", "epoch": 1}
