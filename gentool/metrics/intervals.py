"""How much to trust a score: intervals for FID, KID, precision, recall and class coverage from a bootstrap over the
generated set. The real side is never resampled: its statistics are cached and stay fixed, so the interval says how
far the score would move with another draw of generated samples, not with another real data set.

Each resample draws blocks of the generated set with replacement (up to BLOCKS blocks of about N / BLOCKS samples;
one sample per block when N ≤ BLOCKS) and recomputes every score from per-block or per-sample quantities computed
once, so no resample touches the N × D features again:
- FID: per-block feature sums and Gram matrices give the resampled mean and covariance by weighted sums;
- KID: kernel sums between blocks and against a fixed real subset give the resampled set's unbiased MMD² (from at
  most KID_SAMPLES generated samples; above that its interval is wider than it need be);
- precision: each generated sample's membership of the real manifold, weighted;
- recall: a real sample stays covered when a resample keeps one of the generated balls that held it (the balls keep
  their radii; the spread of this subsample is scaled to a whole set's, see `recall`);
- modes and class KL: the predicted-class histogram, weighted.

Resampling duplicates samples, which shifts some scores (FID rises, recall falls). So the interval is the bootstrap
distribution's spread placed around the score itself: [value − (median − low quantile), value + (high quantile −
median)] (the bootstrap's median-shift estimate of the spread about the value, not its biased centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gentool.evaluate_options import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from gentool.metrics.fid_kid import _psd_sqrt, frechet_distance, polynomial_kernel
from gentool.metrics.manifold import coverage_of

METHOD = "bootstrap over generated samples"
BLOCKS = 250  # blocks resampled; more cost memory (one D×D Gram each) and time without changing the spread
GRAM_BYTES = 1 << 27  # the per-block Gram matrices never take more than this
KID_REAL, KID_SAMPLES = 1000, 10_000  # real samples KID's resampled cross term uses; generated samples its other


@dataclass(frozen=True)
class IntervalPlan:
    """How intervals are made: the number of bootstrap resamples (0: none) and the level."""

    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL

    def describe(self) -> dict:
        """The result's "interval" entry."""
        return {"method": METHOD, "resamples": self.resamples, "level": self.level, "real_resampled": False,
                "max_blocks": BLOCKS,
                "placement": "the bootstrap's spread around the value: [value - (median - low quantile), "
                             "value + (high quantile - median)]"}


