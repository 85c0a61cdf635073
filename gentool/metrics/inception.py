"""Standard Inception-v3 metrics (`evaluate --extractor inception-v3 --extractor-weights FILE`): FID, KID and IS
computed as torch-fidelity computes them, from the FID Inception weights file the user has.

torch-fidelity (the optional extra `gentool[inception]`) provides the network, its TensorFlow-1-compatible bilinear
resize to 299×299 and the metric functions, so numbers match torch-fidelity's (and, with its released weights,
published ones). Two things are done here instead:

- the weights are never downloaded: the file is named by the user;
- torch-fidelity reads a weights file with `torch.load(weights_only=False)`, which unpickles it (a pickle can run
  any code). gentool reads the file with `torch.load(weights_only=True)` (tensors only), checks it, and hands
  torch-fidelity an in-memory copy it wrote itself; torch-fidelity's strict `load_state_dict` then checks every
  key and shape.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

import gentool
from gentool.errors import GentoolError, UsageError
from gentool import fileio
from gentool.cache import prepare_entry
from gentool.fileio import sha256
from gentool.metrics.extractor import extractors_dir
from gentool.metrics.reference import Reference
from gentool.metrics.stats import read_cache_entry, write_cache_entry
from gentool.progress import Reporter

NAME = "inception-v3"
ARG = "--extractor-weights"
# torch-fidelity's released file is weights-inception-2015-12-05-6726825d.pth; like torch.hub's names, the suffix
# is the start of the file's sha256.
RELEASED = "weights-inception-2015-12-05-6726825d.pth"
RELEASED_SHA256_PREFIX = "6726825d"
MAX_BYTES = 256 << 20  # the released file has 95.6 MB
FEATURES = ("2048", "logits_unbiased")  # pool3 features (FID, KID) and the logits IS uses
BATCH = 32
KID_SUBSETS, KID_SUBSET_SIZE, IS_SPLITS = 100, 1000, 10  # torch-fidelity's defaults
CACHE_VERSION = 1


def _fidelity():
    try:
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise GentoolError("--extractor inception-v3: needs torch-fidelity; install it with "
                           "pip install 'gentool[inception]'") from None
    return torch_fidelity, FeatureExtractorInceptionV3


def read_weights(path: str) -> tuple[dict, str]:
    """The state dict in a weights file (tensors only, nothing unpickled beyond them) and the file's sha256."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{ARG}: {path} {'is not a file' if p.exists() else 'does not exist'}; expected the FID "
                         f"Inception-v3 weights ({RELEASED})")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise UsageError(f"{ARG}: {path} has {size:,} bytes; the FID Inception-v3 weights have about 96 MB")
    try:
        with fileio.open_regular(p) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds for a file that is not a tensor-only checkpoint
        head = fileio.read_regular(p, 4)[:4]
        why = ("it holds Python objects other than tensors, which gentool does not unpickle"
               if head.startswith((b"PK\x03\x04", b"\x80")) else "not a file torch.save wrote")
        raise UsageError(f"{ARG}: {path} is not a PyTorch weights file holding tensors only ({why})") from None
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and torch.is_tensor(v)
                                                      for k, v in state.items())):
        raise UsageError(f"{ARG}: {path} holds no state dict (names → tensors); expected the FID Inception-v3 weights")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UsageError(f"{ARG}: {path}: tensor {bad} holds NaN or infinite values")
    return state, sha256(p)


def _mismatch(exc: RuntimeError) -> str:
    """The first problem in load_state_dict's report (missing key, unexpected key or size mismatch)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines[1:]), lines[0] if lines else "")
    return detail[:200]


class Inception:
    """torch-fidelity's Inception-v3 with the user's weights: uint8 images in, pool3 features and logits out."""

    def __init__(self, weights: str, device: torch.device):
        fidelity, network = _fidelity()
        state, self.sha256 = read_weights(weights)
        buffer = io.BytesIO()
        torch.save(state, buffer)  # written here from checked tensors: safe for torch-fidelity to read back
        buffer.seek(0)
        del state
        try:
            self.net = network(NAME, list(FEATURES), feature_extractor_weights_path=buffer).to(device)
        except RuntimeError as exc:
            raise UsageError(f"{ARG}: {weights} is not the FID Inception-v3 weights torch-fidelity uses "
                             f"({_mismatch(exc)})") from None
        self.weights, self.device = str(Path(weights).expanduser().resolve()), device
        self.version = fidelity.__version__

    @property
    def released(self) -> bool:
        return self.sha256.startswith(RELEASED_SHA256_PREFIX)

    def describe(self) -> dict:
        return {"id": NAME, "weights": self.weights, "weights_sha256": self.sha256,
                "released_weights": self.released, "feature_dim": 2048,
                "input": "299x299, torch-fidelity's TensorFlow-1-compatible bilinear resize; grey images as RGB",
                "torch_fidelity_version": self.version}

    @torch.no_grad()
    def run(self, chunks, reporter: Reporter | None = None, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pool features (N×2048) and logits (N×1008) of uint8 N×C×H×W images given in chunks."""
        feats, logits, done = [], [], 0
        lines = reporter.pace() if reporter is not None else None
        for chunk in chunks:
            for batch in chunk.split(BATCH):
                if batch.shape[1] == 1:
                    batch = batch.expand(-1, 3, -1, -1)
                f, p = self.net(batch.contiguous().to(self.device))
                feats.append(f.cpu().numpy())
                logits.append(p.cpu().numpy())
                done += len(batch)
                if lines and total and done < total and lines.due():
                    reporter.message(f"inception-v3 features: {done:,} of {total:,} images")
        if not feats:
            raise ValueError("no images to score")
        return np.concatenate(feats), np.concatenate(logits)


