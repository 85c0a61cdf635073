"""Attack hour 6's instances: a stop signal that lands after a loop's last check (a sweep trial's closing figures,
the last part of distill's couplings) was acknowledged and then forgotten, the sweep starting its next trial and
distill its training; distill stopped by a signal while drawing exited 0, as if it had finished; and a damaged
couplings folder (a hostile or another teacher's manifest, a truncated part) failed every later distill in one line
instead of being moved aside and drawn again, as every other cache entry is."""

from __future__ import annotations

import os
import re
import signal
import warnings
from types import SimpleNamespace

import pytest
import torch

from gentool import distill as distill_mod
from gentool import sweep as sweep_mod
from gentool.guards import Interrupted, StopSignals


def test_a_stop_received_by_an_inner_context_outlives_it_and_reaches_the_next():
    with StopSignals():
        with StopSignals() as inner:
            os.kill(os.getpid(), signal.SIGTERM)
        assert inner.signum == signal.SIGTERM and StopSignals.pending == signal.SIGTERM
        with StopSignals() as later:  # e.g. the training after distill's drawing: stops at its first check
            assert later.signum == signal.SIGTERM
    with StopSignals() as fresh:  # a new outermost context (the next command in this process) starts clean
        assert fresh.signum is None and StopSignals.pending is None


def test_a_signal_after_a_trials_last_check_stops_the_sweep_before_the_next_trial(monkeypatch, tmp_path):
    ran = []

    def trial(sweep_dir, index, runtime, reporter):
        ran.append(index)
        with StopSignals():  # train's own context: the signal lands after its loop's last check (closing figures)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sweep_mod, "read_manifest", lambda d: {"trials": [{"index": 0}, {"index": 1}]})
    monkeypatch.setattr(sweep_mod, "run_trial", trial)
    with pytest.raises(Interrupted) as stopped:
        sweep_mod.run_in_process(tmp_path, [0, 1], {}, lambda: None, lambda t: None)
    assert ran == [0] and stopped.value.exit_code == 128 + signal.SIGTERM


def _fake_teacher(monkeypatch, tmp_path, draw):
    import gentool.api
    import gentool.device

    run = tmp_path / "flow"
    run.mkdir()
    monkeypatch.setattr(distill_mod, "teacher_checkpoint", lambda t: run / "last.safetensors")
    monkeypatch.setattr(distill_mod, "load_teacher", lambda p, d: SimpleNamespace(model=None))
    monkeypatch.setattr(distill_mod, "teacher_settings", lambda m, o: {})
    monkeypatch.setattr(distill_mod, "check_room", lambda *a: None)
    monkeypatch.setattr(distill_mod, "draw_couplings", draw)
    monkeypatch.setattr(gentool.device, "pick_device", lambda d: torch.device("cpu"))
    monkeypatch.setattr(gentool.device, "choose_precision", lambda *a: SimpleNamespace(used="fp32"))
    monkeypatch.setattr(gentool.device, "prepare", lambda *a: None)
    monkeypatch.setattr(gentool.api, "train", lambda *a: pytest.fail("the student was trained after the stop"))
    return str(run)


@pytest.mark.parametrize("complete", [False, True])
def test_distill_stopped_by_a_signal_while_drawing_exits_as_interrupted(monkeypatch, tmp_path, complete):
    from gentool.distill_options import DistillOptions

    def draw(ckpt, settings, opts, reporter, deadline, student):
        with StopSignals():  # the signal lands in the last part (complete) or stops the drawing early
            os.kill(os.getpid(), signal.SIGINT)
        return tmp_path / "couplings", complete

    teacher = _fake_teacher(monkeypatch, tmp_path, draw)
    with pytest.raises(Interrupted, match=r"interrupted (after|while) drawing .*; continue with: ") as stopped:
        distill_mod.distill(DistillOptions(teacher=teacher, out=str(tmp_path / "student")))
    assert stopped.value.exit_code == 130


