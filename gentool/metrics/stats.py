"""What the metrics need from a set of images — extractor features and class probabilities, the pixel histogram, the
per-position pixel moments and the random projections — and the cache of these for real data (one `.npz` plus a
JSON sidecar per extractor and split; read with allow_pickle=False)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch

import gentool
from gentool.fileio import atomic_write_bytes, atomic_write_json, read_json
from gentool.metrics.distances import (SWD_PROJECTIONS, SWD_SEED, pixel_histogram, pixel_moments, project,
                                       projection_directions)
from gentool.metrics.extractor import Extractor, extractors_dir
from gentool.metrics.reference import Reference
from gentool.progress import Reporter

STATS_VERSION = 2  # 2: per-position pixel moments (the pixels metric)
REAL_PROJECTION_CAP = 10_000  # real images whose projections are kept for the sliced Wasserstein distance
ARRAYS = ("features", "probs", "pixel_hist", "projections", "pixel_moments")


@dataclass
class ImageStats:
    """Per-image features (N×D) and class probabilities (N×K), the pixel histogram (256), the projections
    (directions × M) and the per-position pixel sums and sums of squares (2 × C·H·W) of a set of images."""

    features: np.ndarray
    probs: np.ndarray
    pixel_hist: np.ndarray
    projections: np.ndarray
    pixel_moments: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


def image_stats(extractor: Extractor, images: torch.Tensor, projection_cap: int | None = None) -> ImageStats:
    """Stats of uint8 N×C×H×W images; projections of at most `projection_cap` of them (a fixed random subset;
    0: none)."""
    features, probs = extractor.run(images)
    subset = images
    if projection_cap is not None and len(images) > projection_cap:
        keep = np.sort(np.random.default_rng(SWD_SEED).choice(len(images), projection_cap, replace=False))
        subset = images[torch.from_numpy(keep)]
    directions = projection_directions(int(np.prod(images.shape[1:])), SWD_PROJECTIONS)
    return ImageStats(features, probs, pixel_histogram(images), project(subset, directions), pixel_moments(images))


def stream_stats(extractor: Extractor, chunks, projections: bool) -> ImageStats:
    """Stats of uint8 N×C×H×W images handed over in chunks (an iterable), holding only the per-image results, never
    the images; with `projections` every image's projections, else none."""
    feats, probs, projected, hist, moments, directions = [], [], [], np.zeros(256), 0, None
    for chunk in chunks:
        f, p = extractor.run(chunk)
        feats.append(f)
        probs.append(p)
        hist += pixel_histogram(chunk)
        moments = moments + pixel_moments(chunk)
        if projections:
            if directions is None:
                directions = projection_directions(int(np.prod(chunk.shape[1:])), SWD_PROJECTIONS)
            projected.append(project(chunk, directions))
    if not feats:
        raise ValueError("no images to score")
    proj = np.concatenate(projected, axis=1) if projected else np.zeros((SWD_PROJECTIONS, 0), np.float32)
    return ImageStats(np.concatenate(feats), np.concatenate(probs), hist, proj, moments)


def _paths(extractor: Extractor, split: str):
    base = extractors_dir() / f"{extractor.id}.{split}"
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def _expected_meta(extractor: Extractor, reference: Reference, split: str) -> dict:
    return {"stats_version": STATS_VERSION, "extractor": extractor.id, "split": split,
            "source": reference.describe_split(split), "swd_projections": SWD_PROJECTIONS, "swd_seed": SWD_SEED,
            "projection_cap": REAL_PROJECTION_CAP, "content": reference.content_fingerprint()}


def real_stats(extractor: Extractor, reference: Reference, split: str, reporter: Reporter | None = None) -> ImageStats:
    """The real split's stats, from the cache or computed now (and cached)."""
    reporter = reporter or Reporter()
    npz_path, json_path = _paths(extractor, split)
    expected = _expected_meta(extractor, reference, split)
    cached = _load_cached(npz_path, json_path, expected)
    if cached is not None:
        return cached
    data = reference.load(split, reporter)
    reporter.message(f"computing real-data statistics of {reference.describe_split(split)} ({len(data):,} images)")
    stats = image_stats(extractor, data.images, REAL_PROJECTION_CAP)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: getattr(stats, k) for k in ARRAYS})
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(npz_path, buf.getvalue())
    atomic_write_json(json_path, {**expected, "n": len(data), "gentool_version": gentool.__version__})
    return stats


def _load_cached(npz_path, json_path, expected: dict) -> ImageStats | None:
    if not (npz_path.exists() and json_path.exists()):
        return None
    try:
        meta = read_json(json_path)
        if any(meta.get(k) != v for k, v in expected.items()):
            return None
        with np.load(npz_path, allow_pickle=False) as z:
            return ImageStats(*(z[k] for k in ARRAYS))
    except (OSError, ValueError, KeyError, RecursionError) as exc:
        warnings.warn(f"cached statistics {npz_path} are unreadable ({exc}); computing them again")
        return None
