"""Sample-level metrics in the extractor's spaces: k-nearest-neighbour precision and recall (Kynkäänniemi et al.,
2019) on features, and mode coverage on predicted classes."""

from __future__ import annotations

from dataclasses import dataclass

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


COVER_KEPT = 16  # covering balls remembered per point: a point inside more stays covered in any bootstrap resample


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, keep: int = 0,
              chunk: int = 1000) -> tuple[np.ndarray, np.ndarray | None]:
    """Which `points` lie inside at least one ball (centre, radius), and with `keep` > 0 the indices of up to `keep`
    balls holding each point (−1 where there are fewer): what a bootstrap over the centres needs."""
    inside, held = [], []
    for start in range(0, len(points), chunk):
        hit = torch.cdist(points[start:start + chunk], centres) <= radii[None, :]
        inside.append(hit.any(dim=1).numpy())
        if keep:
            found, index = hit.to(torch.uint8).topk(min(keep, len(centres)), dim=1)
            held.append(torch.where(found > 0, index, -1).numpy())
    return np.concatenate(inside), (np.concatenate(held) if keep else None)


@dataclass
class Membership:
    """Per-sample k-NN manifold membership: `fake_inside` (each generated sample inside the real manifold) and
    `real_inside` (each real sample inside the generated one), with `real_cover` (up to COVER_KEPT generated balls
    holding each real sample) when asked for."""

    fake_inside: np.ndarray
    real_inside: np.ndarray
    real_cover: np.ndarray | None = None

    @property
    def precision(self) -> float:
        return float(self.fake_inside.mean())

    @property
    def recall(self) -> float:
        return float(self.real_inside.mean())


def membership(real: np.ndarray, fake: np.ndarray, k: int = 3, cover: bool = False) -> Membership:
    """Precision's and recall's per-sample memberships (see precision_recall); with `cover`, also which generated
    balls hold each real sample."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall need more than k={k} samples on each side")
    r = torch.as_tensor(np.asarray(real, np.float32))
    f = torch.as_tensor(np.asarray(fake, np.float32))
    fake_inside, _ = _coverage(f, r, knn_radii(r, k))
    real_inside, held = _coverage(r, f, knn_radii(f, k), COVER_KEPT if cover else 0)
    return Membership(fake_inside, real_inside, held)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: the share of generated samples inside the real manifold (the union of balls reaching each real
    sample's k-th nearest real neighbour); recall: the share of real samples inside the generated manifold."""
    m = membership(real, fake, k)
    return m.precision, m.recall


def class_histogram(probs: np.ndarray, num_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Shares of the predicted (arg-max) classes, each sample counted `weights` times (default once)."""
    counts = np.bincount(np.asarray(probs).argmax(axis=1), weights, minlength=num_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def coverage_of(fake_hist: np.ndarray, real_hist: np.ndarray) -> tuple[int, float]:
    """Classes covered (a class counts when its generated share is at least MODE_FRACTION of its real share) and
    KL(generated ‖ real) of two predicted-class histograms."""
    covered = int(((fake_hist >= MODE_FRACTION * real_hist) & (fake_hist > 0)).sum())
    # A small floor keeps the KL finite when the real set never predicts a class the generated set does.
    eps = 1e-6
    p, q = fake_hist + eps, real_hist + eps
    p, q = p / p.sum(), q / q.sum()
    return covered, float((p * np.log(p / q)).sum())


def mode_coverage(fake_probs: np.ndarray, real_probs: np.ndarray) -> dict:
    """How many classes the generated set covers and KL(generated ‖ real) of the predicted-class histograms (see
    coverage_of)."""
    num_classes = real_probs.shape[1]
    fake_hist = class_histogram(fake_probs, num_classes)
    covered, kl = coverage_of(fake_hist, class_histogram(real_probs, num_classes))
    return {"modes": covered, "classes": num_classes, "class_kl": kl, "class_histogram": fake_hist.round(4).tolist()}
