"""Sample-level metrics in the extractor's spaces: k-nearest-neighbour precision and recall (Kynkäänniemi et al.,
2019) on features, and mode coverage on predicted classes."""

from __future__ import annotations

import numpy as np
import torch

MODE_FRACTION = 0.2  # a class counts as covered when it holds at least this fraction of its share in the real data


def knn_radii(features: torch.Tensor, k: int, chunk: int = 1000) -> torch.Tensor:
    """Each sample's distance to its k-th nearest neighbour among the others (itself excluded)."""
    radii = []
    for start in range(0, len(features), chunk):
        d = torch.cdist(features[start:start + chunk], features)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the sample itself, at distance 0
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1000) -> float:
    """The fraction of `points` inside at least one ball (centre, radius)."""
    inside = 0
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start:start + chunk], centres)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: the share of generated samples inside the real manifold (the union of balls reaching each real
    sample's k-th nearest real neighbour); recall: the share of real samples inside the generated manifold."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples on each side")
    r = torch.as_tensor(np.asarray(real, np.float32))
    f = torch.as_tensor(np.asarray(fake, np.float32))
    precision = _coverage(f, r, knn_radii(r, k))
    recall = _coverage(r, f, knn_radii(f, k))
    return precision, recall


def class_histogram(probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Shares of the predicted (arg-max) classes."""
    counts = np.bincount(np.asarray(probs).argmax(axis=1), minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def mode_coverage(fake_probs: np.ndarray, real_probs: np.ndarray) -> dict:
    """How many classes the generated set covers (a class counts when its share of predictions is at least
    MODE_FRACTION of its share among real images) and KL(generated ‖ real) of the predicted-class histograms."""
    num_classes = real_probs.shape[1]
    fake_hist = class_histogram(fake_probs, num_classes)
    real_hist = class_histogram(real_probs, num_classes)
    covered = int(((fake_hist >= MODE_FRACTION * real_hist) & (fake_hist > 0)).sum())
    # A small floor keeps the KL finite when the real set never predicts a class the generated set does.
    eps = 1e-6
    p, q = fake_hist + eps, real_hist + eps
    p, q = p / p.sum(), q / q.sum()
    kl = float((p * np.log(p / q)).sum())
    return {"modes": covered, "classes": num_classes, "class_kl": kl, "class_histogram": fake_hist.round(4).tolist()}