def test_distill_out_of_time_while_drawing_still_returns_the_continue_line(monkeypatch, tmp_path):
    from gentool.distill_options import DistillOptions

    teacher = _fake_teacher(monkeypatch, tmp_path, lambda *a: (tmp_path / "couplings", False))
    result = distill_mod.distill(DistillOptions(teacher=teacher, out=str(tmp_path / "student")))
    assert re.match(r"stopped while drawing couplings \(whole parts of [\d,]+ are kept; one stopped inside is drawn "
                    r"again\); continue with: ", result["stopped"]), result["stopped"]


# --- damaged couplings (distill's cache beside the teacher): moved aside and drawn again, never a failure on every run

def ZERO_NOISE(k):  # the noise of test_attack_hour4.couplings_folder's parts
    return torch.zeros(500, 1, 8, 8)


def DRAWN(z):  # the teacher's images from that noise: what test_attack_hour4.couplings_folder's parts hold, within
    return torch.zeros(len(z), 1, 8, 8, dtype=torch.uint8)  # rounding (part k's images are all k)


def _couplings(root):
    from test_attack_hour4 import couplings_folder

    from gentool import couplings as cp

    couplings_folder(root)
    return cp.read_manifest(root)


def part_header(path):
    """A part's safetensors header metadata, kept when a test rewrites its tensors (a part's header is checked)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def save_part(tensors, path):
    """Rewrite a part with `tensors` under its own header and their digest, so that the checks of the values
    themselves are what a test meets (with the old digest any rewrite is damage: test_couplings_digest)."""
    from safetensors.torch import save_file

    from gentool.digests import tensors_digest

    save_file(tensors, path, metadata={**part_header(path), "sha256": tensors_digest(tensors)})


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 3)


def _nan_noise(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_part({**tensors, "latents": torch.full_like(tensors["latents"], float("nan"))}, path)


def _bad_labels(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_part({**tensors, "labels": torch.full_like(tensors["labels"], -5)}, path)


def _pipe(path):
    os.unlink(path)
    os.mkfifo(path)


def _huge_noise(path):  # finite, within float16, but no standard normal draw
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_part({**tensors, "latents": torch.full_like(tensors["latents"], 60000)}, path)


def _other_noise(path):  # plausible noise, but not the part's seed's
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_part({**tensors, "latents": torch.randn(tensors["latents"].shape).half()}, path)


def _labelled(path):  # a class label in the pairs of an unconditional teacher
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_part({**tensors, "labels": torch.full_like(tensors["labels"], 3)}, path)


@pytest.mark.parametrize("damage, usable", [(_truncate, 1), (_nan_noise, 1), (_bad_labels, 1), (_pipe, 1),
                                            (_huge_noise, 1), (_other_noise, 1), (_labelled, 1),
                                            (os.unlink, 1), (None, 2)])
def test_a_damaged_couplings_part_is_moved_aside_and_drawn_again(tmp_path, damage, usable):
    from gentool import couplings as cp

    folder = tmp_path / "c"
    manifest = _couplings(folder)
    if damage:
        damage(cp.part_path(folder, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cp.usable_parts(folder, manifest, ZERO_NOISE, DRAWN) == usable
    said = [str(w.message) for w in caught]
    if damage in (None, os.unlink):  # a missing part is simply not drawn yet
        assert said == []
    else:
        assert len(said) == 1 and "part_00001.safetensors is damaged" in said[0], said
        assert "moved to part_00001.safetensors.bad, building it again" in said[0]
        assert os.path.lexists(folder / "part_00001.safetensors.bad") and cp.parts_done(folder) == 1


@pytest.mark.parametrize("manifest_damage", ["hostile", "another teacher", "a folder"])
def test_a_damaged_or_foreign_couplings_manifest_moves_the_folder_aside(tmp_path, manifest_damage):
    import json
    import shutil

    from gentool import couplings as cp

    folder = tmp_path / "c"
    manifest = _couplings(folder)
    if manifest_damage == "hostile":
        (folder / cp.MANIFEST).write_text(json.dumps({**manifest, "version": 10**15}))
    elif manifest_damage == "another teacher":  # e.g. the teacher's run was moved: its checkpoint path differs
        manifest = {**manifest, "teacher": {**manifest["teacher"], "checkpoint": "/elsewhere/t.safetensors"}}
    else:
        os.unlink(folder / cp.MANIFEST)
        (folder / cp.MANIFEST).mkdir()
    with pytest.warns(UserWarning, match=r"c is damaged \(.*\); moved to c\.bad, building it again"):
        assert cp.usable_parts(folder, manifest, ZERO_NOISE, DRAWN) == 0
    assert not folder.exists() and (tmp_path / "c.bad" / "part_00001.safetensors").is_file()
    cp.new_manifest(folder, manifest["teacher"], manifest["data"], manifest["seed"], manifest["latent_shape"])
    assert cp.read_manifest(folder) == manifest  # started again, in the same place
    shutil.rmtree(tmp_path / "c.bad")


def _images(path, value):  # well-formed, the right noise, but images the teacher did not draw from it
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_part({**tensors, "images": torch.full_like(tensors["images"], value)}, path)


@pytest.mark.parametrize("manifest_kept", [True, False])
def test_a_part_whose_images_are_not_the_teachers_is_moved_aside_manifest_or_not(tmp_path, manifest_kept):
    """Issue 26 F6: a part's noise was checked against its seed, not its images: a part of zeroed (here: white)
    images, with or without couplings.json, was trained on. Now a few rows of each part are drawn again."""
    from gentool import couplings as cp

    folder = tmp_path / "c"
    manifest = _couplings(folder)
    _images(cp.part_path(folder, 1), 255)
    if not manifest_kept:  # found without a manifest: distill writes a new one, the parts verified all the same
        os.unlink(folder / cp.MANIFEST)
    with pytest.warns(UserWarning, match=r"part_00001.safetensors is damaged \(its images are not the teacher's "
                                         r"samples from their noise: 2 drawn again differ by 255.0 levels on average"):
        assert cp.usable_parts(folder, manifest, ZERO_NOISE, DRAWN) == 1
    assert os.path.lexists(folder / "part_00001.safetensors.bad") and cp.parts_done(folder) == 1


def test_the_parts_rows_are_drawn_again_in_one_call_and_only_for_the_parts_needed(tmp_path):
    from gentool import couplings as cp

    folder = tmp_path / "c"
    manifest = _couplings(folder)
    _images(cp.part_path(folder, 1), 255)  # not needed by this student: not drawn again, not set aside
    calls = []
    assert cp.usable_parts(folder, manifest, ZERO_NOISE, lambda z: calls.append(len(z)) or DRAWN(z), 1) == 2
    assert calls == [cp.CHECK_ROWS]
    with pytest.warns(UserWarning, match="part_00001.safetensors is damaged"):
        assert cp.usable_parts(folder, manifest, ZERO_NOISE, lambda z: calls.append(len(z)) or DRAWN(z), 2) == 1
    assert calls == [cp.CHECK_ROWS, 2 * cp.CHECK_ROWS]  # both parts' rows, one call
    assert cp.check_rows(3, 500).tolist() == cp.check_rows(3, 500).tolist()  # the same rows on every run


# --- a run folder whose own name is longer than the file system takes -------------------------------------------

def test_a_run_folder_name_too_long_is_one_usage_line_naming_out(tmp_path):
    """`train --out EXISTING/<300 characters>`: stat itself failed (ENAMETOOLONG) before the start's own checks,
    and the command exited 1 with "error: PATH: File name too long", naming no option."""
    from gentool.errors import UsageError
    from gentool.run_start import prepare_new

    path = tmp_path / ("e" * 300)
    with pytest.raises(UsageError, match=r"^--out: cannot create run directory .* \(File name too long\)$"):
        prepare_new(path, False)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_folder_name_too_long_is_one_usage_line_naming_out(tmp_path):
    from gentool.errors import UsageError

    spec = sweep_mod.SweepSpec("vae", "mnist-sample", {"latent_dim": [2]}, tmp_path / ("e" * 300), {}, {"epochs": 1})
    with pytest.raises(UsageError, match=r"^--out: sweep directory .* cannot be made \(File name too long\)$"):
        sweep_mod.check_spec(spec)
