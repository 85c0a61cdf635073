"""--precision auto (gentool.precision): the feature rule, the probe that confirms it, its cache (which may be hostile
and expires), the run's own check and what a run records."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gentool import precision as d
from gentool.train import TrainOptions, train

CPU = torch.device("cpu")


class FakeClock:
    """A clock that only the fake workloads move."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def work(self, *durations):
        """A workload whose calls take these seconds in turn (the first is the warm-up)."""
        times = iter(durations)

        def run():
            self.now += next(times)
        return run


def test_bf16_only_when_clearly_faster():
    assert d.decide_precision({"fp32": 0.030, "bf16": 0.015}).used == "bf16"  # a Zen 4: 2x
    slower = d.decide_precision({"fp32": 0.0273, "bf16": 0.0414})  # this project's Xeon without AMX
    assert slower.used == "fp32" and "0.66x" in slower.reason and slower.requested == "auto"
    assert d.decide_precision({"fp32": 0.030, "bf16": 0.028}).used == "fp32"  # within noise: fp32 stays


def test_probe_takes_the_best_of_alternating_rounds_and_keeps_to_its_budget():
    clock = FakeClock()
    work = {"fp32": clock.work(9, 4, 2, 3), "bf16": clock.work(9, 5, 6, 1)}
    assert d.time_workloads(work, clock, reps=3, budget=100) == {"fp32": 2, "bf16": 1}  # warm-ups left out
    slow = FakeClock()
    work = {"fp32": slow.work(1, 1, 1, 1, 1), "bf16": slow.work(1, 2, 2, 2, 2)}
    assert d.time_workloads(work, slow, reps=5, budget=0.5) == {"fp32": 1, "bf16": 2}  # three rounds, then stop
    assert slow.now == 1 + 1 + 3 * (1 + 2)


