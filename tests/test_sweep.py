"""gentool sweep: grid expansion, the manifest, resuming, --trial/--list, failing and interrupted trials, workers."""

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from gentool import sweep as sw
from gentool import sweep_workers as sww
from gentool.errors import UsageError
from gentool.parsing import parse_list

TINY = ("--limit", "32", "--batch-size", "32", "--epochs", "1", "--sample-every", "1")


def sweep_args(mnist_root, out, *extra):
    return ("sweep", "vae", "--data", "mnist", "--data-dir", mnist_root, *TINY, "--out", out, "-q", *extra)


def manifest(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def test_parse_list():
    assert parse_list("2,5,10", "--latent-dim", int) == [2, 5, 10]
    assert parse_list("0.5, 1,2", "--width", float) == [0.5, 1.0, 2.0]
    assert parse_list("0.01,x", "--param clip") == [0.01, "x"]
    for bad, kind in (("", int), ("2,,5", int), ("2,a", int), ("2,2", int), ("1,inf", float)):
        with pytest.raises(UsageError, match="--latent-dim: got"):
            parse_list(bad, "--latent-dim", kind)


def test_grid_expansion_and_names():
    spec = sw.SweepSpec("vae", "mnist", {"latent_dim": [2, 5], "width": [0.5, 1.0], "clip": [0.01]}, Path("x"))
    trials = spec.trials()
    assert [t["values"] for t in trials] == [
        {"latent_dim": 2, "width": 0.5, "clip": 0.01}, {"latent_dim": 2, "width": 1.0, "clip": 0.01},
        {"latent_dim": 5, "width": 0.5, "clip": 0.01}, {"latent_dim": 5, "width": 1.0, "clip": 0.01}]
    assert trials[1]["run_dir"] == "001-latent_dim2-width1-clip0.01"
    assert {t["status"] for t in trials} == {"pending"}


def test_sweep_runs_resumes_and_refuses_another_grid(invoke, mnist_root, tmp_path):
    out = tmp_path / "sw"
    args = sweep_args(mnist_root, out, "--latent-dim", "2,3", "--width", "0.25,0.5")
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and [r["status"] for r in report["trials"]] == ["done"] * 4
    m = manifest(out)
    assert m["grid"] == {"latent_dim": [2, 3], "width": [0.25, 0.5]}
    for t in m["trials"]:
        run = out / t["run_dir"]
        assert t["epochs"] == 1 and "loss" in t["final"] and (run / "last.safetensors").is_file()
        assert (run / "loss.png").is_file() and (run / "progress.gif").is_file()
    rows = json.loads((out / "results.json").read_text())
    assert [r["trial"] for r in rows] == [0, 1, 2, 3] and "loss" in (out / "results.csv").read_text().splitlines()[0]
    for name in ("samples_matrix.png", "curves.png", "heatmap.png"):
        assert (out / name).stat().st_size > 5000, name

    stamp = (out / m["trials"][0]["run_dir"] / "last.safetensors").stat().st_mtime_ns
    assert invoke(*args).exit_code == 0  # everything finished: nothing is trained again
    assert (out / m["trials"][0]["run_dir"] / "last.safetensors").stat().st_mtime_ns == stamp
    more = [a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)]
    assert invoke(*more).exit_code == 0  # more epochs: each trial continues from its checkpoint
    assert [t["epochs"] for t in manifest(out)["trials"]] == [2] * 4
    records = json.loads((out / m["trials"][0]["run_dir"] / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in records] == [1, 2]

    changed = invoke(*sweep_args(mnist_root, out, "--latent-dim", "2,4", "--width", "0.25,0.5"))
    assert changed.exit_code == 2
    assert "different sweep" in changed.output and "latent_dim values 2 and 3 (now 2 and 4)" in changed.output


def test_list_and_trial_by_trial_match_a_whole_run(invoke, mnist_root, tmp_path):
    out = tmp_path / "arr"
    args = sweep_args(mnist_root, out, "--latent-dim", "2", "--width", "0.25,0.5")
    listed = invoke(*args, "--list", "--json")
    assert listed.exit_code == 0 and not out.exists()  # --list changes nothing
    assert [(r["trial"], r["width"], r["status"]) for r in json.loads(listed.stdout)] == [(0, 0.25, "pending"), (1, 0.5, "pending")]
    one = invoke(*args, "--trial", "1")
    assert one.exit_code == 0, one.output
    assert [t["status"] for t in manifest(out)["trials"]] == ["pending", "done"]
    assert not (out / "results.json").exists()  # written by whichever process finishes the last trial
    assert not (out / manifest(out)["trials"][0]["run_dir"]).exists()
    assert invoke(*args, "--trial", "0").exit_code == 0
    assert (out / "results.json").is_file() and (out / "heatmap.png").is_file()
    assert invoke(*args, "--trial", "2").exit_code == 2

    whole = tmp_path / "whole"
    assert invoke(*sweep_args(mnist_root, whole, "--latent-dim", "2", "--width", "0.25,0.5")).exit_code == 0
    keep = ("index", "values", "run_dir", "status", "epochs")
    a, b = manifest(out), manifest(whole)
    assert a["grid"] == b["grid"] and a["options"] == b["options"]
    assert [{k: t[k] for k in keep} for t in a["trials"]] == [{k: t[k] for k in keep} for t in b["trials"]]
    for ta, tb in zip(a["trials"], b["trials"]):
        assert ta["final"]["loss"] == pytest.approx(tb["final"]["loss"], rel=1e-4)


def test_failing_and_interrupted_trials(invoke, mnist_root, tmp_path, monkeypatch):
    real_train = sw.train

    def flaky(opts, reporter=None):
        if opts.latent_dim == 3:
            raise RuntimeError("out of cheese")
        return real_train(opts, reporter)

    monkeypatch.setattr(sw, "train", flaky)
    out = tmp_path / "fail"
    args = sweep_args(mnist_root, out, "--latent-dim", "2,3")
    result = invoke(*args)
    assert result.exit_code == 1
    assert "1 of 2 trials did not finish" in result.output
    # the cause on stderr too, which a batch job's log may keep alone (attacker hour 14)
    assert "did not finish (trial 1: RuntimeError: out of cheese); fix that, then re-run" in result.stderr
    trials = manifest(out)["trials"]
    assert [t["status"] for t in trials] == ["done", "failed"]
    assert trials[1]["error"] == "RuntimeError: out of cheese"
    assert (out / "results.csv").is_file()

    def interrupted(opts, reporter=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(sw, "train", interrupted)
    result = invoke(*args)  # the failed trial is retried, and this time Ctrl-C arrives
    assert result.exit_code == 130
    assert "sweep interrupted (1 done, 1 interrupted); re-run the same command" in result.output
    monkeypatch.setattr(sw, "train", real_train)
    assert invoke(*args).exit_code == 0
    assert [t["status"] for t in manifest(out)["trials"]] == ["done"] * 2


def test_bad_values_fail_before_training(invoke, mnist_root, tmp_path):
    out = tmp_path / "bad"
    result = invoke(*sweep_args(mnist_root, out, "--latent-dim", "2", "--param", "nonsense=1,2"))
    assert result.exit_code == 2 and "--param nonsense: not a setting" in result.output and not out.exists()
    result = invoke(*sweep_args(mnist_root, out, "--param", "width=1,2"))
    assert result.exit_code == 2 and "width is swept with --width" in result.output
    result = invoke("sweep", "vae", "--data", "mnist", "--out", out)
    assert result.exit_code == 2 and "nothing to sweep" in result.output
    result = invoke(*sweep_args(mnist_root, out, "--latent-dim", "2", "--threads", "0"))
    assert result.exit_code == 2 and "--threads: got 0" in result.output and not out.exists()


def test_concurrent_manifest_updates_are_not_lost(tmp_path):
    spec = sw.SweepSpec("vae", "mnist", {"latent_dim": list(range(1, 9))}, tmp_path / "c", runtime={"epochs": 1})
    sw.open_sweep(spec)

    def work(index):
        for k in range(15):
            sw.update_trial(spec.out, index, status="running", counter=k)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [t["counter"] for t in manifest(spec.out)["trials"]] == [14] * 8


def test_a_dead_worker_is_recorded(tmp_path):
    spec = sw.SweepSpec("vae", "mnist", {"latent_dim": [2, 3]}, tmp_path / "d", runtime={"epochs": 1})
    sw.open_sweep(spec)
    for index, code in ((0, -9), (1, 130)):
        sw.update_trial(spec.out, index, status="running")
        sww._settle(spec.out, index, code)
    trials = manifest(spec.out)["trials"]
    assert trials[0]["status"] == "failed" and "exited with code -9" in trials[0]["error"]
    assert trials[1]["status"] == "interrupted"


def test_two_workers(invoke, mnist_root, tmp_path, monkeypatch):
    launched, launch = [], sww._launch
    monkeypatch.setattr(sww, "_launch", lambda d, i, threads, r: launched.append(threads) or launch(d, i, threads, r))
    threads = torch.get_num_threads()
    out = tmp_path / "w"
    try:  # --threads is the whole sweep's: each of the 2 workers gets half
        result = invoke(*sweep_args(mnist_root, out, "--latent-dim", "2,3", "--workers", "2", "--threads", "4",
                                    "--json"))
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert launched == [2, 2]
    trials = manifest(out)["trials"]
    assert [t["status"] for t in trials] == ["done", "done"]
    assert {t["pid"] for t in trials}.isdisjoint({os.getpid()})  # trained in worker processes
    assert all((out / "logs" / f"{i:03d}.log").is_file() for i in range(2))
