"""Held-out losses: after each epoch, a family with likelihood terms (VAE, CVAE) computes the same loss terms as
its training steps report on a fixed subset of the data's held-out split, in eval mode with seeded noise. They join
the epoch's record as `heldout_<term>` (drawn beside the training curve), which is how the study read overfitting
from its complexity × latent curves (its Figure 11)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from gentool.data import ImageData, load_dataset
from gentool.errors import GentoolError
from gentool.guards import OutputWatch
from gentool.metrics.likelihood import fixed_subset, loss_terms
from gentool.progress import Reporter
from gentool.hooks import RunView, TrainHook


PREFIX = "heldout_"
MAX_AUTO = 2000  # held-out images by default ...
AUTO_SHARE = 10  # ... and at most one per this many training images: a forward pass over N images then costs about
# N / (3 × training images) of an epoch (a step is a forward and a backward pass), ≤ 1 % on MNIST, ≤ 3.5 % on less data


def heldout_size(requested: int | None, n_train: int, n_test: int) -> int:
    """Images scored: `requested` (None: min(MAX_AUTO, a tenth of the training images)), at most the split's."""
    if requested is None:
        requested = min(MAX_AUTO, max(1, math.ceil(n_train / AUTO_SHARE)))
    return min(requested, n_test)


def heldout_split(data: str, data_dir: str | None, image_size: int | None) -> tuple[ImageData, str]:
    """The held-out split of the training data and what it is: a data set's test split, the test/ folder beside
    (or inside) an image folder, or the every-10th image of each class that training on a folder without one
    leaves out (`training_folder`). A test/ folder given as the training data has none: GentoolError."""
    from gentool.metrics.reference import resolve_reference, training_folder

    ref = resolve_reference(data, data_dir)
    if ref.train_folder is None:
        return load_dataset(ref.spec, data_dir, train=False), f"{ref.name} test split"
    folder, part = training_folder(data)
    if part == "train":
        held = load_dataset(folder, image_size=image_size, part="test")
        return held, ref.describe_split("test")
    if Path(folder).expanduser().resolve() != ref.train_folder:
        raise GentoolError(f"{data} has no held-out split beside its training images (a sibling test/ folder)")
    return load_dataset(str(ref.test_folder), image_size=image_size), str(ref.test_folder)


class HeldoutHook(TrainHook):
    """Adds `heldout_<term>` to each finished epoch's record (and `heldout_seconds`, its cost), and how they were
    made to metrics.json under "heldout". Loads the split once, on the first epoch it is needed."""

    def __init__(self):
        self.requested: int | None = None
        self.subset: tuple[torch.Tensor, torch.Tensor] | None = None
        self.off = False

    def setup(self, opts) -> None:
        self.requested, self.off = opts.heldout, opts.heldout == 0

    def on_epoch_end(self, session: RunView, record: dict, reporter: Reporter) -> None:
        if self.off or not session.model.likelihood_terms:  # declared by the family (VAE, CVAE)
            return
        if self.subset is None and not self._prepare(session, reporter):
            return
        start = time.perf_counter()
        with OutputWatch(session.model) as watch:
            try:
                with session.model.amp.autocast():
                    terms = loss_terms(session.model, *self.subset, session.opts.seed)
            except RuntimeError:
                # binary_cross_entropy refuses NaN input instead of returning NaN: a network gone non-finite (a
                # run kept going by --skip-nonfinite) has no held-out losses that epoch (JSON has no NaN).
                if watch.culprit() is None:
                    raise
                return
        record.update({PREFIX + k: v for k, v in terms.items()})
        record[PREFIX + "seconds"] = round(time.perf_counter() - start, 3)

    def _prepare(self, session: RunView, reporter: Reporter) -> bool:
        opts = session.opts
        try:
            split, where = heldout_split(opts.data, opts.data_dir, opts.image_size)
        except GentoolError as exc:
            reporter.message(f"note: no held-out losses ({exc}); --heldout 0 turns this note off")
            self.off = True
            return False
        n = heldout_size(self.requested, len(session.data), len(split))
        if n < 1:
            self.off = True
            return False
        self.subset = fixed_subset(split, n, opts.seed)
        made = {"split": where, "n": n, "of": len(split), "seed": opts.seed, "weights": "raw", "mode": "eval",
                "terms": "the loss terms of a training step, per image, noise seeded with the seed"}
        previous = session.history.get("heldout") or {}
        same = all(previous.get(k) == made[k] for k in ("split", "n", "seed"))
        made["since_epoch"] = previous.get("since_epoch", session.epoch) if same else session.epoch
        session.history["heldout"] = made
        return True
