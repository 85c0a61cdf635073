"""Training from Python with the hooks `gentool train` uses, and your own:

    from gentool.api import TrainHook, TrainOptions, train

    class PrintLoss(TrainHook):
        def on_epoch_end(self, session, record, reporter):
            print(record["epoch"], record.get("loss"))

    train(TrainOptions(model="vae", data="mnist", epochs=2), hooks=[PrintLoss()])

`gentool.train.train(opts, reporter, hooks)` is the loop itself: it runs exactly the hooks it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from gentool.figures import FigureHook
from gentool.heldout import HeldoutHook
from gentool.hooks import TrainHook, plugin_hooks
from gentool.loggers.tensorboard import TensorBoardHook
from gentool.metrics.watch import TrainingWatch
from gentool.progress import Reporter
from gentool.train import train as train_loop
from gentool.train_options import TrainOptions

__all__ = ["TrainHook", "TrainOptions", "default_hooks", "train"]


def default_hooks() -> list[TrainHook]:
    """The hooks of `gentool train` and of each sweep trial, in order: held-out losses (--heldout), the training watch (divergence, --eval-every,
    --stop-on-divergence), figures (loss.png, progress.gif), TensorBoard (with --tensorboard), then each plugin's
    (entry-point group `gentool.hooks`), fresh for each run. Later hooks see what earlier ones add to a record (the
    watch's FID)."""
    # Each hook reads the run's final options in its setup (a resume fills in the recorded ones): the list is the
    # same for every run.
    # Held-out losses first: the watch judges them and the figures draw them.
    return [HeldoutHook(), TrainingWatch(), FigureHook(), TensorBoardHook(), *plugin_hooks()]


def train(opts: TrainOptions, reporter: Reporter | None = None, hooks: Sequence[TrainHook] = ()) -> dict:
    """Train (or resume) a run as `gentool train` does: `default_hooks()` followed by `hooks`; returns what
    `train --json` prints."""
    return train_loop(opts, reporter, [*default_hooks(), *hooks])
