"""A likelihood family's loss terms (VAE, CVAE: reconstruction, KL, their sum) on real images that are not trained
on: `gentool evaluate --metrics vae` and the held-out losses recorded after each epoch both use them."""

from __future__ import annotations

import numpy as np
import torch

from gentool.data import ImageData
from gentool.metrics.extractor import seeded_rng

BATCH = 500


@torch.no_grad()
def loss_terms(model, images: torch.Tensor, labels: torch.Tensor, seed: int, batch_size: int = BATCH) -> dict:
    """The means over `images` (uint8, on any device) of every term `model.losses` reports, in eval mode with its
    noise drawn from `seed`; the caller's RNG streams and the model's mode are left as they were."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        with seeded_rng(seed, model.device):
            for chunk, y in zip(images.split(batch_size), labels.split(batch_size)):
                out = model.losses(model.normalize(chunk.to(model.device)), y.to(model.device))
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(chunk)
    finally:
        model.train(was_training)
    return {key: total / max(len(images), 1) for key, total in sums.items()}


def fixed_subset(data: ImageData, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images of `data` (and their labels) picked with `seed`, in their order in the split."""
    pick = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(data), n, replace=False)))
    return data.images[pick], data.labels[pick]
