"""The extractor of an unlabelled image folder: the same small network, trained on the folder's training part to
predict which of four rotations (0, 90, 180, 270 degrees) an image was turned by — the rotation-prediction pretext
task of Gidaris, Singh and Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations" (ICLR
2018). Its penultimate layer is the embedding FID, KID and precision/recall compare.

Why this task: FID needs an embedding in which natural images of the data's kind sit apart from broken ones, and
nothing can be downloaded (no Inception or CLIP weights); a folder without class subfolders gives no labels to
train gentool's classifier on. Rotation prediction needs none, reuses the classifier's network and training loop
with four pseudo-classes, and trains in minutes on a CPU; to tell an upright image from a turned one the network
must learn the objects' shapes and the scene's layout (sky above, ground below), which is what a good sample must
get right. Contrastive methods (SimCLR and kin) learn better features but need large batches and long training.

Its four outputs are rotations, not classes: the class metrics (inception-style score, mode coverage, class KL,
class agreement) are never computed from them. Real statistics are of the upright images only; rotated copies are
made per batch while training, so memory stays that of the folder's images.
"""

from __future__ import annotations

import torch

CLASSES, ROTATION = "classes", "rotation"  # Recipe.task: what the extractor is trained to predict
TASKS = (CLASSES, ROTATION)
KIND = {CLASSES: "classifier", ROTATION: "rotation-pretext"}  # the metric JSON's extractor "kind"
TURNS = 4  # 0, 90, 180 and 270 degrees
DESCRIPTION = ("trained to predict the rotation (0/90/180/270 degrees) of the folder's unlabelled training images "
               "(Gidaris et al. 2018); its penultimate features are the embedding, upright images give the real "
               "statistics")
CLASS_METRICS = ("is", "modes")  # evaluate's metrics that read an extractor's class probabilities
NO_CLASSES = ("the reference folder has no class subfolders, so its extractor predicts rotations, not classes")


def rotate(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each N×C×H×W image (square) turned counter-clockwise by 90° × its `turns` (0-3)."""
    out = images.clone()
    for k in range(1, TURNS):
        pick = turns == k
        if bool(pick.any()):
            out[pick] = torch.rot90(images[pick], k, dims=(2, 3))
    return out


def rotation_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the pretext task: each image turned by a random multiple of 90° (from torch's global RNG, seeded
    by the recipe), and how many turns as its label."""
    turns = torch.randint(0, TURNS, (len(images),)).to(images.device)
    return rotate(images, turns), turns

