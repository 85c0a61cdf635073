"""Pixel-space measures that need no extractor: Jensen–Shannon distance between pixel-intensity histograms, the
sliced Wasserstein distance between image sets (1-D Wasserstein distances along random directions), and the pixel
values' mean, spread and saturated share."""

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


def pixel_moments(images: torch.Tensor, chunk: int = 2000) -> np.ndarray:
    """Per-position sum and sum of squares (2 × C·H·W, float64) of uint8 N×C×H×W images: what the spread of each
    pixel across images needs, summed chunk by chunk (so a whole training split never exists in float64)."""
    total = torch.zeros(2, int(np.prod(images.shape[1:])), dtype=torch.float64)
    for part in images.split(chunk):
        x = part.flatten(1).double()
        total += torch.stack((x.sum(0), (x * x).sum(0)))
    return total.numpy()


def pixel_summary(hist: np.ndarray, moments: np.ndarray) -> dict:
    """Pixel values in [0, 1]: mean and standard deviation over all pixels (from the histogram), spread (each
    position's standard deviation across images, averaged: 0 when every image is the same) and the saturated share
    (values 0–2 or 253–255, i.e. below 0.01 or above 0.99)."""
    total = hist.sum()
    values = np.arange(256) / 255
    mean = float((hist * values).sum() / total)
    std = float(np.sqrt(max((hist * values**2).sum() / total - mean**2, 0.0)))
    n = total / moments.shape[1]  # images: every position holds one value per image
    per_position = np.maximum(moments[1] / n - (moments[0] / n) ** 2, 0.0)
    return {"pixel_mean": mean, "pixel_std": std, "pixel_spread": float(np.sqrt(per_position).mean() / 255),
            "pixel_saturated": float((hist[:3].sum() + hist[253:].sum()) / total)}


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
