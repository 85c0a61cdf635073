"""`gentool distill` end to end on a tiny teacher: couplings drawn once and reused, a student trained in the
ordinary loop from the teacher's weights, resumed bit-exactly, taken by sample/evaluate/summary like any checkpoint,
and couplings files refused field by field when they are not what gentool wrote."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from gentool import couplings as cp
from gentool.checkpoint_meta import read_metadata
from gentool.cli.app import app
from gentool.metrics.extractor import RECIPE_ENV
from test_attack_hour6 import save_part
from test_metrics import TINY_RECIPE, one_thread  # noqa: F401 (an autouse fixture)

FAST = ("--teacher-steps", "1", "--pairs", "48", "--batch-size", "16", "--precision", "fp32", "-q")


@pytest.fixture(scope="module", autouse=True)
def small_parts():
    with pytest.MonkeyPatch.context() as mp:  # 500 teacher samples per part are a test's whole budget
        mp.setattr(cp, "PART", 32)
        yield


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, mnist_root):
    out = tmp_path_factory.mktemp("teacher") / "flow"
    result = run("train", "flow", "--data", "mnist", "--data-dir", mnist_root, "--limit", "32", "--batch-size", "16",
                 "--width", "0.25", "--epochs", "1", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "s"
    result = run("distill", teacher, "--out", out, "--epochs", "2", "--steps", "2", *FAST, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_the_student_is_a_reflow_checkpoint_naming_its_teacher(teacher, student):
    out, result = student
    meta = read_metadata(out / "last.safetensors")
    assert meta["model"] == "reflow" and meta["config"]["sample_steps"] == 2 and meta["config"]["width"] == 0.25
    data = meta["data"]
    assert data["teacher"]["checkpoint"] == str((teacher / "last.safetensors").absolute())
    assert data["teacher"]["model"] == "flow" and data["teacher"]["sampling"] == {"steps": 1, "solver": "euler"}
    assert data["source"] == "mnist" and data["couplings"] == result["couplings"]
    assert {p.name for p in (out / "samples").iterdir()} >= {"teacher.png", "epoch_0001.png", "epoch_0002.png"}
    history = json.loads((out / "metrics.json").read_text())
    assert history["events"][0]["kind"] == "initialised" and len(history["epochs"]) == 2
    # by default a critic sharpens the student (its weights and optimizer are part of the run)
    assert meta["config"]["adversarial"] == 0.5 and meta["config"]["beta1"] == 0.5
    assert {"critic_loss", "adversarial_weight"} <= set(history["epochs"][-1])
    assert any(k.startswith("model.critic.") for k in load_file(out / "last.safetensors"))


def test_the_student_starts_from_the_teacher_and_samples_in_its_own_steps(teacher, student):
    from gentool.checkpoint import load_checkpoint

    t = load_checkpoint(teacher / "last.safetensors").model
    s = load_checkpoint(student[0] / "last.safetensors").model
    assert s.sample_settings() == {"steps": 2, "solver": "euler"}
    # a few small steps from the teacher's weights: close to them, not equal
    diffs = [(a - b).abs().max().item() for a, b in zip(t.unet.parameters(), s.unet.parameters())]
    assert 0 < max(diffs) < 0.05


def test_resume_is_bit_exact_and_reuses_the_couplings(teacher, student, tmp_path):
    out = tmp_path / "s"
    first = run("distill", teacher, "--out", out, "--epochs", "1", "--steps", "2", *FAST)
    assert first.exit_code == 0, first.output
    assert "drawing" not in first.stderr  # the couplings the first student drew are reused
    again = run("distill", "--resume", out, "--epochs", "2", "-q")
    assert again.exit_code == 0, again.output
    a, b = load_file(student[0] / "last.safetensors"), load_file(out / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.")))
    taken = run("distill", teacher, "--out", out, *FAST)
    assert taken.exit_code == 2 and "--resume" in taken.stderr


def test_sample_evaluate_summary_and_report_take_the_student(student, mnist_root, tmp_path, monkeypatch):
    ckpt = student[0] / "last.safetensors"
    drawn = run("sample", ckpt, "--grid", "2x2", "--out", tmp_path / "g.png", "--json")
    assert drawn.exit_code == 0 and json.loads(drawn.stdout)["sampling"] == {"steps": 2, "solver": "euler"}
    summary = run("summary", ckpt, "--json")
    assert summary.exit_code == 0 and json.loads(summary.stdout)["model"] == "reflow"
    page = run("report", student[0], "--out", tmp_path / "r.html")
    assert page.exit_code == 0, page.output
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(RECIPE_ENV, TINY_RECIPE)
    scored = run("evaluate", ckpt, "--data-dir", mnist_root, "--n", "20", "--metrics", "fid", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["sampling"] == {"steps": 2, "solver": "euler"}


def test_couplings_are_a_data_set_only_for_families_that_take_them(student, mnist_root, tmp_path):
    folder = student[1]["couplings"]
    refused = run("train", "vae", "--data", folder, "--out", tmp_path / "v", "--epochs", "1")
    assert refused.exit_code == 2 and "holds couplings" in refused.stderr and "flow" in refused.stderr
    few = run("train", "reflow", "--data", folder, "--limit", "100000", "--out", tmp_path / "r")
    assert few.exit_code != 0 and "couplings; 100,000 needed" in few.stderr
    ok = run("train", "reflow", "--data", folder, "--limit", "16", "--batch-size", "16", "--width", "0.25",
             "--epochs", "1", "--sample-every", "0", "--out", tmp_path / "r2")
    assert ok.exit_code == 0, ok.output  # and it says what it read (walk w11: nothing)
    assert f"--data {folder}: 16 couplings of flow step " in ok.stderr and ", imitating mnist" in ok.stderr


def test_hostile_couplings_are_one_line(student, tmp_path):
    import shutil

    folder = tmp_path / "c"
    shutil.copytree(student[1]["couplings"], folder)
    manifest = json.loads((folder / cp.MANIFEST).read_text())
    (folder / cp.MANIFEST).write_text(json.dumps({**manifest, "part": -3}))
    bad = run("train", "reflow", "--data", folder, "--out", tmp_path / "r1")
    assert bad.exit_code != 0 and "field part" in bad.stderr and "Traceback" not in bad.output
    (folder / cp.MANIFEST).write_text(json.dumps(manifest))
    tensors = load_file(cp.part_path(folder, 0))
    save_part({**tensors, "latents": tensors["latents"].float()}, cp.part_path(folder, 0))
    bad = run("train", "reflow", "--data", folder, "--out", tmp_path / "r2")
    assert bad.exit_code != 0 and "tensor latents is F32" in bad.stderr


@pytest.mark.parametrize("kind", ["named pipe", "symbolic link", "directory"])
def test_a_part_that_is_no_regular_file_is_refused_not_drawn_over(tmp_path, kind):
    """Something else by a part's name was counted as not drawn (train --data read fewer couplings): a user's
    couplings folder refuses it in one line naming it, as gentool does with other special files (distill's own
    cache moves it aside instead: test_attack_hour6)."""
    import os

    from gentool.errors import UsageError

    cp.part_path(tmp_path, 0).write_bytes(b"part")
    second = cp.part_path(tmp_path, 1)
    {"named pipe": lambda: os.mkfifo(second), "directory": second.mkdir,
     "symbolic link": lambda: second.symlink_to(cp.part_path(tmp_path, 0))}[kind]()
    with pytest.raises(UsageError, match=f"RUN: {second} is a {kind}.*, not a couplings part gentool wrote"):
        cp.parts_done(tmp_path, "RUN")
    os.rmdir(second) if kind == "directory" else second.unlink()
    assert cp.parts_done(tmp_path) == 1


def test_a_teacher_that_cannot_be_distilled_is_one_line(tmp_path):
    from gentool.checkpoint import save_checkpoint
    from gentool.data import Geometry
    from gentool.registry import get_model

    gan = tmp_path / "gan"
    gan.mkdir()
    cls = get_model("mlp-wgan-gp")
    model = cls(cls.config_class.create(Geometry(1, 28, 28, 10), width=0.25))
    save_checkpoint(gan / "last.safetensors", model, {}, {"epoch": 1, "step": 1},
                    {"geometry": {"channels": 1, "height": 28, "width": 28}}, "built-in")
    bad = run("distill", gan, *FAST)
    assert bad.exit_code == 2 and "draws in one pass already" in bad.stderr
    assert not (tmp_path / "gan-reflow2").exists()
    assert run("distill").exit_code == 2



def test_a_kept_part_of_zeroed_images_is_drawn_again_not_trained_on_manifest_or_not(teacher, tmp_path):
    """Issue 26 F6: a kept part whose images were all zeroed (right dtype and shape, its noise intact) was trained
    on, and so was one found without couplings.json (a new manifest adopted it). Now a few rows of each kept part are
    drawn again by the teacher: such a part is set aside in one line and drawn again."""
    import shutil

    run_dir = shutil.copytree(teacher, tmp_path / "teacher", ignore=shutil.ignore_patterns(".gentool*", "couplings"))
    args = ["--epochs", "1", "--steps", "2", *FAST]
    assert run("distill", run_dir, "--out", tmp_path / "s1", *args).exit_code == 0
    folder = next((run_dir / "couplings").iterdir())
    drawn = load_file(cp.part_path(folder, 0))
    for manifest_kept in (True, False):
        path = cp.part_path(folder, 0)
        save_part({**drawn, "images": torch.zeros_like(drawn["images"])}, path)
        if not manifest_kept:
            (folder / cp.MANIFEST).unlink()
        with pytest.warns(UserWarning, match="part_00000.safetensors is damaged .its images are not the teacher's"):
            result = run("distill", run_dir, "--out", tmp_path / f"s{2 + manifest_kept}", *args[:-1])  # not -q
        assert result.exit_code == 0, result.output
        assert "couplings: drawing 64" in result.stderr and torch.equal(load_file(path)["images"], drawn["images"])


def test_distill_refuses_a_disk_too_small_for_its_parts_and_student_before_drawing(teacher, tmp_path, monkeypatch):
    """Issue 26 F7: 48 pairs draw two whole parts of 32 and a student's run; a disk holding the 48 pairs alone passed
    the check, the couplings were drawn, and the student's own check failed after them (exit 1)."""
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=48 * 2360 + 4096))
    run_dir = shutil.copytree(teacher, tmp_path / "teacher", ignore=shutil.ignore_patterns(".gentool*", "couplings"))
    result = run("distill", run_dir, "--out", tmp_path / "s", "--epochs", "1", "--steps", "2", *FAST)
    assert result.exit_code == 1, result.output  # a full disk: exit 1, as every free-space check
    assert "--pairs: only 0.1 MiB free in" in result.stderr
    assert "drawing 64 more couplings with the student's run in" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (run_dir / "couplings").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("link", ["couplings", "couplings/<its folder>"])
