"""What the metrics need from a set of images — extractor features and class probabilities, the pixel histogram, the
per-position pixel moments and the random projections — and the cache of these for real data (one `.npz` plus a
JSON sidecar per extractor and split; read with allow_pickle=False)."""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.lib.format as npy
import torch

import gentool
from gentool import fileio, schema
from gentool.cache import check_room, prepare_entry, set_aside
from gentool.errors import dims
from gentool.digests import arrays_digest
from gentool.fileio import atomic_write_bytes, atomic_write_json
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
    cached = read_cache_entry(npz_path, json_path, expected, lambda n: _shapes(extractor, n))
    if cached is not None:
        return ImageStats(**cached)
    prepare_entry(npz_path, json_path)  # a link there, or no room for the files, is refused now, not after the work
    data = reference.load(split, reporter)
    check_room(npz_path.parent, npz_path.name, 8 * sum(math.prod(s) for s in _shapes(extractor, len(data)).values()))
    reporter.message(f"computing real-data statistics of {reference.describe_split(split)} ({len(data):,} images)")
    stats = image_stats(extractor, data.images, REAL_PROJECTION_CAP)
    write_cache_entry(npz_path, json_path, {k: getattr(stats, k) for k in ARRAYS}, {**expected, "n": len(data)})
    return stats


def write_cache_entry(npz_path: Path, json_path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """An .npz of `arrays` and its JSON sidecar (`meta`, the gentool version and the arrays' SHA-256, which
    `read_cache_entry` checks: values changed with the files' shapes kept were scored without a word)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(npz_path, buf.getvalue())
    atomic_write_json(json_path, {**meta, "gentool_version": gentool.__version__, "sha256": arrays_digest(arrays)})


CACHE_META = schema.Obj({"n": schema.Int(1, 10**8)})


def read_cache_entry(npz_path: Path, json_path: Path, expected: dict, shapes) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry (an .npz and its JSON sidecar) when both files are there and describe
    `expected`; `shapes(n)` gives each array's shape for the entry's `n` images. A damaged entry (unreadable, other
    shapes, values not finite, or not those written: their SHA-256) is moved aside with a warning and None returned,
    so that it is computed again; an entry of another version is simply replaced."""
    if not (os.path.lexists(npz_path) and os.path.lexists(json_path)):
        return None
    try:
        meta = schema.read(json_path, CACHE_META, follow=False)  # a link in the cache is damage, named as such
    except (OSError, ValueError) as exc:
        set_aside(json_path, fileio.cause(exc))
        return None
    if any(meta.get(k) != v for k, v in expected.items()):
        return None
    try:
        with fileio.open_regular(npz_path, follow=False) as f, zipfile.ZipFile(f) as archive:
            arrays = {k: cached_array(archive, k, shape) for k, shape in shapes(meta["n"]).items()}
        check_values(arrays, meta["n"])
        if not isinstance(meta.get("sha256"), str) or arrays_digest(arrays) != meta["sha256"]:
            raise ValueError("its values are not those written (their SHA-256 is not the one its .json holds)")
        return arrays
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        set_aside(npz_path, fileio.cause(exc))
        return None


MAX_FEATURE = 1e4  # the extractors' features are in the tens at most; 1e4 leaves room, 1e15 is damage
# From this many images, identical feature (or probability) rows for all of them are damage: a folder of a few copies
# of one picture is a user's own odd data set, and must not be set aside and recomputed at every evaluate.
SAME_ROWS_FROM = 50


def check_values(arrays: dict[str, np.ndarray], n: int) -> None:
    """Refuse (ValueError naming the array) values that images of `n` could not have produced: finite but wrong
    numbers (negative counts, probabilities off [0, 1]) would otherwise score every later evaluate wrongly, without
    a word. Features, both extractors' (gentool's and Inception's pool), follow a ReLU: none is negative."""
    problems = []
    if "features" in arrays and ((arrays["features"] < 0).any() or (arrays["features"] > MAX_FEATURE).any()):
        problems.append(f"features holds values outside 0 … {MAX_FEATURE:g}, where an extractor's features (after a "
                        f"ReLU, of normalised images) lie")
    for name in ("features", "probs"):  # one row copied to every image (h26u): no set of 50 images gives that
        if name in arrays and n >= SAME_ROWS_FROM and len(arrays[name]) and not np.ptp(arrays[name], axis=0).any():
            problems.append(f"{name} holds the same row for every one of its {n:,} images")
    if "probs" in arrays:
        probs = arrays["probs"]
        if (probs < 0).any() or (probs > 1 + 1e-3).any() or not np.allclose(probs.sum(1), 1, atol=1e-3):
            problems.append("probs holds values outside [0, 1] or rows that do not sum to 1")
    if "pixel_moments" in arrays:
        sums, squares = arrays["pixel_moments"]
        if (sums < 0).any() or (sums > 255 * n).any() or (squares * n < sums * sums * (1 - 1e-6) - 1e-6).any():
            problems.append("pixel_moments holds sums no set of images in 0–255 has")
        positions = len(sums)
        if "pixel_hist" in arrays:
            hist = arrays["pixel_hist"]
            if (hist < 0).any() or (hist != np.round(hist)).any() or hist.sum() != n * positions:
                problems.append(f"pixel_hist is not counts of {n:,} images' {positions:,} values each")
            elif not np.isclose((hist * np.arange(256)).sum(), sums.sum(), rtol=1e-4, atol=1.0):
                problems.append("pixel_hist and pixel_moments disagree on the images' mean value")
        if "projections" in arrays and (np.abs(arrays["projections"]) > np.sqrt(positions) * (1 + 1e-4)).any():
            problems.append("projections holds values beyond what unit directions over [0, 1] pixels give")
    if problems:
        raise ValueError("; ".join(problems))


def _shapes(extractor: Extractor, n: int) -> dict[str, tuple[int, ...]]:
    """The shape of each cached array for `n` real images scored by `extractor`."""
    g = extractor.meta["geometry"]
    return {"features": (n, extractor.meta["recipe"]["feature_dim"]), "probs": (n, extractor.meta["num_classes"]),
            "pixel_hist": (256,), "projections": (SWD_PROJECTIONS, min(n, REAL_PROJECTION_CAP)),
            "pixel_moments": (2, g["channels"] * g["height"] * g["width"])}


def cached_array(archive: zipfile.ZipFile, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float array `key` of an .npz, its header checked against `shape` before its data are read (never
    unpickled), every value finite."""
    with archive.open(f"{key}.npy") as member:
        version = npy.read_magic(member)
        stored, fortran, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(member)
        if tuple(stored) != shape or fortran or dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise ValueError(f"{key} is {dtype} {dims(stored)}; expected float {dims(shape)}")
        data = bytearray(int(np.prod(shape)) * dtype.itemsize)  # writable, like np.load's arrays
        got = member.readinto(data)
    if got != len(data):
        raise ValueError(f"{key} ends early (the file is truncated)")
    array = np.frombuffer(data, dtype).reshape(shape)
    if not np.isfinite(array).all():
        raise ValueError(f"{key} holds NaN or infinite values")
    return array
