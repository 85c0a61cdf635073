"""Feature-distribution distances: Fréchet distance of Gaussian fits (FID), kernel inception distance (KID,
unbiased polynomial-kernel MMD over subsets) and the inception-style score from class probabilities."""

from __future__ import annotations

import numpy as np
import torch

FID_INF_POINTS = 5  # sample counts FID∞'s line is fitted through


# Matrix products and eigen-decompositions run in torch (float64), not numpy: torch follows torch.set_num_threads,
# while numpy's bundled OpenBLAS was 10-80x slower on a busy 2-core machine (its idle threads spin).
def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float64))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, unbiased) of N×D features; a single sample gives a zero covariance."""
    x = _t(features)
    mu = x.mean(dim=0)
    if len(x) < 2:
        return mu.numpy(), np.zeros((x.shape[1], x.shape[1]))
    centred = x - mu
    return mu.numpy(), (centred.T @ centred / (len(x) - 1)).numpy()


def _psd_sqrt(matrix) -> np.ndarray:
    """The symmetric square root of a (numerically) positive semi-definite matrix; tiny negative eigenvalues from
    round-off are clipped to zero, so the result is always real."""
    m = _t(matrix)
    values, vectors = torch.linalg.eigh((m + m.T) / 2)
    return ((vectors * values.clamp(min=0).sqrt()) @ vectors.T).numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     root1: np.ndarray | None = None) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½ between two Gaussians.

    The cross term uses the symmetric product Σ1^½ Σ2 Σ1^½, whose eigenvalues are real and ≥ 0 (up to round-off,
    clipped), instead of sqrtm(Σ1 Σ2), which can return complex parts and fails on singular covariances (N below
    the feature dimension). `root1`, Σ1^½, may be passed in when Σ1 is fixed over many calls (a bootstrap)."""
    s1, s2 = _t(sigma1), _t(sigma2)
    root = _t(_psd_sqrt(s1) if root1 is None else root1)
    product = root @ s2 @ root
    cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    diff = _t(mu1) - _t(mu2)
    return float(max(diff @ diff + s1.trace() + s2.trace() - 2 * cross, 0.0))


def fid_by_sample_count(real: tuple[np.ndarray, np.ndarray], features: np.ndarray, seed: int,
                        points: int = FID_INF_POINTS) -> dict:
    """FID's bias with the sample count N and its extrapolation to N → ∞ (FID∞, Chong & Forsyth 2020): FID of
    random subsets of `points` sizes from N/5 to N (the last is the whole set), a least-squares line of FID against
    1/N, and its value at 1/N = 0. `real` is the real side's (mean, covariance)."""
    n = len(features)
    sizes = sorted({int(m) for m in np.linspace(max(n // 5, 2), n, points)})
    rng = np.random.default_rng(seed)
    root = _psd_sqrt(real[1])
    fids = [frechet_distance(*real, *gaussian_stats(features[rng.choice(n, m, replace=False)]), root1=root)
            for m in sizes]
    slope, intercept = np.polyfit(1.0 / np.array(sizes), fids, 1) if len(sizes) > 1 else (0.0, fids[0])
    return {"fid_inf": float(intercept), "fid_inf_slope": float(slope),
            "fid_by_n": [[m, round(f, 6)] for m, f in zip(sizes, fids)]}


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(a, b) = (a·b / d + 1)³ between the rows of x and of y (float64)."""
    return ((_t(x) @ _t(y).T / x.shape[1] + 1) ** 3).numpy()


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between two samples with the polynomial kernel (diagonals left out)."""
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float, int]:
    """KID: mean and standard deviation of the unbiased MMD² over `subsets` random subsets, and the subset size
    used (never above either sample's size; at least 2). Subsets that would hold both whole sets are halved: every
    subset would then be the same pair of sets, and the spread 0 would claim a certainty no estimate has (the
    unbiased MMD² is unbiased at any subset size, so only the spread changes)."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    if size == len(real) == len(fake) and size >= 4:
        size //= 2
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
