"""Hour 5b's instances in distill and the run folder (the lead's side): --pairs bounded before drawing, a teacher
checkpoint that is a pipe named as one, a default student folder that is a link refused, a folder of a user's
files not called a run, and a closed terminal (SIGHUP) stopping a run saved where it would otherwise kill it."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from gentool import couplings, rundir
from gentool.errors import GentoolError, UsageError
from gentool.guards import StopSignals

MNIST = {"channels": 1, "height": 28, "width": 28}


def test_pairs_beyond_memory_or_disk_are_refused_before_drawing(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=r"--pairs: 1,000,000,000 couplings take .* in memory; at most .* are read; "
                                         r"pass a smaller --pairs N \(at most [0-9,]+ couplings of this teacher fit\)"):
        couplings.check_drawing(tmp_path / "c", MNIST, (1, 28, 28), 10**9, 0)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: _Free(1000))
    with pytest.raises(GentoolError, match=r"--pairs: only 0\.0 MiB free in .*; drawing 1,000 more couplings needs "
                                           r"about 2\.3 MiB; pass a smaller --pairs"):
        couplings.check_drawing(tmp_path / "c" / "d", MNIST, (1, 28, 28), 1500, 500)
    couplings.check_drawing(tmp_path, MNIST, (1, 28, 28), 500, 500)  # all drawn: nothing to hold


class _Free:
    def __init__(self, free):
        self.free = free


def test_a_folder_of_other_files_is_not_said_to_hold_a_run(tmp_path):
    (tmp_path / "holiday.png").write_bytes(b"x")
    assert "holds files that are not a gentool run ('holiday.png'" in str(rundir.taken(tmp_path, "R"))
    (tmp_path / rundir.LAST).write_bytes(b"x")
    assert "already holds a run; continue it with R" in str(rundir.taken(tmp_path, "R"))


def test_distill_names_a_teacher_checkpoint_that_is_a_pipe_and_a_default_folder_that_is_a_link(tmp_path):
    from gentool.distill import distill
    from gentool.distill_options import DistillOptions

    run = tmp_path / "flow"
    run.mkdir()
    os.mkfifo(run / rundir.LAST)
    with pytest.raises(UsageError, match="last.safetensors is a named pipe, not a regular file"):
        distill(DistillOptions(teacher=str(run)))
    os.unlink(run / rundir.LAST)
    (run / rundir.LAST).write_bytes(b"")  # nothing is loaded before the student's folder is looked at
    (tmp_path / "mine").mkdir()
    os.symlink(tmp_path / "mine", tmp_path / "flow-reflow2")
    with pytest.raises(UsageError, match=r"flow-reflow2 is a symbolic link \(to .*mine\); .* pass --out"):
        distill(DistillOptions(teacher=str(run), steps=2))


@pytest.mark.parametrize("before, stops", [(signal.SIG_DFL, True), (signal.SIG_IGN, False)])
def test_a_closed_terminal_stops_a_run_saved_unless_hangups_are_ignored(before, stops):
    previous = signal.signal(signal.SIGHUP, before)
    try:
        with StopSignals() as signals:
            if stops:
                os.kill(os.getpid(), signal.SIGHUP)
            else:
                assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # nohup's choice kept
        assert signals.signum == (signal.SIGHUP if stops else None)
        assert signal.getsignal(signal.SIGHUP) is before
    finally:
        signal.signal(signal.SIGHUP, previous)
