"""TensorBoard logging, read back with TensorBoard's own reader: a run (--tensorboard alone) and a sweep (one root,
one folder per trial) through the installed executable, --eval-every's metrics, the one-line error without the
package, and the bare option on the command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gentool.cli.options import BARE_VALUES, fill_bare_values
from test_journeys import ENV, GENTOOL, gentool

tensorboard = pytest.importorskip("tensorboard", reason="the tensorboard package (gentool[tensorboard]) is absent")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def hparams(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(next(iter(content.values())))
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in data.session_start_info.hparams.items()}


def test_a_run_logs_scalars_grids_and_hparams(tmp_path, mnist_root):
    done = gentool("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--epochs", "2", "--limit", "64",
                   "--batch-size", "8", "--tensorboard", "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"tensorboard: run{os.sep}tensorboard (view: tensorboard --logdir run)" in done.stderr
    acc = events(tmp_path / "run" / "tensorboard")
    assert scalars(acc, "epoch/epoch") == [(8, 1.0), (16, 2.0)]  # 64 images in batches of 8
    assert [s for s, _ in scalars(acc, "epoch/loss")] == [8, 16]
    assert [s for s, _ in scalars(acc, "step/loss")] == list(range(1, 17))  # 8 steps an epoch: every step
    assert {"step/kl", "epoch/kl", "epoch/images_per_second"} <= set(acc.Tags()["scalars"])
    grids = acc.Images("samples")
    assert [(g.step, g.width, g.height) for g in grids] == [(8, 242, 242), (16, 242, 242)]
    assert grids[-1].encoded_image_string.startswith(b"\x89PNG")
    params = hparams(acc)
    assert params["model"] == "vae" and params["data"] == "mnist" and params["batch_size"] == 8
    assert params["latent_dim"] > 0 and params["limit"] == 64


def test_a_sweep_logs_each_trial_under_one_root(tmp_path, mnist_root):
    done = gentool("sweep", "vae", "--data", "mnist", "--data-dir", mnist_root, "--latent-dim", "2,3", "--epochs", "1",
                   "--limit", "64", "--batch-size", "16", "--tensorboard", "tb", "--out", "sw", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trials = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert trials == ["000-latent_dim2", "001-latent_dim3"]
    for name, latent in zip(trials, (2, 3)):
        acc = events(tmp_path / "tb" / name)
        assert [s for s, _ in scalars(acc, "epoch/loss")] == [4] and hparams(acc)["latent_dim"] == latent


def test_evaluation_metrics_go_under_eval(tmp_path):
    from gentool.loggers.tensorboard import TensorBoardHook
    from torch.utils.tensorboard import SummaryWriter

    hook = TensorBoardHook()
    hook.writer = SummaryWriter(str(tmp_path))
    hook.on_epoch_end(None, {"epoch": 3, "step": 30, "loss": 1.5, "fid": 42.0, "modes": 9, "class_kl": 0.1,
                             "partial": False, "bad": float("nan")}, None)
    hook.teardown(None)
    acc = events(tmp_path)
    assert set(acc.Tags()["scalars"]) == {"epoch/epoch", "epoch/loss", "eval/fid", "eval/modes", "eval/class_kl"}
    assert scalars(acc, "eval/fid") == [(30, 42.0)]


def test_without_the_package_the_error_is_one_line_naming_the_extra(tmp_path, mnist_root):
    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = {**ENV, "PYTHONPATH": str(shadow.parent)}
    for args in (["train", "vae", "--tensorboard", "--out", "run"], ["sweep", "vae", "--latent-dim", "2", "--tensorboard",
                                                                   "--out", "sw"]):
        done = subprocess.run([str(GENTOOL), *args, "--data", "mnist", "--data-dir", str(mnist_root), "--epochs", "1"],
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines() == [
            "error: --tensorboard: the tensorboard package is not installed; pip install 'gentool[tensorboard]' (or pip "
            "install tensorboard)"]
    assert not (tmp_path / "run").exists()


def test_a_dir_that_is_a_file_is_refused(tmp_path, mnist_root):
    (tmp_path / "taken").write_text("")
    done = gentool("train", "vae", "--data", "mnist", "--data-dir", mnist_root, "--tensorboard", "taken", "--out", "run",
                   cwd=tmp_path)
    assert done.returncode == 2 and "taken exists and is not a directory" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [
    (["vae", "--tensorboard"], ["vae", "--tensorboard=auto"]),
    (["vae", "--tensorboard", "-q"], ["vae", "--tensorboard=auto", "-q"]),
    (["vae", "--tensorboard", "logs"], ["vae", "--tensorboard", "logs"]),
    (["vae", "--tensorboard=logs"], ["vae", "--tensorboard=logs"]),
    (["vae", "--", "--tensorboard"], ["vae", "--", "--tensorboard"]),
])
def test_the_bare_option_takes_its_default(args, expected):
    assert fill_bare_values(args, BARE_VALUES) == expected


def test_a_resumed_run_keeps_logging_and_drops_steps_logged_after_its_checkpoint(tmp_path, mnist_root):
    from gentool.api import TrainOptions, train
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    train(TrainOptions(model="vae", data="mnist", data_dir=str(mnist_root), epochs=1, limit=64, batch_size=8,
                       out=str(run), tensorboard=str(tmp_path / "tb")))
    stale = SummaryWriter(str(tmp_path / "tb" / "run"))  # as a process killed after its checkpoint had logged
    stale.add_scalar("epoch/loss", 1e6, 12)
    stale.close()
    os.chdir(tmp_path / "run")  # the recorded DIR is absolute: a resume from elsewhere logs to the same place
    try:
        train(TrainOptions(resume=str(run), epochs=2))  # --tensorboard not given again
    finally:
        os.chdir(tmp_path)
    acc = events(tmp_path / "tb" / "run")
    assert [s for s, _ in scalars(acc, "epoch/loss")] == [8, 16] and max(v for _, v in scalars(acc, "epoch/loss")) < 1e6
    assert [g.step for g in acc.Images("samples")] == [8, 16]