class Bootstrap:
    """Collects the resampled form of each score (`fid`, `kid`, `precision`, …), then `intervals` runs them all
    over the same resamples."""

    def __init__(self, plan: IntervalPlan, n: int, dim: int, seed: int):
        self.plan, self.n, self.seed = plan, n, seed
        self.blocks = int(max(1, min(n, BLOCKS, GRAM_BYTES // (8 * dim * dim))))
        sizes = np.full(self.blocks, n // self.blocks) + (np.arange(self.blocks) < n % self.blocks)
        self.sizes, self.block_of = sizes, np.repeat(np.arange(self.blocks), sizes)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.stats: dict[str, tuple] = {}  # out key → (value key, fn, bounds, scale of the spread)

    def _add(self, value_key: str, fn, bounds=(-np.inf, np.inf), out: str | None = None, scale: float = 1.0) -> None:
        self.stats[out or f"{value_key}_ci"] = (value_key, fn, bounds, scale)

    def fid(self, features: np.ndarray, real_mu: np.ndarray, real_sigma: np.ndarray) -> None:
        x = torch.as_tensor(np.asarray(features, np.float64))
        padded = x.new_zeros(self.blocks, int(self.sizes.max()), x.shape[1])  # zero rows add nothing to a Gram
        padded[torch.from_numpy(self.block_of), torch.from_numpy(np.arange(self.n) - self.starts[self.block_of])] = x
        sums, grams = padded.sum(dim=1), padded.transpose(1, 2) @ padded
        sizes, root = torch.from_numpy(self.sizes.astype(np.float64)), _psd_sqrt(real_sigma)

        def stat(counts, _weights):
            c = torch.from_numpy(counts)
            m = float(c @ sizes)
            mu = c @ sums / m
            cov = (torch.tensordot(c, grams, 1) - m * torch.outer(mu, mu)) / max(m - 1, 1)
            return frechet_distance(real_mu, real_sigma, mu.numpy(), cov.numpy(), root1=root)

        self._add("fid", stat, (0.0, np.inf))

    def kid(self, real: np.ndarray, fake: np.ndarray) -> None:
        """The unbiased MMD² of the resampled set against a fixed real subset, exactly, from kernel sums between
        blocks (computed once, over at most KID_SAMPLES generated samples: N² kernel values)."""
        rng = np.random.default_rng(self.seed)
        subset = np.asarray(real)[rng.choice(len(real), min(KID_REAL, len(real)), replace=False)]
        cap = min(self.n, KID_SAMPLES)
        y, blocks = np.asarray(fake[:cap], np.float64), torch.from_numpy(self.block_of[:cap])
        pair_sums = torch.zeros(self.blocks, self.blocks, dtype=torch.float64)
        for start in range(0, cap, 1000):
            k = torch.from_numpy(polynomial_kernel(y[start:start + 1000], y))
            k.diagonal(start).zero_()  # a sample with itself is no pair
            by_block = torch.zeros(len(k), self.blocks, dtype=torch.float64).index_add_(1, blocks, k)
            pair_sums.index_add_(0, blocks[start:start + 1000], by_block)
        own = np.bincount(self.block_of[:cap], ((y * y).sum(axis=1) / y.shape[1] + 1) ** 3, minlength=self.blocks)
        cross = np.bincount(self.block_of[:cap], polynomial_kernel(y, subset).mean(axis=1), minlength=self.blocks)
        sizes = np.bincount(self.block_of[:cap], minlength=self.blocks).astype(np.float64)

        def stat(counts, _weights):  # copies of one block pair up too: k(y, y) for a sample with its copy
            c = torch.from_numpy(counts)
            m = float((counts * sizes).sum())
            kyy = (float(c @ pair_sums @ c) + float((counts * (counts - 1) * own).sum())) / (m * (m - 1))
            return kyy - 2 * float((counts * cross).sum()) / m  # the real-real term is fixed: no quantile moves

        self._add("kid_mean", stat, out="kid_ci")

    def share(self, key: str, inside: np.ndarray) -> None:
        """A score that is the share of generated samples with a property (precision)."""
        inside = np.asarray(inside, np.float64)
        self._add(key, lambda _c, w: float((inside * w).sum() / w.sum()), (0.0, 1.0))

    def recall(self, cover: np.ndarray) -> None:
        """Recall of the distinct balls a resample keeps: a subsample of a share f ≈ 1 − 1/e of the blocks, whose
        spread about the whole set's value is that of an independent set times √((1 − f) / f) (sampling without
        replacement); the spread is scaled back by √(f / (1 − f))."""
        held = cover >= 0
        index = np.where(held, cover, 0)
        kept = 1 - (1 - 1 / self.blocks) ** self.blocks  # the expected share of blocks a resample draws
        scale = np.sqrt(kept / (1 - kept)) if self.blocks > 1 else 1.0
        self._add("recall", lambda _c, w: float((held & (w[index] > 0)).any(axis=1).mean()), (0.0, 1.0),
                  scale=scale)

    def classes(self, probs: np.ndarray, real_hist: np.ndarray) -> None:
        labels = np.asarray(probs).argmax(axis=1)
        k = len(real_hist)

        def hist(w):
            counts = np.bincount(labels, w, minlength=k)
            return counts / max(counts.sum(), 1.0)

        self._add("modes", lambda _c, w: coverage_of(hist(w), real_hist)[0], (0, k))
        self._add("class_kl", lambda _c, w: coverage_of(hist(w), real_hist)[1], (0.0, np.inf))

    def intervals(self, values: dict) -> dict:
        """`<key>_ci`: [low, high] for every collected score whose value is in `values`."""
        todo = {out: spec for out, spec in self.stats.items() if values.get(spec[0]) is not None}
        if not todo or self.plan.resamples < 1:
            return {}
        rng = np.random.default_rng([self.seed, 27])
        draws = {out: np.empty(self.plan.resamples) for out in todo}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each resample's products are small: thread hand-offs would cost more than they save
        try:
            for r in range(self.plan.resamples):
                counts = np.bincount(rng.integers(0, self.blocks, self.blocks), minlength=self.blocks).astype(float)
                weights = counts[self.block_of]
                for out, (_, fn, _, _) in todo.items():
                    draws[out][r] = fn(counts, weights)
        finally:
            torch.set_num_threads(threads)
        tail = (1 - self.plan.level) / 2
        result = {}
        for out, (key, _, (low, high), scale) in todo.items():
            q_low, median, q_high = np.quantile(draws[out], [tail, 0.5, 1 - tail], method="nearest")
            value = values[key]
            kind = int if isinstance(value, int) else _round
            result[out] = [kind(max(low, value - scale * (median - q_low))),
                           kind(min(high, value + scale * (q_high - median)))]
        return result


def _round(x: float) -> float:
    return float(f"{float(x):.6g}")
