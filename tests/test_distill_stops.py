"""Issue 26 leftovers: distill's drawing of couplings stops within a batch's time, not a whole 500-pair part's, and a
second stop signal while drawing still ends with the line that says how to continue (it used to exit at once,
silently), never leaving a damaged part behind (gentool.couplings.usable_parts would set one aside)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gentool import couplings as cp
from gentool import distill as distill_mod
from gentool.distill_options import DistillOptions
from gentool.errors import UsageError
from gentool.guards import Interrupted, StopSignals
from test_attack_hour6 import _fake_teacher


class Teacher:
    """A flow-like teacher of 1×8×8 images whose drawing sends itself `signals` stop signals during its first
    batch (as a user's Ctrl-C lands while the sampler runs), recording the size of every batch it is asked for."""

    name, latent_shape = "flow", (1, 8, 8)

    def __init__(self, signals: int):
        self.signals, self.batches = signals, []

    def sample_latent(self, n, g):
        return torch.randn(n, *self.latent_shape, generator=g)

    def generate(self, n, g, latents=None, settings=None, batch_size=500):
        self.batches.append(n)
        for _ in range(self.signals if len(self.batches) == 1 else 0):
            os.kill(os.getpid(), signal.SIGINT)
        return (latents.clamp(-1, 1) + 1) / 2  # deterministic, as a teacher's sampler for couplings is


def checkpoint(root: Path, teacher: Teacher):
    (root / "flow").mkdir()
    return SimpleNamespace(model=teacher, path=root / "flow" / "last.safetensors", state={"step": 1, "epoch": 1},
                           weights="raw", data={"geometry": {"channels": 1, "height": 8, "width": 8, "num_classes": 0}})


def draw(tmp_path, teacher, pairs=2 * cp.PART):
    ckpt = checkpoint(tmp_path, teacher)
    with StopSignals():  # distill's own, around the drawing
        return distill_mod.draw_couplings(ckpt, {"steps": 2}, DistillOptions(teacher="x", pairs=pairs),
                                          distill_mod.Reporter(), None)


def test_one_stop_signal_ends_the_drawing_after_the_current_batch_and_writes_no_part_of_it(tmp_path):
    teacher = Teacher(signals=1)
    folder, complete = draw(tmp_path, teacher)
    assert not complete
    assert len(teacher.batches) == 1 and teacher.batches[0] < cp.PART  # was: the whole part of 500 drawn, written
    assert not list(folder.glob("part_*")) and not list(folder.glob(".*.tmp"))
    assert cp.usable_parts(folder, cp.read_manifest(folder, "RUN"), None, None) == 0  # (no part: nothing to check)


def test_a_second_stop_signal_while_drawing_stops_at_once_without_a_damaged_part(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "_exit", lambda code: pytest.fail(f"exited at once ({code}), without a line"))
    with pytest.raises(KeyboardInterrupt):
        draw(tmp_path, Teacher(signals=2))
    folder = next((tmp_path / "flow" / "couplings").iterdir())
    assert not list(folder.glob("part_*")) and not list(folder.glob(".*.tmp"))


def test_a_part_drawn_in_batches_is_the_same_in_any_session(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    folders = [draw(tmp_path / name, Teacher(signals=0), pairs=cp.PART)[0] for name in "ab"]
    parts = [cp._read_part(cp.part_path(f, 0), cp.read_manifest(f, "RUN"), "RUN", cp.PART) for f in folders]
    assert all(torch.equal(parts[0][k], parts[1][k]) for k in parts[0])


def test_a_second_stop_signal_while_drawing_still_prints_how_to_continue(monkeypatch, tmp_path):
    def draw_twice_stopped(ckpt, settings, opts, reporter, deadline, student):
        with StopSignals(raise_again=True):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the second signal did not stop the drawing")

    teacher = _fake_teacher(monkeypatch, tmp_path, draw_twice_stopped)
    monkeypatch.setattr(distill_mod, "couplings_folder", lambda *a: tmp_path / "couplings")
    with pytest.raises(Interrupted, match=r"terminated while drawing couplings .*; continue with: ") as stopped:
        distill_mod.distill(DistillOptions(teacher=teacher, out=str(tmp_path / "student")))
    assert stopped.value.exit_code == 128 + signal.SIGTERM


class SlowTeacher(Teacher):
    """A teacher whose first batch takes 100 s of distill's clock (`now`), past the time budget."""

    def __init__(self, now):
        super().__init__(signals=0)
        self.now = now

    def generate(self, n, g, latents=None, settings=None, batch_size=500):
        self.now[0] += 100
        return super().generate(n, g, latents, settings, batch_size)


class Said(distill_mod.Reporter):
    def __init__(self):
        super().__init__()
        self.lines = []

    def message(self, text, *args, **kwargs):
        self.lines.append(text)


def test_max_minutes_ends_the_drawing_within_a_batch_and_says_why_no_part_was_kept(tmp_path, monkeypatch):
    """Walk w11: `distill --max-minutes 0.1` drew a whole part (70 s) before looking at the clock."""
    now = [0.0]
    monkeypatch.setattr(distill_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    teacher, said = SlowTeacher(now), Said()
    ckpt = checkpoint(tmp_path, teacher)
    with StopSignals(), pytest.raises(UsageError, match="^--max-minutes: 0.1 ended inside the first part of 500 "
                                                          "couplings, which is dropped .*give more minutes"):
        distill_mod.draw_couplings(ckpt, {"steps": 2}, DistillOptions(teacher="x", pairs=cp.PART, max_minutes=0.1),
                                   said, 6.0)
    # (attacker hour h26v: "stopped ...; continue with: the same command", which stopped there each time, at exit 0)
    assert len(teacher.batches) == 1 and not list((tmp_path / "flow" / "couplings").rglob("part_*"))
    with StopSignals():  # drawn whole without a budget; then a budget the start used up draws nothing, says so
        assert distill_mod.draw_couplings(ckpt, {"steps": 2}, DistillOptions(teacher="x", pairs=cp.PART), said,
                                          None)[1]
        with pytest.raises(UsageError, match="^--max-minutes: 0.001 was used up before any work"):
            distill_mod.draw_couplings(ckpt, {"steps": 2}, DistillOptions(teacher="x", pairs=cp.PART,
                                                                           max_minutes=0.001), said, now[0])


def test_no_student_starts_when_the_drawing_used_the_time_budget(monkeypatch, tmp_path):
    """It used to start the student with 0.01 min left (and its stop line said '0.01 min')."""
    def draw_slowly(ckpt, settings, opts, reporter, deadline, student):
        time.sleep(max(0.0, deadline - time.monotonic()))
        return tmp_path / "couplings", True

    teacher = _fake_teacher(monkeypatch, tmp_path, draw_slowly)
    result = distill_mod.distill(DistillOptions(teacher=teacher, out=str(tmp_path / "s"), max_minutes=0.005))
    assert result["stopped"].startswith("stopped after drawing the couplings; continue with: ")
    assert not (tmp_path / "s").exists()


def test_a_hangup_reaches_the_drawing_inside_distills_own_stop_context():
    """Attacker hour h26v, F1: SIGHUP during the drawing was heard only by distill's outer context (around drawing
    and training), so the drawing went on for minutes; SIGTERM and SIGINT reached it."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a terminal's process has it (not the suite's nohup)
    try:
        with StopSignals() as outer, StopSignals(doing="stopping the drawing", raise_again=True) as inner:
            os.kill(os.getpid(), signal.SIGHUP)
            assert inner.signum == signal.SIGHUP and outer.signum is None and StopSignals.pending == signal.SIGHUP
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_students_budget_line_asks_for_the_users_budget_again():
    """Attacker hour h26x, F4: a distill whose --max-minutes stopped the student printed `train --resume STUDENT
    --max-minutes 0.02` (what the drawing had left), which run as printed trained one step a time."""
    from types import SimpleNamespace

    from gentool.distill import FromTeacher
    from gentool.resume import budget_line

    session = SimpleNamespace(run_dir="s", opts=SimpleNamespace(epochs=2, max_minutes=0.02, threads=1, device=None))
    assert budget_line(session, []).endswith("--epochs 2 --max-minutes 0.02 --threads 1")
    hooks = [SimpleNamespace(resume_minutes=lambda: float("nan")), FromTeacher(None, {}, 0.3)]
    assert budget_line(session, hooks).endswith("--epochs 2 --max-minutes 0.3 --threads 1")
