"""Ctrl-C while a new run starts leaves the --out path as it was (no folder, or the run that was there with all its
files, also one that --overwrite would have replaced), or a run that resumes: never an empty or dead-end folder.
The moments are hit exactly: Ctrl-C inside an import, where gentool leaves at once (gentool.cli.on_sigint), and a
KeyboardInterrupt anywhere else before the training loop runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gentool import fileio, rundir, run_start, undo

# Ctrl-C inside an import (as when filelock, PIL or torch loads a module on first use): gentool's SIGINT handler
# (gentool.cli.on_sigint) ends the process at once. `import ctrl_c` is that moment, anywhere in the code after this.
CTRL_C_IN_AN_IMPORT = """
import os, signal, sys
from pathlib import Path
import gentool.cli
signal.signal(signal.SIGINT, gentool.cli.on_sigint)
sys.path.insert(0, sys.argv.pop())
"""
CTRL_C = "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\n"
# A start interrupted right after one of its steps.
INTERRUPTED_START = """
from gentool import fileio, rundir, run_start
step, path, overwrite = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
owner, name = {"lock": (rundir, "lock_run"), "set aside": (os, "rename"), "samples": (fileio, "make_dirs")}[step]
real = getattr(owner, name)
def then_ctrl_c(*args, **kwargs):
    setattr(owner, name, real)
    real(*args, **kwargs)
    import ctrl_c
setattr(owner, name, then_ctrl_c)
run_start.prepare_new(path, overwrite)
print("not interrupted")
"""


def ctrl_c_in_an_import(tmp_path: Path, script: str, *args, signal: str = "SIGINT") -> None:
    """Run `script` until its `import ctrl_c` (which sends `signal`): gentool's exit then (130 "interrupted", or
    143 "terminated" for SIGTERM; one line)."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "ctrl_c.py").write_text(CTRL_C.replace("SIGINT", signal))
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_AN_IMPORT.replace("SIGINT", signal) + script,
                           *map(str, args), modules], capture_output=True, text=True, timeout=60)
    expected = (143, "terminated") if signal == "SIGTERM" else (130, "interrupted")
    assert (done.returncode, done.stderr.strip()) == expected, done.stdout + done.stderr


def tree(path: Path) -> dict[str, bytes | None]:
    return {str(f.relative_to(path)): f.read_bytes() if f.is_file() else None for f in sorted(path.rglob("*"))}


def old_run(path: Path, finished: bool = True) -> dict:
    """A run folder as a run left it (with a file of the user's): finished, or stopped before its first checkpoint."""
    (path / rundir.SAMPLES).mkdir(parents=True)
    (path / rundir.CONFIG).write_text(json.dumps({"gentool_version": "0", "model": "vae"}))
    (path / rundir.METRICS).write_text('{"epochs": []}')
    if finished:
        (path / rundir.LAST).write_bytes(b"the old run's weights")
        (path / rundir.SAMPLES / "epoch_0001.png").write_bytes(b"png")
        (path / "notes.txt").write_text("the user's own")
    return tree(path)


CASES = [("new", "lock", False), ("new", "samples", False), ("run", "lock", True), ("run", "set aside", True),
         ("run", "samples", True), ("unstarted", "set aside", False), ("unstarted", "samples", False)]


@pytest.mark.parametrize("there, step, overwrite", CASES)
def test_ctrl_c_during_an_import_leaves_the_out_path_as_it_was(tmp_path, there, step, overwrite):
    path = tmp_path / "runs" / "run"  # a new one's parent is made too, and goes with it
    before = None if there == "new" else old_run(path, finished=there == "run")
    ctrl_c_in_an_import(tmp_path, INTERRUPTED_START, step, path, int(overwrite))
    assert (tree(path) if path.exists() else None) == before and path.parent.exists() == (there != "new")


@pytest.mark.parametrize("helper", ["atomic_open", "staged"])
def test_ctrl_c_during_an_import_leaves_no_temporary(tmp_path, helper):
    """The same for the temporaries files are written through (a run's, an export's)."""
    out = tmp_path / "out"
    out.mkdir()
    ctrl_c_in_an_import(tmp_path, f"from gentool import fileio\nwith fileio.{helper}(Path(sys.argv[1])):\n"
                                  f"    import ctrl_c\n", out / "file.bin")
    assert not any(out.iterdir())


@pytest.mark.parametrize("there, step, overwrite", CASES)
def test_an_interrupted_or_failed_start_is_undone(tmp_path, monkeypatch, there, step, overwrite):
    """KeyboardInterrupt (or an error) after a step of the start, in this process: the same promise."""
    path = tmp_path / "runs" / "run"
    before = None if there == "new" else old_run(path, finished=there == "run")
    owner, name = {"lock": (rundir, "lock_run"), "set aside": (run_start.os, "rename"),
                   "samples": (fileio, "make_dirs")}[step]
    real = getattr(owner, name)

    def then_ctrl_c(*args, **kwargs):
        monkeypatch.setattr(owner, name, real)
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_start.prepare_new(path, overwrite)
    assert (tree(path) if path.exists() else None) == before and path.parent.exists() == (there != "new")
    assert not rundir.holds(path)  # its lock is given up: the same process may start there again


