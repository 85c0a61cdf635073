"""Comparisons across seeds: spreads, the within-noise rule, and a seeded sweep's tables, heat map and report."""

import json
import math

import imageio.v3 as iio
import pytest

from gentool import seed_stats as ss
from gentool import sweep as sw

LOSSES = {2: [10.0, 11.0, 12.0], 5: [10.5, 11.5, 12.5], 10: [20.0, 20.5, 21.0]}


def test_spread_and_the_within_noise_rule():
    s = ss.spread([10.0, 11.0, 12.0, float("nan"), None])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (11.0, 1.0, 10.0, 12.0, 3)
    assert ss.spread([3.0])["std"] is None and ss.spread([None]) is None
    a, b, far = ss.spread(LOSSES[2]), ss.spread(LOSSES[5]), ss.spread(LOSSES[10])
    assert ss.within_noise(a, b)  # 0.5 apart, 2·√(1/3 + 1/3) ≈ 1.63
    assert not ss.within_noise(a, far)
    assert not ss.within_noise(ss.spread([1.0]), ss.spread([1.0]))  # one seed: no spread, no claim
    assert ss.marks([a, b, far, None], "loss") == [ss.BEST, ss.TIED, "", ""]
    assert ss.marks([a, b, far], "precision") == ["", "", ss.BEST]  # higher is better
    assert ss.marks([a, b], "pixel_mean") == ["", ""]  # closer to the real value: no best


@pytest.fixture
def seeded_sweep(tmp_path):
    """A finished sweep of 3 latent sizes × 3 seeds (trial records only: nothing trained)."""
    spec = sw.SweepSpec("vae", "mnist", {"latent_dim": [2, 5, 10], "seed": [0, 1, 2]}, tmp_path / "s",
                        runtime={"epochs": 1})
    manifest = sw.open_sweep(spec)
    for trial in manifest["trials"]:
        loss = LOSSES[trial["values"]["latent_dim"]][trial["values"]["seed"]]
        sw.update_trial(spec.out, trial["index"], status="done", epochs=1, final={"loss": loss, "kl": 1.0})
    return spec.out


def test_a_seeded_sweep_reports_mean_spread_and_noise(seeded_sweep, invoke, tmp_path):
    report = sw.report(seeded_sweep)
    rows = json.loads((seeded_sweep / "results_by_config.json").read_text())
    assert rows == report["by_config"]
    assert [(r["latent_dim"], r["seeds"], r["loss"], r["loss_min"], r["loss_max"], r["loss_vs_best"]) for r in rows] \
        == [(2, 3, 11.0, 10.0, 12.0, "best"), (5, 3, 11.5, 10.5, 12.5, "within noise"), (10, 3, 20.5, 20.0, 21.0, "")]
    assert math.isclose(rows[0]["loss_std"], 1.0) and rows[0]["kl_std"] == 0.0
    assert "results_by_config.csv" in " ".join(report["files"])
    assert iio.imread(seeded_sweep / "heatmap.png").shape[0] > 200

    page = tmp_path / "r.html"
    assert invoke("report", seeded_sweep, "--out", page, "--no-animations").exit_code == 0
    html = page.read_text()
    assert "Results by configuration" in html and "11 ± 1 (10–12)" in html
    assert '<tr class="best">' in html and '<tr class="tied">' in html and "combined standard error" in html