@pytest.fixture()
def probe(tmp_path, monkeypatch):
    """A CPU that has bf16, a cache under tmp_path and a probe that counts its runs (fp32 twice as fast)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(d.AUTO_ENV, raising=False)  # these tests judge auto's own decision, forced or not around them
    monkeypatch.setattr(d, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(d, "_CHOSEN", {})
    monkeypatch.setattr(d, "feature_rule", lambda: (None, "a CPU gentool has no rule for"))
    monkeypatch.setattr(d, "BUSY_SHARE", 1.0)  # these tests judge the decision, not the machine's load
    monkeypatch.setattr(d, "OWN_SHARE", 0.0)  # (the fake probe below takes no time at all)
    runs = []

    def fake(work, *args, **kw):
        assert set(work) == {"fp32", "bf16"}
        runs.append(1)
        return {"fp32": 0.01, "bf16": 0.02}
    monkeypatch.setattr(d, "time_workloads", fake)
    return tmp_path / "gentool" / d.CACHE_FILE, runs


def test_the_probe_runs_once_per_machine_and_thread_count(probe, monkeypatch):
    cache, runs = probe
    first = d.choose_precision("auto", CPU)
    assert first.used == "fp32" and "0.50x" in first.reason and len(runs) == 1
    assert d.choose_precision("AUTO", CPU) == first and len(runs) == 1  # this process remembers
    monkeypatch.setattr(d, "_CHOSEN", {})
    again = d.choose_precision("auto", CPU)  # a new process: the cache answers
    assert again.used == "fp32" and "(cached)" in again.reason and len(runs) == 1
    (entry,) = json.loads(cache.read_text())["entries"].values()
    assert entry["threads"] == torch.get_num_threads() and entry["torch"] == torch.__version__
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # another thread count is another measurement
        d.choose_precision("auto", CPU)
    finally:
        torch.set_num_threads(threads)
    assert len(runs) == 2 and len(json.loads(cache.read_text())["entries"]) == 2


@pytest.mark.parametrize("content", [
    b"not json", b"\xff\xfe", b"[" * 100_000, b'{"format": 1, "entries": []}', b'{"format": 2, "entries": {}}',
    b" " * (65 << 10) + b"{}",
    json.dumps({"format": 1, "entries": {"0" * 24: {"fp32": -1, "bf16": 0.01, "measured": 1}}}).encode(),
    json.dumps({"format": 1, "entries": {"0" * 24: {"fp32": "NaN", "bf16": 0.01, "measured": 1}}}).encode(),
    json.dumps({"format": 1, "entries": {"../x": {"fp32": 1, "bf16": 0.01, "measured": 1}}}).encode(),
    json.dumps({"format": 1, "entries": {"0" * 24: {"fp32": 1, "bf16": 1, "measured": 1, "x": 1}}}).encode(),
    json.dumps({"format": 1, "entries": {f"{i:024x}": {"fp32": 1, "bf16": 1, "measured": 1}
                                         for i in range(d.CACHE_ENTRIES + 1)}}).encode(),
])
def test_a_hostile_cache_is_ignored_and_replaced(probe, content):
    cache, runs = probe
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    assert d.choose_precision("auto", CPU).used == "fp32" and len(runs) == 1  # probed, not read
    assert len(json.loads(cache.read_text())["entries"]) == 1


def test_a_cache_entry_cannot_claim_bf16_without_its_timings(probe, monkeypatch):
    """The cache holds measurements, not decisions: a doctored entry still has to show bf16 faster."""
    cache, runs = probe
    d.choose_precision("auto", CPU)
    data = json.loads(cache.read_text())
    (key,) = data["entries"]
    data["entries"][key].update(fp32=0.04, bf16=0.01)
    cache.write_text(json.dumps(data))
    monkeypatch.setattr(d, "_CHOSEN", {})
    assert d.choose_precision("auto", CPU).used == "bf16" and len(runs) == 1


def test_a_cache_symlink_is_replaced_not_followed(probe, tmp_path):
    cache, runs = probe
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    cache.parent.mkdir(parents=True)
    cache.symlink_to(target)
    d.choose_precision("auto", CPU)
    assert target.read_text() == "keep me" and not cache.is_symlink()


def test_no_probe_where_the_rule_decides(probe, monkeypatch):
    cache, runs = probe
    monkeypatch.setattr(d, "_bf16_supported", lambda device: False)
    assert "no native bf16" in d.choose_precision("auto", CPU).reason
    assert d.choose_precision("auto", torch.device("mps")).used == "fp32"
    for native in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
        assert d.auto_precision(torch.device("cuda")).used == ("bf16" if native else "fp32")
    assert not runs and not cache.exists()
    assert d.choose_precision("fp32", CPU).reason == "given"
    with pytest.raises(Exception, match="--precision: .*fp8.*one of auto, fp32, bf16, fp16"):
        d.check_precision("fp8", CPU)


def test_a_run_records_the_choice_and_an_old_fp32_run_keeps_fp32(tmp_path, mnist_root, probe):
    options = dict(model="vae", data="mnist", data_dir=str(mnist_root), limit=32, batch_size=16, sample_every=0,
                   checkpoint_every=0)
    new = train(TrainOptions(**options, epochs=1, out=str(tmp_path / "new")))
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["options"]["precision"] == "auto"  # what a resume re-decides on the machine it runs on
    assert config["precision"] == new["precision"] == {"requested": "auto", "used": "fp32",
                                                       "reason": d.choose_precision("auto", CPU).reason}
    train(TrainOptions(**options, epochs=1, out=str(tmp_path / "old"), precision="fp32"))  # as runs before auto
    resumed = train(TrainOptions(resume=str(tmp_path / "old"), epochs=2))
    assert resumed["precision"] == {"requested": "fp32", "used": "fp32", "reason": "given"}
    assert not math.isnan(resumed["final_metrics"]["loss"])


INTEL_AMX = {"vendor_id": "GenuineIntel", "flags": "avx512f avx512_bf16 amx_bf16 amx_tile"}
ZEN4 = {"vendor_id": "AuthenticAMD", "flags": "avx512f avx512_bf16"}
INTEL_NO_AMX = {"vendor_id": "GenuineIntel", "flags": "avx512f avx512_bf16"}


@pytest.mark.parametrize("info, expected", [(INTEL_AMX, "bf16"), (ZEN4, "bf16"), (INTEL_NO_AMX, "fp32"),
                                            ({"vendor_id": "GenuineIntel", "flags": "avx2"}, None), ({}, None)])
def test_the_feature_rule_knows_the_cpus_measured_here(info, expected):
    assert d.feature_rule(info)[0] == expected


def test_a_busy_probe_cannot_overrule_the_rule_and_a_quiet_clear_one_can():
    busy_slow = {"fp32": 0.0100, "bf16": 0.0130}  # the Zen 4 probe taken under load: bf16 at 0.77x
    assert d.decide_precision(busy_slow, expected="bf16", busy=True, why="w").used == "bf16"
    assert "does not overrule" in d.decide_precision(busy_slow, expected="bf16", busy=True, why="w").reason
    assert d.decide_precision({"fp32": 0.01, "bf16": 0.0105}, expected="bf16", why="w").used == "bf16"  # noise
    assert d.decide_precision({"fp32": 0.01, "bf16": 0.02}, expected="bf16", why="w").used == "fp32"  # quiet, clear
    assert d.decide_precision({"fp32": 0.02, "bf16": 0.01}, expected="fp32", busy=True, why="w").used == "fp32"
    assert d.decide_precision({"fp32": 0.02, "bf16": 0.01}, expected="fp32", why="w").used == "bf16"


def test_busy_measurements_are_not_cached_and_old_ones_expire(probe, monkeypatch):
    cache, runs = probe
    monkeypatch.setattr(d, "BUSY_SHARE", -1.0)  # every probe now counts as taken on a busy machine
    d.choose_precision("auto", CPU)
    assert len(runs) == 1 and not cache.exists()
    monkeypatch.setattr(d, "BUSY_SHARE", 1.0)
    monkeypatch.setattr(d, "_CHOSEN", {})
    d.choose_precision("auto", CPU)
    (entry,) = json.loads(cache.read_text())["entries"].values()
    assert len(d.read_cache(cache)) == 1
    assert d.read_cache(cache, now=entry["measured"] + (d.CACHE_DAYS + 1) * 86400) == {}  # expired: probed again


def test_the_decision_holds_beside_a_busy_process(tmp_path):
    """A process spinning on the probe's own core(s) must not flip `auto` to the slower precision: the decision
    under load is the quiet one (the rule, which a busy probe cannot overrule)."""
    import subprocess
    import sys

    if not d._bf16_supported(CPU) or d.feature_rule()[0] is None:
        pytest.skip("this CPU has no native bf16 or no feature rule: auto has nothing to flip between here")
    code = ("import torch, os; torch.set_num_threads(1); os.sched_setaffinity(0, {0}); "
            "from gentool.precision import auto_precision; print(auto_precision(torch.device('cpu')).used)")
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop(d.AUTO_ENV, None)  # the decision itself, even in a suite run with it forced
    spin = subprocess.Popen([sys.executable, "-c", "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"])
    try:
        loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        spin.kill()
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == d.feature_rule()[0]
    assert not (tmp_path / "gentool" / d.CACHE_FILE).exists()  # nothing measured under that load was kept


def test_a_long_run_checks_its_precision_on_its_own_steps_and_switches_once(tmp_path, mnist_root, probe,
                                                                             monkeypatch):
    import gentool.precision_check as check

    monkeypatch.setattr(check, "MIN_STEPS", 1)
    monkeypatch.setattr(check, "BUSY_SHARE", 1.0)  # the decision under test, whatever the machine's load now
    monkeypatch.setattr(check, "load_warning", lambda threads: None)
    monkeypatch.setattr(check, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(check, "time_workloads", lambda work, **kw: {"fp32": 0.040, "bf16": 0.010})
    options = dict(model="vae", data="mnist", data_dir=str(mnist_root), limit=32, batch_size=16, sample_every=0,
                   checkpoint_every=0, epochs=1, out=str(tmp_path / "run"))
    result = train(TrainOptions(**options))  # the probe chose fp32 (see `probe`); this model runs 4x in bf16
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precision"]["used"] == result["precision"]["used"] == "bf16"
    assert "switched from fp32" in config["precision"]["reason"]
    (event,) = [e for e in result["events"] if e["kind"] == "precision"]
    assert event["switched"] is True and event["fp32_ms"] == 40.0 and event["step"] == 0
    monkeypatch.setattr(check, "time_workloads", lambda work, **kw: {"fp32": 0.010, "bf16": 0.011})
    kept = train(TrainOptions(**{**options, "out": str(tmp_path / "kept")}))
    assert kept["precision"]["used"] == "fp32" and "kept after" in kept["precision"]["reason"]
    monkeypatch.setattr(check, "time_workloads", lambda work, **kw: {"fp32": 0.040, "bf16": 0.010})
    monkeypatch.setenv(d.AUTO_ENV, "fp32")  # forced: the run's own check must not switch it back to bf16
    forced = train(TrainOptions(**{**options, "out": str(tmp_path / "forced")}))
    config = json.loads((tmp_path / "forced" / "config.json").read_text())
    assert config["precision"] == forced["precision"] == {"requested": "auto", "used": "fp32",
                                                          "reason": "forced by GENTOOL_AUTO_PRECISION=fp32"}
    assert not [e for e in forced["events"] if e["kind"] == "precision"]


def test_a_resume_keeps_the_precision_its_run_trained_in(tmp_path, mnist_root, probe, monkeypatch):
    """`auto` is decided when a run starts: resumed on the same kind of machine, it keeps that choice even when
    auto would now decide otherwise (another answer would end the bit-exact continuation)."""
    options = dict(model="vae", data="mnist", data_dir=str(mnist_root), limit=32, batch_size=16, sample_every=0,
                   checkpoint_every=0)
    first = train(TrainOptions(**options, epochs=1, out=str(tmp_path / "r")))
    assert first["precision"]["used"] == "fp32"
    monkeypatch.setattr(d, "_CHOSEN", {("cpu", torch.get_num_threads()): d.PrecisionChoice("auto", "bf16", "now")})
    resumed = train(TrainOptions(resume=str(tmp_path / "r"), epochs=2))
    assert resumed["precision"]["used"] == "fp32" and "the run's own" in resumed["precision"]["reason"]
    monkeypatch.setenv(d.AUTO_ENV, "bf16")  # forcing auto does not end a run's bit-exact continuation either
    forced = train(TrainOptions(resume=str(tmp_path / "r"), epochs=3))
    assert forced["precision"]["used"] == "fp32" and "auto now: bf16, forced by" in forced["precision"]["reason"]


def test_the_environment_forces_what_auto_decides_and_doctor_says_so(probe, invoke, monkeypatch, tmp_path):
    """$GENTOOL_AUTO_PRECISION (CI, batch jobs across mixed hosts): auto decides that, without a probe; a bad value
    and bf16 on a CPU without it are one line naming the variable, exit 2, before any run directory exists."""
    cache, runs = probe
    for value in ("fp32", " BF16 "):
        monkeypatch.setenv(d.AUTO_ENV, value)
        choice = d.choose_precision("auto", CPU)
        assert (choice.used, choice.reason) == (value.strip().lower(), f"forced by {d.AUTO_ENV}={choice.used}")
    assert d.choose_precision("fp32", CPU).reason == "given"  # an explicit --precision is not auto's to force
    assert runs == [] and not cache.exists()  # nothing probed, nothing cached
    found = json.loads(invoke("doctor", "--json").stdout)
    assert found["precision"] == {"requested": "auto", "used": "bf16", "reason": f"forced by {d.AUTO_ENV}=bf16"}
    assert found["precision_forced"] == "bf16"
    shown = invoke("doctor").stdout
    assert f"precision auto: bf16 (forced by {d.AUTO_ENV}=bf16)" in shown and f"{d.AUTO_ENV} is set" in shown
    monkeypatch.setattr(d, "_bf16_supported", lambda device: False)
    refused = invoke("doctor")
    assert refused.exit_code == 2 and refused.stderr.splitlines() == [
        f"error: {d.AUTO_ENV}: got 'bf16'; expected fp32 or unset on this cpu: it has no native bf16 (AVX512-BF16 "
        "or AMX on a CPU)"]
    monkeypatch.setenv(d.AUTO_ENV, "fp33")
    bad = invoke("train", "vae", "--data", "mnist-sample", "--epochs", "1", "--out", tmp_path / "run")
    assert bad.exit_code == 2 and bad.stderr.splitlines() == [
        f"error: {d.AUTO_ENV}: got 'fp33'; expected fp32 or bf16 (what --precision auto then picks), or unset"]
    assert not (tmp_path / "run").exists() and runs == []


@pytest.mark.parametrize("torch_v, vision_v, bad", [("2.14.1", "0.29.1", False), ("2.14.1+cu130", "0.29.1+cu130", False),
                                                     ("2.13.0", "0.29.1", True), ("2.4.1", "0.19.1", False),
                                                     ("2.14.1", "0.28.0", True)])
def test_a_torchvision_built_for_another_torch_is_one_line_naming_the_fix(torch_v, vision_v, bad):
    from gentool.versions import FIX, torchvision_problem

    problem = torchvision_problem(torch_v, vision_v)
    assert (problem is not None) == bad
    if bad:
        assert f"torchvision {vision_v} does not match torch {torch_v}" in problem and FIX in problem


def test_doctor_shows_and_clears_the_cached_decision(probe, invoke):
    cache, runs = probe
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["precision"]["used"] == "fp32" and found["torchvision_problem"] is None
    (entry,) = found["precision_cache_entries"]
    assert entry["fp32_ms"] == 10.0 and entry["expires_in_days"] <= d.CACHE_DAYS and cache.exists()
    hint = "clear the cached measurements with: gentool doctor --clear-precision"
    assert hint in invoke("doctor").stdout
    result = invoke("doctor", "--clear-precision")
    assert result.exit_code == 0 and "precision cache cleared" in result.stdout and len(runs) == 2
    assert hint not in result.stdout  # not to a user who has just run that command


def test_a_load_average_that_remembers_finished_work_is_not_busy(monkeypatch):
    """A run started right after another one sees a 1-minute load average of about 2 on 2 cores: the look at the
    CPU now decides (it told the benchmark's flow run the machine was busy, and skipped its precision check)."""
    from gentool import load

    monkeypatch.setattr(load, "cores", lambda: 2)
    monkeypatch.setattr(load, "others_now", lambda window=0.25: 2.0)
    monkeypatch.setattr(load.os, "getloadavg", lambda: (1.2, 2.0, 2.0))
    assert load.load_warning(2) is None  # within the slack: the now-look is not even taken
    monkeypatch.setattr(load.os, "getloadavg", lambda: (2.1, 2.0, 2.0))
    monkeypatch.setattr(load, "others_now", lambda window=0.25: 0.1)
    assert load.load_warning(2) is None
    monkeypatch.setattr(load, "others_now", lambda window=0.25: 1.9)
    assert "busy" in load.load_warning(2) and "1.9 of them now" in load.load_warning(2)
    monkeypatch.setattr(load, "others_now", lambda window=0.25: None)  # no /proc/stat: the average decides
    assert "busy" in load.load_warning(2)
