"""A setting and a metric of the same name stay two columns in every table of runs or trials: `summary DIR` of a
distilled run showed the critic's loss term `adversarial` under the config column `adversarial` (its weight), the
setting lost. The setting's column is then "NAME (setting)"; metrics keep their names."""

from __future__ import annotations

import json
import subprocess

from gentool import seed_stats, sweep
from gentool.results import SETTING, compare_runs, setting_value
from test_journeys import ENV, GENTOOL


def distilled_runs(root):
    """Two reflow students whose `adversarial` setting (0.5, 0) differs, each recording an `adversarial` metric."""
    for name, weight, term in (("student-a", 0.5, 0.25), ("student-b", 0.0, 0.0)):
        run = root / name
        run.mkdir(parents=True)
        config = {"model": "reflow", "data": {"name": "mnist"}, "config": {"adversarial": weight, "latent_dim": 8}}
        (run / "config.json").write_text(json.dumps(config))
        record = {"epoch": 1, "step": 4, "seconds": 1.0, "loss": 0.5, "adversarial": term}
        (run / "metrics.json").write_text(json.dumps({"epochs": [record]}))


def test_summary_of_distilled_runs_shows_the_setting_and_the_metric(tmp_path):
    distilled_runs(tmp_path / "runs")
    rows = compare_runs(tmp_path / "runs")
    assert [(r[SETTING.format("adversarial")], r["adversarial"]) for r in rows] == [(0.5, 0.25), (0.0, 0.0)]
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        done = subprocess.run([str(GENTOOL), "summary", "runs"], cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL,
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header = next(line for line in out.read_text().splitlines() if line.startswith("┃ run"))
    assert "adversarial (setting)" in header and header.count("adversarial") == 2


def test_sweep_rows_keep_a_value_apart_from_a_metric_of_its_name():
    grid = [(0, 0), (0, 1), (1, 0), (1, 1)]
    trials = [{"index": i, "values": {"adversarial": w, "seed": s}, "status": "done", "epochs": 1, "run_dir": f"t{i}",
               "final": {"adversarial": i / 10, "loss": 1.0}} for i, (w, s) in enumerate(grid)]
    rows = sweep.result_rows({"trials": trials})
    expected = [(w, i / 10) for i, (w, _) in enumerate(grid)]
    assert [(r["adversarial (setting)"], r["adversarial"]) for r in rows] == expected
    assert rows[0]["seed"] == 0 and "seed (setting)" not in rows[0]  # no metric of that name: as before
    by_config = seed_stats.config_rows({"adversarial": [0, 1], "seed": [0, 1]}, trials, "adversarial")
    assert [setting_value(r, "adversarial") for r in by_config] == [0, 1]
    assert [round(r["adversarial"], 6) for r in by_config] == [0.05, 0.25]


def test_partial_and_seconds_close_the_table_for_one_run_as_for_several():
    from gentool.results import columns

    partial = {"run": "a", "loss": 1.0, "partial": True, "seconds": 3.0}
    whole = {"run": "b", "loss": 2.0, "seconds": 4.0}
    assert columns([partial]) == ["run", "loss", "seconds", "partial"]
    assert columns([whole, partial]) == columns([partial, whole]) == ["run", "loss", "seconds", "partial"]
