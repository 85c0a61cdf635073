"""Feature-distribution distances: Fréchet distance of Gaussian fits (FID), kernel inception distance (KID,
unbiased polynomial-kernel MMD over subsets) and the inception-style score from class probabilities."""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, unbiased) of N×D features; a single sample gives a zero covariance."""
    x = np.asarray(features, dtype=np.float64)
    mu = x.mean(axis=0)
    if len(x) < 2:
        return mu, np.zeros((x.shape[1], x.shape[1]))
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a (numerically) positive semi-definite matrix; tiny negative eigenvalues from
    round-off are clipped to zero, so the result is always real."""
    sym = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½ between two Gaussians.

    The cross term uses the symmetric product Σ1^½ Σ2 Σ1^½, whose eigenvalues are real and ≥ 0 (up to round-off,
    clipped), instead of sqrtm(Σ1 Σ2), which can return complex parts and fails on singular covariances (N below
    the feature dimension)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root = _psd_sqrt(s1)
    product = root @ s2 @ root
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * cross, 0.0))


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between two samples with the kernel k(a, b) = (a·b / d + 1)³ (diagonals left out)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float, int]:
    """KID: mean and standard deviation of the unbiased MMD² over `subsets` random subsets, and the subset size
    used (never above either sample's size; at least 2)."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.default_rng(seed)
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    values = [polynomial_mmd2(real[rng.choice(len(real), size, replace=False)],
                              fake[rng.choice(len(fake), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values)), size


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))) over `splits` parts of the sample: mean and standard deviation. It lies in
    [1, number of classes]: high when each image is confidently one class and all classes occur."""
    p = np.asarray(probs, np.float64)
    scores = []
    for part in np.array_split(p, max(1, min(splits, len(p)))):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
