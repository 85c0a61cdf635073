"""evaluate's intervals (a bootstrap over the generated set) and FID∞, on cheap synthetic features: an interval
must cover the score of a second, independent sample set in most trials, without being uselessly wide; and the
training watch keeps a new best only beyond the interval."""

from types import SimpleNamespace

import numpy as np
import pytest

from gentool.metrics import evaluate
from gentool.metrics.evaluate import score_stats
from gentool.metrics.fid_kid import gaussian_stats
from gentool.metrics.intervals import IntervalPlan
from gentool.metrics.stats import ImageStats
from gentool.metrics.watch import BEST_RULE, TrainingWatch
from test_metrics import one_thread  # noqa: F401 (an autouse fixture)

D, K = 16, 4
MIXING = np.random.default_rng(0).standard_normal((D, K))
CI = {"fid": "fid_ci", "kid_mean": "kid_ci", "precision": "precision_ci", "recall": "recall_ci",
      "modes": "modes_ci", "class_kl": "class_kl_ci"}


def draw(rng, n: int, shift: float) -> ImageStats:
    """Features of a Gaussian with its mean moved by `shift`, and class probabilities from a fixed linear map."""
    x = rng.standard_normal((n, D)) + shift
    p = np.exp(x @ MIXING)
    return ImageStats(x.astype(np.float32), p / p.sum(1, keepdims=True), np.ones(256), np.zeros((1, 0)),
                      np.zeros((2, 1)))


@pytest.fixture(scope="module")
def real():
    stats = draw(np.random.default_rng(1), 1500, 0.0)
    return stats, gaussian_stats(stats.features)


def test_intervals_cover_a_second_sample_set_and_are_not_too_wide(real, monkeypatch):
    monkeypatch.setattr(evaluate, "KID_SUBSETS", 10)  # KID's own subsets, not its interval: fewer are faster here
    wanted, plan = ("fid", "kid", "pr", "modes"), IntervalPlan(80, 0.95)
    covered, widths, seconds = {k: 0 for k in CI}, {k: [] for k in CI}, {k: [] for k in CI}
    trials = 8
    for trial in range(trials):
        rng = np.random.default_rng(100 + trial)
        first, _ = score_stats(*real, draw(rng, 250, 0.4), wanted, trial, plan)
        second, _ = score_stats(*real, draw(rng, 250, 0.4), wanted, trial)
        assert not any(k.endswith("_ci") for k in second)  # no plan, no intervals
        for key, ci in CI.items():
            low, high = first[ci]
            assert low <= first[key] <= high, key
            covered[key] += low <= second[key] <= high
            widths[key].append(high - low)
            seconds[key].append(second[key])
    for key in CI:
        assert covered[key] > trials / 2, (key, covered[key])
        spread = np.std(seconds[key])  # how far the score moves between sample sets
        if spread > 0:  # (modes: every set covers all classes)
            assert np.mean(widths[key]) < 8 * spread, key


def test_fid_inf_extrapolates_the_bias_away():
    """Unit covariances in 32 dimensions, means 0.1 apart in each: the population FID is 32·0.01 = 0.32. FID of
    1,000 samples is biased far above it; the line through FID at several N against 1/N lands much closer."""
    rng = np.random.default_rng(0)
    real = rng.standard_normal((4000, 32))
    gen = ImageStats(rng.standard_normal((1000, 32)) + 0.1, np.ones((1000, 2)) / 2, np.ones(256), np.zeros((1, 0)),
                     np.zeros((2, 1)))
    real_stats = ImageStats(real, np.ones((4000, 2)) / 2, np.ones(256), np.zeros((1, 0)), np.zeros((2, 1)))
    metrics, _ = score_stats(real_stats, gaussian_stats(real), gen, ("fid-inf",), 0)
    truth = 0.32
    sizes = [n for n, _ in metrics["fid_by_n"]]
    assert sizes == [200, 400, 600, 800, 1000] and metrics["fid_by_n"][-1][1] == pytest.approx(metrics["fid"])
    assert metrics["fid"] > truth + 0.2 and metrics["fid_inf_slope"] > 0
    assert abs(metrics["fid_inf"] - truth) < abs(metrics["fid"] - truth) / 2


def test_a_new_best_must_beat_the_old_one_beyond_its_interval(tmp_path):
    saved = []
    opts = SimpleNamespace(eval_every=1, eval_n=100, stop_on_divergence=False, seed=0, epochs=10)
    session = SimpleNamespace(opts=opts, history={"epochs": []}, run_dir=tmp_path, save=saved.append)
    watch = TrainingWatch()
    watch.eval_every = 1
    steps = [(50.0, [48.0, 52.0]), (45.0, [43.0, 47.0]), (44.0, [42.0, 46.0]), (30.0, [29.0, 31.0])]
    events = []
    for epoch, (fid, ci) in enumerate(steps, start=1):
        watch.fid_ci = ci
        events.append(watch._keep_best(session, {"epoch": epoch, "step": epoch, "fid": fid}, False))
    assert [e and e["kind"] for e in events] == [None, None, "best_within_noise", None]
    assert events[2]["rule"] == BEST_RULE and "keeps epoch 2" in events[2]["message"]
    assert len(saved) == 3 and session.history["best"] == {"epoch": 4, "fid": 30.0, "fid_low": 29.0,
                                                            "fid_high": 31.0, "rule": BEST_RULE}


def test_a_real_set_no_larger_than_the_feature_dimension_is_noted():
    """A small folder's held-out part (6 images against 128 features) gave an FID with a narrow interval and no word
    that its real covariance is singular: the interval cannot show it, since the real set is never resampled."""
    rng = np.random.default_rng(0)
    real = draw(rng, 6, 0.0)
    gaussian = (real.features.mean(0), np.cov(real.features, rowvar=False))
    metrics, notes = score_stats(real, gaussian, draw(rng, 300, 0.0), ("fid", "kid"), 0)
    assert np.isfinite(metrics["fid"])
    assert any(f"the real set has 6 images, not above the feature dimension {real.features.shape[1]}" in note
               for note in notes), notes
    assert any("6 real images (scored: 300 generated against 6 real) are few" in note for note in notes), notes
