"""The metrics' mathematics against closed forms and known cases, the extractor and its cache, the reference data
splits, input validation and the training watch's detectors. Data sets are tiny and synthetic; the real-MNIST
checks live in benchmarks/evaluate_mnist.py."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from conftest import colour_images
from gentool.errors import GentoolError, UsageError
from gentool.hooks import RunView
from gentool.metrics import extractor as ex
from gentool.metrics.distances import (histogram_jsd, pixel_histogram, pixel_moments, pixel_summary, project,
                                       projection_directions, sliced_wasserstein)
from gentool.evaluate_options import parse_metrics
from gentool.metrics.evaluate import Evaluator
from gentool.metrics.fid_kid import frechet_distance, gaussian_stats, inception_score, kernel_distance, polynomial_mmd2
from gentool.metrics.manifold import mode_coverage, precision_recall
from gentool.metrics.reference import resolve_reference
from gentool.metrics.sources import check_geometry, open_source
from gentool.metrics.watch import TrainingWatch, collapse_event, divergence_events, find_jump

# Tiny networks trained for a few dozen steps: enough to separate the synthetic classes, fast enough for tests.
# The variable only overrides the default recipe, and it enters the recipe hash, so it never mixes with it.
TINY_RECIPE = json.dumps({"widths": [8, 16], "epochs": 1, "min_steps": 60, "batch_size": 32, "feature_dim": 32})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny networks: thread hand-offs cost more than the work they share, far more on a loaded machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.setenv(ex.RECIPE_ENV, TINY_RECIPE)
        yield


def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance ---------------------------------------------------------------------------------------------

def test_frechet_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_matches_the_general_formula_for_full_covariances():
    rng = np.random.default_rng(0)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_frechet_of_samples_approaches_the_population_value():
    rng = np.random.default_rng(1)
    s1, s2 = random_spd(rng, 5), random_spd(rng, 5)
    mu2 = np.full(5, 0.5)
    x = rng.multivariate_normal(np.zeros(5), s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    exact = frechet_distance(np.zeros(5), s1, mu2, s2)
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(exact, rel=0.03)


def test_frechet_is_real_and_finite_when_n_is_below_the_dimension():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 64)), rng.standard_normal((12, 64)) + 1
    value = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    assert np.isfinite(frechet_distance(*gaussian_stats(x[:1]), *gaussian_stats(y)))


# --- KID, IS ------------------------------------------------------------------------------------------------------

def test_kid_is_unbiased_on_identical_distributions():
    rng = np.random.default_rng(3)
    values = [polynomial_mmd2(rng.standard_normal((50, 8)), rng.standard_normal((50, 8))) for _ in range(400)]
    # Unbiased: the mean over independent pairs is 0 within its standard error, and single values go below 0.
    assert abs(np.mean(values)) < 4 * np.std(values) / np.sqrt(len(values))
    assert min(values) < 0
    shifted = [polynomial_mmd2(rng.standard_normal((50, 8)), rng.standard_normal((50, 8)) + 0.5) for _ in range(20)]
    assert np.mean(shifted) > 10 * np.std(values)


def test_kid_subset_size_never_exceeds_n():
    rng = np.random.default_rng(4)
    mean, std, size = kernel_distance(rng.standard_normal((40, 4)), rng.standard_normal((15, 4)), subsets=10)
    assert size == 15 and np.isfinite(mean) and std >= 0


def test_kid_of_two_sets_of_n_at_most_the_subset_size_has_a_spread():
    """Walk w11: 500 against 500 printed "KID 0.62867 ± 0.00000" (every subset was both whole sets)."""
    rng = np.random.default_rng(5)
    mean, std, size = kernel_distance(rng.standard_normal((40, 4)), rng.standard_normal((40, 4)) + 1, subsets=10)
    assert size == 20 and std > 0 and mean > 0


def test_inception_score_bounds():
    one_hot = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(one_hot)[0] == pytest.approx(10, rel=1e-6)
    assert inception_score(np.full((100, 10), 0.1))[0] == pytest.approx(1.0)


# --- precision/recall, modes, pixel distances ---------------------------------------------------------------------

def test_precision_recall_cases():
    rng = np.random.default_rng(5)
    real = np.concatenate([rng.normal(0, 1, (200, 4)), rng.normal(10, 1, (200, 4))])
    same = np.concatenate([rng.normal(0, 1, (200, 4)), rng.normal(10, 1, (200, 4))])
    assert min(precision_recall(real, same)) > 0.8
    p, r = precision_recall(real, rng.normal(0, 1, (400, 4)))  # one of the two clusters: precise, half the recall
    assert p > 0.8 and 0.3 < r < 0.65
    assert precision_recall(real, rng.normal(100, 1, (400, 4))) == (0.0, 0.0)


def test_mode_coverage():
    real = np.eye(10)[np.arange(1000) % 10]
    single = np.eye(10)[np.full(500, 8)]
    one = mode_coverage(single, real)
    assert one["modes"] == 1 and one["class_kl"] == pytest.approx(np.log(10), rel=1e-3)
    full = mode_coverage(real, real)
    assert full["modes"] == 10 and full["class_kl"] == pytest.approx(0, abs=1e-9)


def test_pixel_distances():
    black = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
    white = torch.full((20, 1, 8, 8), 255, dtype=torch.uint8)
    grey = torch.full((20, 1, 8, 8), 128, dtype=torch.uint8)
    assert histogram_jsd(pixel_histogram(black), pixel_histogram(black)) == 0
    assert histogram_jsd(pixel_histogram(black), pixel_histogram(white)) == pytest.approx(1.0)
    d = projection_directions(64)
    assert np.array_equal(d, projection_directions(64))
    swd = lambda a, b: sliced_wasserstein(project(a, d), project(b, d))  # noqa: E731
    assert swd(black, black) == 0
    assert 0 < swd(black, grey) < swd(black, white)


def test_pixel_summary_mean_spread_and_saturation():
    summary = lambda x: pixel_summary(pixel_histogram(x), pixel_moments(x, chunk=7))  # noqa: E731
    black = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
    halves = torch.cat((black[:10], black[:10] + 255))  # half the images black, half white
    one_image = torch.randint(0, 256, (1, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert summary(halves) == pytest.approx({"pixel_mean": 0.5, "pixel_std": 0.5, "pixel_spread": 0.5,
                                             "pixel_saturated": 1.0})
    copies = summary(one_image.repeat(20, 1, 1, 1))  # varied pixels, every image the same: no spread
    assert copies["pixel_std"] > 0.2 and copies["pixel_spread"] == pytest.approx(0, abs=1e-6)
    grey = summary(black + 128)
    assert grey["pixel_mean"] == pytest.approx(128 / 255) and grey["pixel_saturated"] == 0


# --- the extractor, its cache and the reference splits ------------------------------------------------------------

def test_recipe_hash_changes_with_the_recipe(monkeypatch):
    monkeypatch.delenv(ex.RECIPE_ENV, raising=False)
    base = ex.default_recipe(SimpleNamespace(channels=1))
    assert base == ex.GREY_RECIPE and base.hash != ex.COLOUR_RECIPE.hash
    monkeypatch.setenv(ex.RECIPE_ENV, '{"epochs": 4}')
    assert ex.default_recipe(SimpleNamespace(channels=1)).hash != base.hash
    monkeypatch.setenv(ex.RECIPE_ENV, "[1")
    with pytest.raises(UsageError, match=ex.RECIPE_ENV):
        ex.default_recipe(SimpleNamespace(channels=1))


def test_reference_splits_of_folders(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "set" / split / "a").mkdir(parents=True)
    for given in ("set", "set/train", "set/test"):
        ref = resolve_reference(str(tmp_path / given))
        assert (ref.name, ref.train_folder.name, ref.test_folder.name) == ("set", "train", "test")
    (tmp_path / "flat" / "a").mkdir(parents=True)
    assert resolve_reference(str(tmp_path / "flat")).holdout
    with pytest.raises(UsageError, match="--data"):
        resolve_reference(str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def colour_evaluator(cifar_folder, tiny_cache):
    """An evaluator on the synthetic colour folder (no test/ sibling: every 10th image is held out)."""
    return Evaluator(resolve_reference(str(cifar_folder)), "train", torch.device("cpu"))


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def test_metrics_rank_real_above_noise_and_see_a_single_class(colour_evaluator):
    real = nchw(colour_images(200, seed=5)[0])
    noise = torch.randint(0, 256, real.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images, labels = colour_images(400, seed=6)
    single = nchw(images[labels == 3])
    every = ("fid", "kid", "is", "pr", "modes", "jsd", "emd", "pixels")
    r, _ = colour_evaluator.score(real, every, seed=0)
    n, _ = colour_evaluator.score(noise, every, seed=0)
    s, _ = colour_evaluator.score(single, every, seed=0)
    assert colour_evaluator.extractor.meta["test_accuracy"] > 0.9
    assert r["fid"] < n["fid"] and r["kid_mean"] < n["kid_mean"] and r["jsd"] < n["jsd"] and r["emd"] < n["emd"]
    assert r["precision"] > n["precision"] and r["recall"] > n["recall"]
    assert r["modes"] == 10 and s["modes"] == 1 and s["class_kl"] > r["class_kl"]
    assert r["is_mean"] > s["is_mean"]
    assert abs(r["pixel_mean"] - r["real_pixel_mean"]) < abs(n["pixel_mean"] - n["real_pixel_mean"])
    assert r["pixel_spread"] == pytest.approx(r["real_pixel_spread"], rel=0.2)


def test_scores_of_chunks_equal_scores_of_the_whole(colour_evaluator):
    """The evaluator holds per-image results, not images: handing them over in chunks changes no number."""
    images = nchw(colour_images(150, seed=8)[0])
    every = ("fid", "kid", "is", "pr", "modes", "jsd", "emd", "pixels")
    whole, _ = colour_evaluator.score(images, every, seed=0)
    for sizes in ([150], [64, 64, 22], [1] * 10 + [140]):
        parts, start = [], 0
        for size in sizes:
            parts.append(images[start:start + size])
            start += size
        chunked, _ = colour_evaluator.score(iter(parts), every, seed=0)
        assert chunked.keys() == whole.keys()
        for key, value in whole.items():
            assert chunked[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_small_n_is_noted_not_failed(colour_evaluator):
    images = nchw(colour_images(12, seed=7)[0])
    metrics, notes = colour_evaluator.score(images, ("fid", "kid", "pr"), seed=0)
    assert np.isfinite(metrics["fid"]) and metrics["kid_subset_size"] == 12
    assert any("feature dimension" in note for note in notes)


def test_extractor_is_cached_as_safetensors_and_reloaded(colour_evaluator, cifar_folder, capsys):
    path = ex.extractors_dir() / f"{colour_evaluator.extractor.id}.safetensors"
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    stats = path.with_name(path.stem + ".train.npz")
    with np.load(stats, allow_pickle=False) as z:
        assert z["features"].shape[1] == 32
    again = ex.get_extractor(resolve_reference(str(cifar_folder)), torch.device("cpu"))
    assert again.meta == colour_evaluator.extractor.meta
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged .*moved to"):
        retrained = ex.get_extractor(resolve_reference(str(cifar_folder)), torch.device("cpu"))
    assert path.with_name(path.name + ".bad").read_bytes() == b"garbage"  # kept aside, not deleted
    assert retrained.meta["test_accuracy"] == colour_evaluator.extractor.meta["test_accuracy"]  # fixed seed


# --- input validation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("array, match", [
    (np.zeros((4, 28, 28, 1), np.float32), "dtype float32"),
    (np.zeros((4, 28, 28, 2), np.uint8), "shape"),
    (np.zeros((0, 28, 28, 1), np.uint8), "shape"),
])
def test_npz_sources_are_checked(tmp_path, array, match):
    np.savez(tmp_path / "x.npz", images=array)
    with pytest.raises(UsageError, match=f"SOURCE: .*{match}"):
        open_source(str(tmp_path / "x.npz"))


def test_other_bad_sources(tmp_path):
    np.savez(tmp_path / "other.npz", pixels=np.zeros((2, 2), np.uint8))
    with pytest.raises(UsageError, match="no array 'images'.*pixels"):
        open_source(str(tmp_path / "other.npz"))
    np.savez(tmp_path / "obj.npz", images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GentoolError, match="SOURCE: .*dtype object"):  # read without unpickling anything
        open_source(str(tmp_path / "obj.npz"))
    for bad in ("missing.npz", "notes.txt"):
        (tmp_path / "notes.txt").write_text("x")
        with pytest.raises(UsageError, match="SOURCE: "):
            open_source(str(tmp_path / bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no PNG"):
        open_source(str(tmp_path / "empty"))
    grey = open_source(str(_npz(tmp_path, np.zeros((3, 28, 28), np.uint8))))
    assert grey.shape == (1, 28, 28)
    with pytest.raises(UsageError, match=r"SOURCE: .* holds grey 28×28 \(1×28×28\) images but --data cifar10 holds colour 32×32 \(3×32×32\)"):
        check_geometry(grey, (3, 32, 32), "cifar10")


def _npz(folder: Path, array: np.ndarray) -> Path:
    np.savez(folder / "grey.npz", images=array)
    return folder / "grey.npz"


def test_png_folders_must_be_one_size(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "a.png", np.zeros((28, 28), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((32, 32), np.uint8))
    source = open_source(str(tmp_path))
    with pytest.raises(UsageError, match="SOURCE: .*b.png is 32x32"):
        list(source.chunks(10, seed=0))


def test_metric_names():
    assert parse_metrics("all")[0] == "fid" and parse_metrics("precision,recall,fid") == ["pr", "fid"]
    with pytest.raises(UsageError, match="--metrics"):
        parse_metrics("fid,sharpness")


# --- the training watch -------------------------------------------------------------------------------------------

def test_jumps_are_judged_against_the_recent_range():
    assert find_jump([1.0, 1.1], 50.0) is None  # too little history
    assert find_jump([1.0, 1.1, 0.9, 1.05], 1.2) is None
    assert find_jump([1.0, 1.1, 0.9, 1.05], 9.0) == (0.9, 1.1)
    assert find_jump([1.0, 1.1, 0.9, 1.05], float("nan")) == (0.9, 1.1)
    assert find_jump([200.0, 130.0, 120.0, 115.0], 112.0) is None  # ordinary progress


def test_divergence_and_collapse_events():
    history = [{"epoch": e, "step": e, "seconds": 1.0, "g_loss": 1.0 + 0.01 * e} for e in range(1, 5)]
    record = {"epoch": 5, "step": 5, "seconds": 100.0, "g_loss": 40.0}
    (event,) = divergence_events(history, record)
    assert event["kind"] == "divergence" and event["key"] == "g_loss" and event["epoch"] == 5
    assert divergence_events(history, {"epoch": 5, "step": 5, "skipped_steps": 3})[0]["key"] == "skipped_steps"
    rising_kl = [{"epoch": e, "step": e, "loss": 200.0 - e, "kl": 0.01 * e} for e in range(1, 5)]
    assert divergence_events(rising_kl, {"epoch": 5, "step": 5, "loss": 195.0, "kl": 4.0}) == []  # not a loss
    assert collapse_event({"epoch": 3, "step": 9, "modes": 5}, 10)["kind"] == "mode_collapse"
    assert collapse_event({"epoch": 3, "step": 9, "modes": 6}, 10) is None


def test_watch_stops_on_divergence_and_keeps_the_last_healthy_state(tmp_path):
    saved = []
    opts = SimpleNamespace(eval_every=0, eval_n=100, stop_on_divergence=True, seed=0, epochs=10)
    session = RunView(SimpleNamespace(opts=opts, history={"epochs": [], "events": []}, run_dir=tmp_path,
                                      stop_reason=None, save=lambda path: (saved.append(path), path.write_bytes(b"x"))))
    watch = TrainingWatch()
    watch.setup(opts)
    for epoch, loss in enumerate([1.0, 1.1, 0.9, 1.0, 1e4], start=1):
        record = {"epoch": epoch, "step": epoch, "loss": loss}
        session.history["epochs"].append(record)
        watch.on_epoch_end(session, record, SimpleNamespace(message=lambda text: None))
        if epoch < 5:
            assert session.stop_reason is None
    assert len(saved) == 4 and session.history["best"]["epoch"] == 4
    assert session.history["events"][0]["kind"] == "divergence"
    assert "stopped after epoch 5" in session.stop_reason and "best.safetensors" in session.stop_reason


def test_fid_doubling_or_stuck_above_noise_is_a_divergence():
    watch = TrainingWatch()
    watch.eval_every, watch.eval_n, watch.stop, watch.seed = 1, 100, False, 0  # what setup takes from the options
    watch.noise_fid = 500.0
    history = [{"epoch": 1, "step": 9, "fid": 150.0}, {"epoch": 2, "step": 18, "fid": 70.0}]
    (event,) = watch._judge_samples(history, {"epoch": 3, "step": 27, "fid": 190.0, "modes": 8}, 10)
    assert event["kind"] == "divergence" and event["best"] == 70 and "epoch 2" in event["message"]
    assert watch._judge_samples(history, {"epoch": 3, "step": 27, "fid": 120.0, "modes": 8}, 10) == []
    broken = [{"epoch": 1, "step": 9, "fid": 1100.0}]
    (event, collapse) = watch._judge_samples(broken, {"epoch": 2, "step": 18, "fid": 1100.0, "modes": 1}, 10)
    assert event["noise_fid"] == 500 and collapse["kind"] == "mode_collapse"
    improving = watch._judge_samples(broken, {"epoch": 2, "step": 18, "fid": 700.0, "modes": 6}, 10)
    assert improving == [] and watch._judge_samples([], {"epoch": 1, "step": 9, "fid": 900.0, "modes": 6}, 10) == []
    # Raised when a condition starts, not again while it lasts.
    lasting = history + [{"epoch": 3, "step": 27, "fid": 190.0, "modes": 1}]
    assert watch._judge_samples(lasting, {"epoch": 4, "step": 36, "fid": 191.0, "modes": 1}, 10) == []