def test_a_start_is_kept_once_its_loop_runs_and_undone_before(tmp_path):
    """Ctrl-C between the run's files and its loop (a hook's on_train_start) puts the replaced run back; a start
    that reaches its loop replaces it (its files only: the user's stay), leaving no set-aside folder behind."""
    from gentool.hooks import TrainHook
    from gentool.train import TrainOptions, train

    class CtrlC(TrainHook):
        def on_train_start(self, session, reporter):
            assert (session.run_dir / rundir.CONFIG).is_file()
            raise KeyboardInterrupt

    path = tmp_path / "run"
    before = old_run(path)
    opts = dict(model="vae", data="mnist-sample", limit=16, epochs=1, width=0.25, out=str(path), sample_every=0,
                overwrite=True, precision="fp32")
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(**opts), hooks=[CtrlC()])
    assert tree(path) == before
    train(TrainOptions(**opts))
    after = tree(path)
    assert after[rundir.LAST] != before[rundir.LAST] and after["notes.txt"] == before["notes.txt"]
    assert "samples/epoch_0001.png" not in after and not [f for f in after if f.startswith(run_start.SET_ASIDE)]


@pytest.mark.parametrize("there", ["new", "run"])
def test_ctrl_c_outside_the_code_that_undoes_a_start_is_undone_all_the_same(tmp_path, monkeypatch, there):
    """A Ctrl-C landing after the start but outside the code that undoes it (here: as new_session hands the session
    over; under load the test journey's Ctrl-C fell there) left the undo to the process's exit, after train had
    given up the folder's lock, when an undo no longer touches the folder: a run folder without a checkpoint
    stayed (or the files of the run --overwrite replaces stayed set aside). Now a start not kept is undone before
    its folder's lock is given up."""
    from gentool import session
    from gentool.train import TrainOptions, train

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "_seed_rank", ctrl_c)
    path = tmp_path / "run"
    before = None if there == "new" else old_run(path)
    opts = TrainOptions(model="vae", data="mnist-sample", limit=16, epochs=1, width=0.25, out=str(path),
                        sample_every=0, overwrite=there == "run", precision="fp32")
    with pytest.raises(KeyboardInterrupt):
        train(opts)
    assert (tree(path) if path.exists() else None) == before and not rundir.holds(path)


# SIGTERM (`kill`, a batch system) while a run starts: the same promise as Ctrl-C, exit 143 ("terminated").
@pytest.mark.parametrize("there, step, overwrite", [("new", "lock", False), ("run", "set aside", True),
                                                    ("unstarted", "samples", False)])
def test_sigterm_during_an_import_leaves_the_out_path_as_it_was(tmp_path, there, step, overwrite):
    path = tmp_path / "runs" / "run"
    before = None if there == "new" else old_run(path, finished=there == "run")
    ctrl_c_in_an_import(tmp_path, INTERRUPTED_START, step, path, int(overwrite), signal="SIGTERM")
    assert (tree(path) if path.exists() else None) == before and path.parent.exists() == (there != "new")


# SIGTERM anywhere else in the start (not inside an import): raised where it lands, undone, one line, exit 143.
SIGTERM_AT_THE_EDGE = """
import os, signal, sys
from pathlib import Path
import typer
import gentool.cli
from gentool.cli.options import cli_errors
signal.signal(signal.SIGTERM, gentool.cli.on_sigint)
""" + INTERRUPTED_START.replace("    import ctrl_c\n", "    os.kill(os.getpid(), signal.SIGTERM)\n").replace(
    "run_start.prepare_new(path, overwrite)\n",
    "try:\n    cli_errors(lambda: run_start.prepare_new(path, overwrite))()\nexcept typer.Exit as exc:\n"
    "    sys.exit(exc.exit_code)\n")


@pytest.mark.parametrize("there, step, overwrite", [("new", "samples", False), ("run", "set aside", True)])
def test_sigterm_in_a_start_is_undone_in_one_line_with_exit_143(tmp_path, there, step, overwrite):
    path = tmp_path / "runs" / "run"
    before = None if there == "new" else old_run(path, finished=there == "run")
    done = subprocess.run([sys.executable, "-c", SIGTERM_AT_THE_EDGE, step, str(path), str(int(overwrite))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and done.stderr.strip() == "terminated", done.stdout + done.stderr
    assert (tree(path) if path.exists() else None) == before and path.parent.exists() == (there != "new")


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt here (as in gentool before its training loop), whatever the test runner set."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("made", ["temporary", "write probe", "cache folder"])
def test_a_ctrl_c_right_after_a_file_is_made_leaves_nothing(tmp_path, monkeypatch, ctrl_c_raises, made):
    """A real SIGINT the instant gentool has made a file it means to remove (the lock owner's temporary, a write
    probe, a cache entry's folder): the file goes, and a new run folder with it. Before, a Ctrl-C between making the
    file and registering its removal left the file, and with it the run folder the start had made (found by a
    stress test of the journey: 1 in 40 starts interrupted under load)."""
    owner, name = {"temporary": (fileio, "_create_temporary"), "write probe": (os, "open"),
                   "cache folder": (tempfile, "mkdtemp")}[made]
    real = getattr(owner, name)

    def then_ctrl_c(*args, **kwargs):
        result = real(*args, **kwargs)
        if made != "write probe" or ".gentool-write-test." in str(args[0]):
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(owner, name, then_ctrl_c)
    path = tmp_path / "runs" / "run"
    with pytest.raises(KeyboardInterrupt):
        if made == "cache folder":
            path.mkdir(parents=True)
            undo.created(lambda: Path(tempfile.mkdtemp(dir=path)), lambda d: d.rmdir())
            raise AssertionError("not interrupted")
        run_start.prepare_new(path, False)
    assert not path.parent.exists() if made != "cache folder" else not any(path.iterdir())