def _cache_paths(net: Inception, reference: Reference, split: str) -> tuple[Path, Path]:
    base = f"{NAME}-{net.sha256[:16]}-{reference.name}-d{reference.fingerprint()}.{split}"
    return extractors_dir() / f"{base}.npz", extractors_dir() / f"{base}.json"


def real_features(net: Inception, reference: Reference, split: str, reporter: Reporter) -> np.ndarray:
    """The real split's pool features, from the cache (per weights file, data and split) or computed now."""
    npz_path, json_path = _cache_paths(net, reference, split)
    expected = {"cache_version": CACHE_VERSION, "weights_sha256": net.sha256, "split": split,
                "source": reference.describe_split(split), "content": reference.content_fingerprint()}
    cached = read_cache_entry(npz_path, json_path, expected, lambda n: {"features": (n, 2048)})
    if cached is not None:
        return cached["features"]
    prepare_entry(npz_path, json_path)  # a link there, or no room for the files, is refused now, not after the work
    data = reference.load(split, reporter)
    reporter.message(f"computing inception-v3 features of {reference.describe_split(split)} ({len(data):,} images)")
    features, _ = net.run([data.images], reporter, len(data))
    write_cache_entry(npz_path, json_path, {"features": features}, {**expected, "n": len(data)})
    return features


class InceptionEvaluator:
    """Scores sets of images against a real split on Inception-v3 features, as torch-fidelity does."""

    def __init__(self, reference: Reference, split: str, device: torch.device, weights: str,
                 reporter: Reporter | None = None):
        self.reference, self.split, self.reporter = reference, split, reporter or Reporter()
        self.net = Inception(weights, device)
        self.real = real_features(self.net, reference, split, self.reporter)

    def provenance(self) -> dict:
        return {"data": self.reference.name, "split": self.split,
                "real_source": self.reference.describe_split(self.split), "n_real": len(self.real),
                "gentool_version": gentool.__version__, "extractor": self.net.describe()}

    def score(self, images, wanted, seed: int, labels: torch.Tensor | None = None) -> tuple[dict, list[str]]:
        """FID, KID and IS (those in `wanted`) of uint8 N×C×H×W images (a tensor or an iterable of chunks)."""
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
        from torch_fidelity.metric_isc import isc_features_to_metric
        from torch_fidelity.metric_kid import kid_features_to_metric

        chunks = [images] if torch.is_tensor(images) else images
        feats, logits = self.net.run(chunks)
        metrics, notes = {}, []
        n = len(feats)
        if "fid" in wanted:
            real, fake = (fid_features_to_statistics(torch.from_numpy(f).double()) for f in (self.real, feats))
            metrics["fid"] = fid_statistics_to_metric(real, fake, verbose=False)["frechet_inception_distance"]
            if n <= 2048:
                notes.append(f"fid: N={n} is not above the feature dimension 2048; published FIDs use 50,000 samples "
                             f"and are not comparable with this one")
        if "kid" in wanted:
            size = min(KID_SUBSET_SIZE, n, len(self.real))
            kid = kid_features_to_metric(torch.from_numpy(self.real), torch.from_numpy(feats), kid_subsets=KID_SUBSETS,
                                         kid_subset_size=size, verbose=False, rng_seed=seed)
            metrics.update(kid_mean=kid["kernel_inception_distance_mean"],
                           kid_std=kid["kernel_inception_distance_std"], kid_subset_size=size)
        if "is" in wanted:
            isc = isc_features_to_metric(torch.from_numpy(logits), splits=IS_SPLITS, rng_seed=seed)
            metrics.update(is_mean=isc["inception_score_mean"], is_std=isc["inception_score_std"])
        for key, value in list(metrics.items()):
            if not np.isfinite(value):  # e.g. probabilities that underflow to 0 in IS: say so, write no NaN
                metrics[key] = None
                notes.append(f"{key}: not a finite number with these weights; left out (null)")
        if not self.net.released:
            notes.append(f"{ARG}: {self.net.weights} is not torch-fidelity's released {RELEASED} (sha256 "
                         f"{self.net.sha256[:16]}...); these numbers are not comparable with published ones")
        return metrics, notes