def test_couplings_are_never_written_through_a_link_in_the_teachers_run(teacher, student, tmp_path, link):
    """The teacher's couplings/ folder, or the subfolder a draw writes, being a link to a folder elsewhere: the
    distillation is refused in one line naming the link, and nothing is written there."""
    import shutil

    run_dir = shutil.copytree(teacher, tmp_path / "teacher", ignore=shutil.ignore_patterns(".gentool*"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = run_dir / "couplings"
    if link != "couplings":
        target = next(target.iterdir())  # the student fixture drew into it: the next draw with its options writes it
    shutil.rmtree(target)
    target.symlink_to(elsewhere)
    result = run("distill", run_dir, "--out", tmp_path / "s", "--epochs", "1", "--steps", "2", *FAST)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "symbolic link" in lines[0], result.stderr
    assert list(elsewhere.iterdir()) == []


def test_the_couplings_line_says_how_many_are_drawn(teacher, tmp_path):
    """--pairs 48 draws two whole parts of 32 (kept for a later student): the line says 64, not 48 (a walk saw
    "drawing 512" and then 1,000 drawn), and why, in words a user read as meant ("whole parts of 500" was not)."""
    args = [a for a in FAST if a != "-q"]
    result = run("distill", teacher, "--out", tmp_path / "s", "--epochs", "1", "--seed", "7", *args)
    assert result.exit_code == 0, result.output
    assert ("couplings: drawing 64 (in parts of 32; 48 asked for, the rest kept for a later student)"
            in result.output)
    line = next(line for line in result.output.splitlines() if line.startswith("couplings: drawing"))
    assert "{" not in line and "(flow: steps " in line  # the teacher's sampler in words, not a Python dict


@pytest.mark.parametrize("pairs, done, said", [
    (32, 0, "drawing 32"),  # nothing but what was asked for: no "(32 asked for)"
    (70, 1, "drawing 64 more (in parts of 32; 70 asked for, 32 drawn before, the rest kept for a later student)"),
])
def test_the_couplings_line_says_what_was_drawn_before(pairs, done, said):
    from gentool.distill import drawing

    assert drawing(pairs, done) == said


def test_without_the_critic_the_student_is_plain_reflow(teacher, tmp_path):
    out = tmp_path / "plain"
    result = run("distill", teacher, "--out", out, "--epochs", "1", "--adversarial", "0", *FAST)
    assert result.exit_code == 0, result.output
    meta = read_metadata(out / "last.safetensors")
    assert meta["config"]["adversarial"] == 0 and meta["config"]["lr"] == 2e-4
    assert not any(k.startswith("model.critic.") for k in load_file(out / "last.safetensors"))
    refused = run("distill", "--resume", out, "--adversarial", "1")
    assert refused.exit_code == 2 and "--adversarial: not allowed with --resume" in refused.output


def test_the_critic_sees_the_students_images_in_the_pixel_range():
    """Unclamped, the critic told the student's images from the teacher's by their out-of-range pixels alone, which
    the (clamped) generator term cannot move."""
    from gentool.models.reflow import Reflow, ReflowConfig

    torch.manual_seed(0)
    model = Reflow(ReflowConfig(channels=1, image_height=8, image_width=8, width=0.25, adversarial=0.5))
    seen = []
    model.critic.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    latents = 5 * torch.randn(4, 1, 8, 8)  # noise far outside the pixel range: so are the student's images
    model.train_step(torch.zeros(4, 1, 8, 8), None, model.build_optimizers(), 0, latents)
    assert len(seen) == 3 and all(float(x.abs().max()) <= 1 for x in seen)


def test_the_default_couplings_come_from_twice_the_teachers_steps_with_the_critic(teacher):
    """The measured default (benchmarks/RESULTS.md, "A closer target for the couplings"): with the critic, 10,000
    couplings from twice the teacher's own steps; without it, 20,000 from its own."""
    from gentool import distill as d
    from gentool.distill_options import DistillOptions

    model = d.load_teacher(teacher / "last.safetensors", torch.device("cpu")).model
    critic, plain = DistillOptions(teacher="x"), DistillOptions(teacher="x", adversarial=0.0)
    assert d.teacher_settings(model, critic)["steps"] == 2 * model.sample_settings()["steps"] == 32
    assert d.teacher_settings(model, plain)["steps"] == 16
    assert d.teacher_settings(model, DistillOptions(teacher="x", teacher_steps=5))["steps"] == 5
    assert (d.with_defaults(critic).pairs, d.with_defaults(plain).pairs) == (10_000, 20_000)
    assert d.with_defaults(DistillOptions(teacher="x", pairs=48)).pairs == 48


def test_an_evaluation_of_a_student_names_its_teacher():
    """evaluate's JSON for a student said `model: reflow` and its step only (new-user walk): the teacher its
    checkpoint records is in it too; a model without one is unchanged."""
    from types import SimpleNamespace

    from gentool.metrics.evaluate import _checkpoint_info

    teacher = {"checkpoint": "/runs/flow/last.safetensors", "model": "flow", "step": 2423}
    ckpt = lambda data: SimpleNamespace(model=SimpleNamespace(name="reflow"), state={"epoch": 10, "step": 1570},  # noqa: E731
                                        weights="ema", data=data)
    assert _checkpoint_info(SimpleNamespace(checkpoint=ckpt({"teacher": teacher})))["teacher"] == teacher
    assert "teacher" not in _checkpoint_info(SimpleNamespace(checkpoint=ckpt({"name": "mnist"})))


def test_a_slim_student_leaves_out_the_teachers_first_block_and_starts_from_the_rest(teacher, tmp_path):
    """--slim (measured in benchmarks/RESULTS.md, "A slim student"): the student's network has no first
    full-resolution residual block; every other tensor starts as the teacher's."""
    from gentool.checkpoint import load_checkpoint

    out = tmp_path / "slim"
    result = run("distill", teacher, "--out", out, "--epochs", "1", "--slim", "--lr", "1e-12", *FAST)
    assert result.exit_code == 0, result.output
    t = load_checkpoint(teacher / "last.safetensors").model.unet.state_dict()
    s = load_checkpoint(out / "last.safetensors").model
    assert s.config.slim and s.sample_settings() == {"steps": 2, "solver": "euler"}
    own = s.unet.state_dict()
    assert not any(k.startswith("down.0.") for k in own) and set(own) < set(t)
    assert all(torch.allclose(own[k], t[k], atol=1e-6) for k in own if own[k].is_floating_point())
    refused = run("distill", "--resume", out, "--slim")
    assert refused.exit_code == 2 and "--slim: not allowed with --resume" in refused.output


def test_a_slim_network_is_the_teachers_when_its_first_block_is_still_the_identity():
    from gentool.models.flow import Flow, FlowConfig
    from gentool.models.reflow import Reflow, ReflowConfig

    torch.manual_seed(0)
    geometry = dict(channels=1, image_height=8, image_width=8, width=0.25)
    teacher, slim = Flow(FlowConfig(**geometry)), Reflow(ReflowConfig(**geometry, slim=True))
    for p in teacher.unet.parameters():  # a teacher with every weight non-zero but its first block's last conv
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.zeros_(teacher.unet.down[0].conv2.weight), torch.nn.init.zeros_(teacher.unet.down[0].conv2.bias)
    slim.unet.load_state_dict(teacher.unet.state_dict(), strict=False)
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert torch.allclose(slim.unet(x, t), teacher.unet(x, t), atol=1e-6)
    torch.nn.init.normal_(teacher.unet.down[0].conv2.weight, std=0.1)  # once the block does something: not equal
    assert not torch.allclose(slim.unet(x, t), teacher.unet(x, t), atol=1e-4)
    with pytest.raises(Exception, match="slim"):
        ReflowConfig(**geometry, slim="yes").validate()


def test_the_drawing_says_how_far_it_is_inside_a_part_and_when_the_budget_will_end_it(monkeypatch):
    """A part of 500 from a 32-step teacher took minutes on a busy CPU: a 4-minute budget showed one line and ended
    before the student, without a word of why (a walk, session 15)."""
    import time as clock

    from gentool.distill_progress import DrawingPace
    from gentool.progress import Pace

    now = [0.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])

    class Lines:
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

        def pace(self):
            return Pace(1, lambda: now[0])

    lines = Lines()
    pace = DrawingPace(lines, 0, 10_000, deadline=240.0, minutes=4)
    now[0] = 60.0
    pace(300)  # inside the first part: 5/s, 32 minutes to go
    assert lines.lines[0].startswith("couplings 300/10,000 5/s | eta 0:32:")
    assert lines.lines[1].startswith("note: at this rate the couplings need about 0:32:") and "--pairs N" in lines.lines[1]
    now[0] = 120.0
    pace(600)
    assert len(lines.lines) == 3  # the note once
