"""gentool's FID, KID and precision/recall formulas agree with torch-fidelity's (the reference implementation the
`inception` extra installs) to 1e-3 on the same features. Skipped when torch-fidelity is not installed.

The features here are like gentool's extractor's (non-negative after its ReLU), in 32 dimensions to stay cheap;
the formulas do not depend on where features come from. benchmarks/interval_cost.py --reference runs the same
comparison on the CIFAR-10 extractor's real features."""

import numpy as np
import pytest
import torch

from test_metrics import one_thread  # noqa: F401 (an autouse fixture)
from gentool.metrics.fid_kid import frechet_distance, gaussian_stats, polynomial_mmd2
from gentool.metrics.manifold import precision_recall

fidelity_fid = pytest.importorskip("torch_fidelity.metric_fid")
fidelity_kid = pytest.importorskip("torch_fidelity.metric_kid")
fidelity_prc = pytest.importorskip("torch_fidelity.metric_prc")


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((32, 32)) / 4
    real = np.maximum(rng.standard_normal((500, 32)) @ mix, 0)
    fake = np.maximum((rng.standard_normal((400, 32)) + 0.3) @ mix, 0)
    return real.astype(np.float32), fake.astype(np.float32)


def test_fid_agrees_with_torch_fidelity(features):
    real, fake = features
    theirs = fidelity_fid.fid_statistics_to_metric(
        *(fidelity_fid.fid_features_to_statistics(torch.from_numpy(f).double()) for f in (real, fake)), verbose=False)
    ours = frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
    assert ours > 0.1 and abs(ours - theirs["frechet_inception_distance"]) < 1e-3


def test_kid_agrees_with_torch_fidelity_on_its_own_subsets(features):
    """torch-fidelity draws its subsets with numpy's legacy RandomState; the same subsets through gentool's
    unbiased polynomial MMD² give the same mean."""
    real, fake = features
    subsets, size, seed = 5, 200, 11
    theirs = fidelity_kid.kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=subsets,
                                                 kid_subset_size=size, rng_seed=seed, verbose=False)
    rng = np.random.RandomState(seed)
    ours = np.mean([polynomial_mmd2(real[rng.choice(len(real), size, replace=False)].astype(np.float64),
                                    fake[rng.choice(len(fake), size, replace=False)].astype(np.float64))
                    for _ in range(subsets)])
    assert ours > 1e-3 and abs(ours - theirs["kernel_inception_distance_mean"]) < 1e-3


def test_precision_recall_agree_with_torch_fidelity(features):
    real, fake = features
    theirs = fidelity_prc.prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=3,
                                                 prc_batch_size=10_000, save_cpu_ram=False, verbose=False)
    precision, recall = precision_recall(real, fake, 3)
    assert 0 < precision < 1 and 0 < recall < 1
    assert abs(precision - theirs["precision"]) < 1e-3 and abs(recall - theirs["recall"]) < 1e-3
