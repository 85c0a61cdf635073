"""Per-epoch sample grids may not take a small run's budget (a walk: ~80 % of a 3-minute run on a 100-image folder
went to grids): past a grace, an epoch's grid is skipped while grids take more than a share of the run; the last
epoch's grid, and a skipped one the run stops after, are always drawn."""

import json

from typer.testing import CliRunner

from gentool import grids, train
from gentool.cli.app import app
from gentool.grids import GridShare


def test_grids_are_skipped_only_past_the_grace_and_the_share(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(grids.time, "monotonic", lambda: now[0])
    share = GridShare()
    assert share.due(1, 1, 10)  # nothing spent yet
    share.seconds, now[0] = 40.0, 200.0  # 40 s of 100: past the grace and the share
    assert not share.due(2, 1, 10) and share.due(10, 1, 10)  # the last epoch's grid always
    assert not share.due(3, 2, 10)  # not asked for (--sample-every 2)
    now[0] = 300.0  # 40 s of 200: within the share again
    assert share.due(4, 1, 10)
    share.seconds = 20.0  # within the grace: every grid asked for
    now[0] = 101.0
    assert share.due(5, 1, 10)
    assert "note: sample grids have taken" in share.skip(6) and share.skip(7) is None and share.skipped == 7


def test_a_run_skips_grids_and_still_draws_its_last_and_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(grids, "GRACE_SECONDS", 0.0)
    monkeypatch.setattr(grids, "GRID_SHARE", 0.0)  # every grid after the first is over the share
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "vae", "--data", "mnist-sample", "--limit", "64", "--batch-size", "32",
                                      "--epochs", "4", "--out", str(out), "--threads", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "samples").glob("epoch_*.png")) == ["epoch_0001.png", "epoch_0004.png"]
    assert "note: sample grids have taken" in result.output
    # epoch 5's grid skipped, then the budget ends the run after it: the grid is drawn as it stops
    monkeypatch.setattr(GridShare, "due", lambda self, epoch, every, last: epoch == last)
    monkeypatch.setattr(train, "stop_code", lambda session, time_up=True, hook_stop=False: int(session.epoch == 5))
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--epochs", "7", "--max-minutes", "60",
                                      "--threads", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "time budget of 60 min used up after epoch 5" in result.output
    assert json.loads((out / "metrics.json").read_text())["epochs"][-1]["epoch"] == 5
    assert (out / "samples" / "epoch_0005.png").exists()
