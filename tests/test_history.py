"""A run's progress has one owner (gentool.history): the typed epoch record and the state of an epoch stopped
inside, written in the format gentool has always written, read back checked, cut back on resume; and every reader
(figures, results, the report) asks it which records are of finished epochs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from gentool import figures, results, schema
from gentool.errors import GentoolError
from gentool.history import (
    EpochRecord,
    PartialEpoch,
    RunHistory,
    finished,
    is_partial,
    state_fields,
)
from gentool.hooks import Guarded, RunView, TrainHook
from gentool.report.views import metric_tables

FULL = {"epoch": 1, "step": 6, "seconds": 1.5, "images_per_second": 64.0, "loss": 2.5, "kl": 0.1}
PARTIAL = {"epoch": 2, "step": 8, "seconds": 0.5, "images_per_second": 64.0, "loss": 2.0, "partial": True,
           "images_seen": 32, "epoch_fraction": 0.3333}


def test_records_are_written_as_before_and_read_back_typed():
    for old in (FULL, PARTIAL, {**FULL, "skipped_steps": 1, "fid": None}):
        record = EpochRecord.from_json(old)
        assert list(record.to_json().items()) == list(old.items())  # same keys, same order, same values
    record = EpochRecord.from_json(PARTIAL)
    assert record.partial and record.epoch_fraction == 0.3333 and dict(record.metrics) == {"loss": 2.0}
    with pytest.raises(TypeError):
        record.metrics["loss"] = 0.0  # frozen, as is the record itself
    for bad, field in (({**FULL, "partial": "yes"}, "partial"), ({**FULL, "step": -1}, "step"),
                       ({**PARTIAL, "epoch_fraction": 2}, "epoch_fraction")):
        with pytest.raises(schema.Invalid, match=f"epochs.0.{field}|{field}"):
            EpochRecord.from_json(bad, "epochs[0]")


def test_the_state_of_an_epoch_stopped_inside_round_trips_as_old_checkpoints_hold_it():
    old = {"batch": 5, "partial": {"sums": {"loss": 12.5, "kl": 0.75}, "counts": {"loss": 5, "kl": 5}, "seen": 80,
                                   "seconds": 3.25}}
    part = PartialEpoch.from_state({"epoch": 1, **old})
    assert part.batch == 5 and json.dumps(state_fields(part)) == json.dumps(old)  # same keys, order and values
    for between in ({"batch": 0, "partial": {}}, {}):  # after an epoch; a checkpoint from before `partial`
        assert PartialEpoch.from_state(between) is None and state_fields(None) == {"batch": 0, "partial": {}}
    assert PartialEpoch.from_state({"batch": 2}) == PartialEpoch(2)  # batches done, no running sums kept
    for state, field in (({"batch": 1, "partial": {"counts": {"loss": -1}}}, "state.partial.counts.loss"),
                         ({"batch": -1}, "state.batch")):
        with pytest.raises(schema.Invalid, match=field):
            PartialEpoch.from_state(state)


def test_history_keeps_truncates_and_writes(tmp_path):
    history = RunHistory({"epochs": [dict(FULL)], "events": [{"epoch": 2, "kind": "x"}]})
    stored = history.keep(EpochRecord.from_json(PARTIAL))
    assert history.records[-1] is stored and is_partial(stored)
    history.keep(EpochRecord.from_json({**PARTIAL, "step": 9}))  # a later partial record replaces the earlier one
    assert [r["step"] for r in history.records] == [6, 9]
    path = tmp_path / "metrics.json"
    history.write(path, model="vae", run_dir=str(tmp_path))
    assert json.loads(path.read_text())["epochs"] == history.records
    # resuming from the checkpoint inside epoch 2 keeps its partial record; from the one after epoch 1 drops it
    assert [r["step"] for r in RunHistory.resumed(path, 1, inside_epoch=True).records] == [6, 9]
    cut = RunHistory.resumed(path, 1)
    assert [r["step"] for r in cut.records] == [6] and cut.doc["events"] == []
    assert RunHistory.resumed(tmp_path / "none.json", 1) is None
    path.write_text(json.dumps({"epochs": [{**FULL, "partial": 1}]}))
    with pytest.raises(GentoolError, match=r"--resume: .*metrics.json: field epochs\[0\]\.partial"):
        RunHistory.resumed(path, 1)


def test_every_reader_agrees_on_which_records_are_finished():
    """Only `"partial": true` marks an epoch stopped inside, for the results, the figures and the report alike (the
    figures and results took any true value, the report `true` alone; metrics.json as read now refuses others)."""
    records = [dict(FULL), {**FULL, "epoch": 2, "step": 12, "partial": 1}, dict(PARTIAL, epoch=3)]
    assert results.finished_epochs(records) == 2 and finished(records) == records[:2]
    assert figures.epoch_position(records[1]) == 2 and figures.epoch_position(records[2]) == pytest.approx(2.3333)
    tables = metric_tables({"records": records})
    assert tables["epochs"]["classes"] == ["", "", "partial"] and "partial" in tables["final"]["caption"]


class Rebinds(TrainHook):
    def on_epoch_end(self, session, record, reporter):
        session.epoch = 99


def test_hooks_see_the_run_read_only_and_may_still_stop_it():
    session = SimpleNamespace(opts=SimpleNamespace(seed=3, params={"beta": 1.0}), epoch=4, stop_reason=None,
                              history={"epochs": []}, sample_settings={"steps": 8})
    view = RunView(session)
    assert (view.epoch, view.opts.seed, view.sample_settings) == (4, 3, {"steps": 8})
    view.opts.params["beta"] = 2.0  # the view's options are its own copy
    view.sample_settings["steps"] = 1
    assert session.opts.params == {"beta": 1.0} and session.sample_settings == {"steps": 8}
    with pytest.raises(AttributeError, match="session.epoch is read-only"):
        view.epoch = 5
    session.optimizers = {"adam": object()}  # the loop's own machinery is not shown, however it is reached
    with pytest.raises(AttributeError, match=r"session.optimizers: .*RunView, which has opts, sample_settings, batch"):
        view.optimizers
    view.history["events"] = [{"epoch": 4}]  # the documented place a hook records what it found
    view.stop_reason = "stopped by a hook written before the view"
    assert session.stop_reason.startswith("stopped by a hook") and session.history["events"] == [{"epoch": 4}]
    view.stop("stopped")
    assert session.stop_reason == "stopped" and session.epoch == 4
    with pytest.warns(UserWarning, match="Rebinds .* on_epoch_end .* read-only"):
        Guarded(Rebinds(), "demo").on_epoch_end(view, {}, None)
    assert session.epoch == 4


def test_epoch_means_of_bf16_losses_are_summed_in_fp32():
    """A loss computed under bf16 autocast is a bf16 scalar; summed in bf16, 600 steps of 2.0 gave a mean of about
    0.85 (the sum stops at 512, where bf16's spacing is 4)."""
    import torch

    from gentool.train import _accumulate, _means

    sums, counts = {}, {}
    for _ in range(600):
        _accumulate(sums, counts, {"critic_loss": torch.tensor(2.0, dtype=torch.bfloat16), "n": torch.tensor(3.0)})
    assert _means(sums, counts) == {"critic_loss": 2.0, "n": 3.0}
