"""Pixel-space distances that need no extractor: Jensen–Shannon distance between pixel-intensity histograms and
the sliced Wasserstein distance between image sets (1-D Wasserstein distances along random directions)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

SWD_PROJECTIONS = 128
# Fixed, so the real side's projections can be cached and scores are comparable across --seed values.
SWD_SEED = 20_240_601


def pixel_histogram(images: torch.Tensor) -> np.ndarray:
    """Counts of each uint8 intensity (256 bins) over all pixels and channels."""
    return torch.bincount(images.reshape(-1).long(), minlength=256).double().numpy()


def histogram_jsd(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, so in [0, 1]) between two histograms of counts."""
    return float(jensenshannon(np.asarray(a, np.float64), np.asarray(b, np.float64), base=2))


def projection_directions(dim: int, count: int = SWD_PROJECTIONS) -> np.ndarray:
    """`count` random unit vectors in pixel space (count × dim, float32), the same for a given `dim` every time."""
    v = np.random.default_rng(SWD_SEED).standard_normal((count, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def project(images: torch.Tensor, directions: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """Projections (count × N, float32) of uint8 N×C×H×W images, scaled to [0, 1], onto each direction."""
    d = torch.from_numpy(directions)
    parts = [(c.flatten(1).float() / 255) @ d.T for c in images.split(chunk)]
    return torch.cat(parts).T.contiguous().numpy()


def sliced_wasserstein(real_proj: np.ndarray, fake_proj: np.ndarray) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance between the projected real and generated sets."""
    return float(np.mean([wasserstein_distance(r, f) for r, f in zip(real_proj, fake_proj)]))
