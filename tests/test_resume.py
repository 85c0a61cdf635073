"""What a resume takes from the run and what it checks (gentool.resume, the rules declared in TrainOptions)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from gentool import resume
from gentool.errors import GentoolError, UsageError
from gentool.train import TrainOptions, train
from gentool.train_options import FIXED, FREE, KEPT, RESTORED, RESUME_RULES


def new_run(mnist_root, out, **kw):
    options = dict(model="vae", data="mnist", data_dir=str(mnist_root), epochs=1, limit=48, batch_size=16, seed=3,
                   sample_every=0, out=str(out))
    return train(TrainOptions(**{**options, **kw}))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, mnist_root):
    run = tmp_path_factory.mktemp("resume") / "run"
    new_run(mnist_root, run, checkpoint_every=1)
    return run


def test_every_option_has_a_resume_rule():
    assert set(RESUME_RULES.values()) <= {FIXED, RESTORED, KEPT, FREE}
    assert {"data", "data_dir", "limit", "image_size", "seed"} <= set(resume.RUN_OPTIONS)  # recorded in checkpoints


def test_resume_restores_the_recorded_options(vae_run):
    start = resume.plan(TrainOptions(resume=str(vae_run), epochs=2))
    o = start.opts
    assert (o.model, o.data, o.limit, o.seed, o.batch_size, o.checkpoint_every) == ("vae", "mnist", 48, 3, None, 1)
    assert o.data_dir.endswith("mnist-data0") and o.out == str(vae_run)
    assert resume.plan(TrainOptions(resume=str(vae_run))).opts.epochs == 1  # --epochs too, when not given


def test_a_changed_data_option_is_used_and_reported(vae_run):
    with pytest.warns(UserWarning, match=r"--limit 32 differs from the 48"):
        assert resume.plan(TrainOptions(resume=str(vae_run), limit=32)).opts.limit == 32


@pytest.mark.parametrize("given,needle", [
    (dict(model="wgan"), r"MODEL: got 'wgan', but the run in .* is a 'vae' run"),
    (dict(lr=0.5), r"--lr: got 0.5, but the run .* was built with 0.001"),
    (dict(latent_dim=3), r"--latent-dim: got 3"),
    (dict(params={"kl_weight": 2.0}), r"--param kl_weight: got 2.0"),
    (dict(params={"clip": 0.1}), r"--param clip: 'vae' has no setting 'clip'"),
    (dict(data="cifar10"), r"--data: got 'cifar10', but the run .* uses 'mnist'"),
    (dict(image_size=32), r"--image-size: got 32, but the run .* uses None"),
    (dict(out="elsewhere"), r"--out: got 'elsewhere' with --resume"),
    (dict(overwrite=True), r"--overwrite: not allowed with --resume"),
])
def test_what_a_resume_may_not_change(vae_run, given, needle):
    with pytest.raises(UsageError, match=needle):
        resume.plan(TrainOptions(resume=str(vae_run), **given))


def test_the_run_s_own_values_may_be_given_again(vae_run, mnist_root):
    """The same command line with --resume: every value it repeats matches the run's."""
    same = TrainOptions(model="VAE", data="mnist", data_dir=str(mnist_root), limit=48, seed=3, lr=0.001,
                        out=str(vae_run), resume=str(vae_run))
    assert resume.plan(same).checkpoint == vae_run / "last.safetensors"


def test_checkpoint_every_given_on_resume_is_honoured(tmp_path, mnist_root):
    """Issue 13: `--checkpoint-every 0` with --resume used to be replaced by the run's recorded value."""
    run = tmp_path / "run"
    new_run(mnist_root, run, checkpoint_every=1)
    train(TrainOptions(resume=str(run), epochs=2))  # not given: the run's own, 1
    train(TrainOptions(resume=str(run), epochs=3, checkpoint_every=0))
    assert sorted(p.name for p in run.glob("epoch_*")) == ["epoch_0001.safetensors", "epoch_0002.safetensors"]


def test_resume_auto_starts_then_continues(tmp_path, mnist_root):
    opts = dict(model="vae", data="mnist", data_dir=str(mnist_root), limit=32, batch_size=16, sample_every=0,
                out=str(tmp_path / "run"), resume="auto")
    assert train(TrainOptions(**opts, epochs=1))["epochs"] == 1
    assert train(TrainOptions(**opts, epochs=2))["step"] == 4
    with pytest.raises(UsageError, match="--resume auto: needs --out"):
        train(TrainOptions(model="vae", data="mnist", resume="auto"))


def test_a_run_that_never_reached_a_checkpoint_restarts_from_its_config(tmp_path, mnist_root):
    run = tmp_path / "run"
    new_run(mnist_root, run)
    for f in run.glob("*.safetensors"):  # as if killed before the first checkpoint
        f.unlink()
    (run / "metrics.json").write_text(json.dumps({"epochs": [], "events": []}))
    start = resume.plan(TrainOptions(resume=str(run), epochs=2))
    assert start.checkpoint is None and start.opts.resume is None and start.opts.limit == 48
    assert "starting it from the beginning" in start.notes[0]
    assert train(TrainOptions(resume=str(run), epochs=2))["epochs"] == 2


def test_hostile_recorded_options_are_refused(tmp_path, vae_run):
    """Options read from a run's files are checked field by field before use (one line naming file and field)."""
    unstarted = tmp_path / "unstarted"
    unstarted.mkdir()
    (unstarted / "config.json").write_text(json.dumps({"gentool_version": "0.1.0", "options": {
        "model": "vae", "data": "mnist", "limit": "all of them"}}))
    with pytest.raises(GentoolError, match=r"config.json: recorded option limit is 'all of them'"):
        resume.plan(TrainOptions(resume=str(unstarted)))
    forged = tmp_path / "forged"
    forged.mkdir()
    with safe_open(str(vae_run / "last.safetensors"), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    state = json.loads(meta["state"])
    state["options"]["seed"] = [1, 2]
    save_file(tensors, str(forged / "last.safetensors"), metadata={**meta, "state": json.dumps(state)})
    with pytest.raises(GentoolError, match=r"last.safetensors: metadata field state.options.seed is a list; expected an int"):
        resume.plan(TrainOptions(resume=str(forged)))
    state["options"]["limit"] = -5
    save_file(tensors, str(forged / "last.safetensors"), metadata={**meta, "state": json.dumps(state | {"options": {"limit": -5}})})
    with pytest.raises(GentoolError, match=r"last.safetensors: metadata field state.options.limit is -5; expected an int"):
        resume.plan(TrainOptions(resume=str(forged)))


def test_a_missing_run_is_named(tmp_path):
    with pytest.raises(UsageError, match=r"--resume: .*nothing-here does not exist; expected a run directory"):
        resume.plan(TrainOptions(resume=str(tmp_path / "nothing-here")))


def test_printed_commands_are_quoted(tmp_path):
    command = resume.resume_command(tmp_path / "my run's dir", 40)
    assert command.endswith("""--resume '""" + str(tmp_path) + """/my run'"'"'s dir' --epochs 40""")
