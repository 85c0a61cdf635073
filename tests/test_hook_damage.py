"""A hook cannot leave a metrics.json that gentool refuses (attacker pass 9, instance D): the trainer's own record
fields come back as it wrote them, values metrics.json does not hold are left out, and the run resumes, reports and
summarizes. The class: each thing a hook may touch (a record's own fields, its extras, the records list, events,
`best`, other keys)."""

from __future__ import annotations

import json
import warnings

import pytest

from gentool.errors import GentoolError, UsageError
from gentool.history import RunHistory, mend, read_history
from gentool.hooks import TrainHook
from gentool.results import run_row
from gentool.train import train
from gentool.train_options import TrainOptions
from test_hooks import SetsOption


class Vandal(TrainHook):
    def on_epoch_end(self, session, record, reporter):
        record["epoch"] = -5
        del record["step"]
        record["seconds"] = "slow"
        record["list"] = [1, 2]
        record[7] = "not a string key"
        record["fine"] = 1.5
        history = session.history
        history["events"].append({"epoch": "x"})
        history["events"].append({"epoch": 1, "kind": "mine"})
        history["best"] = {"epoch": [1]}
        history["mine"] = {1, 2}
        history["deep"] = {"ok": [1, 2, 3]}
        history["epochs"].append({"epoch": 99})


def test_a_hook_cannot_damage_metrics_json(tmp_path, mnist_root):
    opts = TrainOptions(model="vae", data="mnist", data_dir=str(mnist_root), epochs=2, limit=64, batch_size=32,
                        out=str(tmp_path / "run"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(opts, hooks=[Vandal()])
    said = " ".join(str(w.message) for w in caught)
    assert "a hook changed" in said and "epochs[0].epoch" in said
    doc = read_history(tmp_path / "run" / "metrics.json")  # read back, every field checked
    assert [(r["epoch"], r["step"]) for r in doc["epochs"]] == [(1, 2), (2, 4)]
    assert all(isinstance(r["seconds"], float) and r["fine"] == 1.5 and "list" not in r for r in doc["epochs"])
    assert doc["events"] == [{"epoch": 1, "kind": "mine"}] * 2
    assert "best" not in doc and doc["mine"] is None and doc["deep"] == {"ok": [1, 2, 3]}
    assert run_row(tmp_path / "run", tmp_path)["epochs"] == 2
    train(TrainOptions(model="vae", resume=str(tmp_path / "run"), epochs=3, data_dir=str(mnist_root)))
    assert [r["epoch"] for r in read_history(tmp_path / "run" / "metrics.json")["epochs"]] == [1, 2, 3]
    # config.json says the resume's target (report's "epochs asked for" said the first start's 2: walk w11)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["options"]["epochs"] == 3 and config["model"] == "vae" and config["data"]["name"] == "mnist"


def test_records_replaced_or_removed_come_back():
    history = RunHistory({"epochs": [{"epoch": 1, "step": 2, "loss": 0.5}], "events": []})
    history.doc["epochs"] = "gone"
    history.doc["events"] = None
    assert mend(history) == ["epochs", "events"]
    assert history.doc["epochs"] == [{"epoch": 1, "step": 2, "loss": 0.5}] and history.doc["events"] == []
    json.dumps(history.doc)


@pytest.mark.parametrize("path", ["../outside.safetensors", "/tmp/elsewhere/d.safetensors", "config.json",
                                  "metrics.json", "sub/x.safetensors", ".safetensors", "a\0b.safetensors", 5])
def test_a_hook_saves_checkpoints_only_in_its_run_directory(tmp_path, path):
    """session.save(path) wrote anywhere: a user's file outside the run was replaced by a checkpoint, and one over
    config.json left a run neither report nor --resume could read (twelfth attacker hour)."""
    from gentool.hooks import checkpoint_path

    with pytest.raises(GentoolError, match="session.save"):
        checkpoint_path(tmp_path / "run", path)
    assert checkpoint_path(tmp_path / "run", "best.safetensors") == tmp_path / "run" / "best.safetensors"
    assert checkpoint_path(tmp_path / "run", tmp_path / "run" / "x.safetensors") == tmp_path / "run" / "x.safetensors"


def nested(levels: int):
    value = 1
    for _ in range(levels):
        value = {"deep": value}
    return value


def test_too_deep_and_cyclic_values_are_written_null():
    """Issue 26 F1: a value nested thousands deep, or holding itself, was a RecursionError; both become null at
    the depth gentool reads back (a value shared by two keys is no cycle and is kept)."""
    from gentool import schema
    from gentool.jsonvalues import null_nonfinite

    record = {"epoch": 1}
    record["self"] = record
    shared = [1, 2]
    doc = {"epochs": [record], "deep": nested(5000), "twice": [shared, shared], "lists": [[[]]]}
    replaced = null_nonfinite(doc)
    assert replaced[:1] == ["epochs[0].self"] and replaced[1].startswith("deep.deep") and len(replaced) == 2
    assert record["self"] is None and doc["twice"] == [[1, 2], [1, 2]] and doc["lists"] == [[[]]]
    assert schema.depth(schema.parse(json.dumps(doc), "doc")) == schema.MAX_DEPTH


class EveryEvent(TrainHook):
    """Issue 26 F1/F2: damages the history in every event a hook gets (on_train_start's was a traceback), and
    puts values too deep or holding themselves in records, history and events."""

    def on_train_start(self, session, reporter):
        session.history["epochs"] = "garbage"
        session.history["deep"] = nested(5000)

    def on_step(self, session, losses):
        session.history["epochs"] = None

    def on_sample_grid(self, session, epoch, grid):
        del session.history["events"]

    def on_epoch_end(self, session, record, reporter):
        record["self"] = record
        record["deep"] = nested(5000)
        session.history["events"].append({"epoch": 1, "kind": "loop", "me": session.history})

    def on_train_end(self, session, reporter):
        session.history["epochs"] = 7


def test_a_hook_damaging_the_history_in_any_event_costs_the_run_nothing(tmp_path, mnist_root):
    opts = TrainOptions(model="vae", data="mnist", data_dir=str(mnist_root), epochs=2, limit=64, batch_size=32,
                        out=str(tmp_path / "run"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(opts, hooks=[EveryEvent()])
    said = [str(w.message) for w in caught if "metrics.json" in str(w.message)]
    assert all("\n" not in s for s in said) and any("self" in s and "written as null" in s for s in said)
    assert any("a hook changed epochs" in s for s in said) and any("deep" in s for s in said)
    assert result["epochs"] == 2 and result["final_metrics"]["epoch"] == 2
    json.dumps(result)  # what --json prints
    doc = read_history(tmp_path / "run" / "metrics.json")
    assert [r["epoch"] for r in doc["epochs"]] == [1, 2] and all("self" not in r or r["self"] is None
                                                                  for r in doc["epochs"])
    assert run_row(tmp_path / "run", tmp_path)["epochs"] == 2
    train(TrainOptions(model="vae", resume=str(tmp_path / "run"), epochs=3, data_dir=str(mnist_root)))
    assert [r["epoch"] for r in read_history(tmp_path / "run" / "metrics.json")["epochs"]] == [1, 2, 3]
    with pytest.raises(UsageError, match="hook SetsOption changed batch_size in setup; a hook may not change what the "
                                         "resumed run is"):  # (issue 26 F3: a resume's fixed options)
        train(TrainOptions(model="vae", resume=str(tmp_path / "run"), epochs=3), hooks=[SetsOption("batch_size", 7)])
