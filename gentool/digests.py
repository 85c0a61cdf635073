"""A SHA-256 of tensors' bytes, written in the header of a file gentool reads back from its own caches (couplings
parts, extractors): damage to the values, or values swapped for another file's, with the header kept, is then found
where shapes and ranges cannot tell (hashlib: a few milliseconds for a few MB; 0.1 s for 50,000 CIFAR-10 images)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """The SHA-256 of each tensor's name and bytes, in name order (dtype-blind: the header has the dtypes)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + b"\0")
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """The SHA-256 of numpy arrays' names and bytes, in name order: `tensors_digest`'s, for the cache's .npz and
    .npy entries (real-data statistics, decoded image folders)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + b"\0")
        digest.update(memoryview(np.ascontiguousarray(arrays[name])).cast("B"))
    return digest.hexdigest()
