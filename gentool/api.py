"""gentool as a library: train, sample and evaluate from Python, with the command line's options as keyword
arguments and errors raised as exceptions (never an exit code):

    from gentool import api

    run = api.train("flow", data="mnist", epochs=1, out="runs/f")
    images = api.sample(run.last, n=16)                    # uint8 numpy array, N×H×W×C
    scores = api.evaluate(run.last, n=1000, metrics="fid")  # what `gentool evaluate --json` prints

The keyword arguments are the fields of each command's options dataclass (TrainOptions, SampleOptions, EvalOptions):
the command line's option names with _ for -, e.g. batch_size=64, params={"clip": 0.02}, sampler={"steps": 8}.
Errors are gentool.errors types: a UsageError for bad input (its message names the command-line option), and a
ConfigError when a model refuses one of its settings (its message and `field` name the config field or sampler
setting, e.g. "lr: got -1.0; expected a number above 0 up to 1,000,000"). Nothing is printed unless a `reporter` is given.

Training hooks join the command line's own:

    class PrintLoss(api.TrainHook):
        def on_epoch_end(self, session, record, reporter):
            print(record["epoch"], record.get("loss"))

    api.train("vae", data="mnist", epochs=2, hooks=[PrintLoss()])

`gentool.train.train(opts, reporter, hooks)` is the loop itself: it runs exactly the hooks it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from gentool.checks import check_options
from gentool.errors import OPTION, ConfigError, UsageError
from gentool.figures import FigureHook
from gentool.heldout import HeldoutHook
from gentool.hooks import TrainHook, plugin_hooks
from gentool.loggers.tensorboard import TensorBoardHook
from gentool.metrics.watch import TrainingWatch
from gentool.progress import Reporter
from gentool.train import train as train_loop
from gentool.train_options import TrainOptions

__all__ = ["Run", "TrainHook", "TrainOptions", "default_hooks", "evaluate", "sample", "train"]


def default_hooks() -> list[TrainHook]:
    """The hooks of `gentool train` and of each sweep trial, in order: held-out losses (--heldout), the training watch (divergence, --eval-every,
    --stop-on-divergence), figures (loss.png, progress.gif), TensorBoard (with --tensorboard), then each plugin's
    (entry-point group `gentool.hooks`), fresh for each run. Later hooks see what earlier ones add to a record (the
    watch's FID)."""
    # Each hook reads the run's final options in its setup (a resume fills in the recorded ones): the list is the
    # same for every run.
    # Held-out losses first: the watch judges them and the figures draw them.
    return [HeldoutHook(), TrainingWatch(), FigureHook(), TensorBoardHook(), *plugin_hooks()]


class Run(dict):
    """What `train` returns: the run's summary (the dict `gentool train --json` prints), with its paths as
    attributes."""

    @property
    def run_dir(self) -> Path:
        return Path(self["run_dir"])

    @property
    def last(self) -> Path:
        """The run's last checkpoint (what `sample`, `evaluate` and a resume take)."""
        return Path(self["checkpoints"]["last"])

    @property
    def best(self) -> Path | None:
        """The checkpoint with the best FID so far (--eval-every), if any."""
        best = self["checkpoints"].get("best")
        return Path(best) if best else None


def _options(cls, command: str, values: dict, allowed: list[str] | None = None, **fixed):
    """`cls(**fixed, **values)`, refusing a keyword that is not one of its fields (or not in `allowed`) with a
    UsageError that lists the accepted ones."""
    names = allowed if allowed is not None else [f.name for f in dataclasses.fields(cls) if f.name not in fixed]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise UsageError(f"{unknown[0]}: not an option of gentool.api.{command}; expected one of {', '.join(names)}")
    opts = cls(**fixed, **values)
    try:  # each value's declared check, the error naming the keyword (the command line names its --option)
        check_options(opts, lambda f: f.name)
    except UsageError as exc:
        if getattr(exc, "arg", None) is None:
            raise
        raise ConfigError(exc.arg, f"got {exc.value!r}; expected {exc.accepted}", section=OPTION, value=exc.value,
                          accepted=exc.accepted) from None
    return opts


def train(model: str | TrainOptions | None = None, reporter: Reporter | None = None,
          hooks: Sequence[TrainHook] = (), **values) -> Run:
    """Train (or, with resume=RUN, continue) a run as `gentool train MODEL ...` does, with `default_hooks()`
    followed by `hooks`, reporting progress to `reporter` (default: nothing); returns its summary. `model` may also
    be a whole TrainOptions (what the command line and sweeps pass)."""
    if isinstance(model, TrainOptions):
        if values:
            raise UsageError(f"{next(iter(values))}: give options either in the TrainOptions or as keywords")
        opts = model
    else:
        opts = _options(TrainOptions, "train", values, model=model)
    return Run(train_loop(opts, reporter, [*default_hooks(), *hooks]))


def sample(checkpoint: str | Path, n: int, **values):
    """`n` images drawn from a checkpoint, exactly those `gentool sample CKPT --n N` writes to an .npz for the
    same options: a uint8 numpy array N×H×W×C. Keywords: seed, device, weights, precision, the sampler's settings
    (steps, solver, guidance, sampler={NAME: VALUE}) and label (a class, as --class)."""
    from gentool.sample_options import DrawOptions, SampleOptions
    from gentool.sampling import sample_array

    allowed = [f.name for f in dataclasses.fields(DrawOptions) if f.name != "overwrite"] + ["label"]
    if values.get("label") is not None:
        values["label"] = str(values["label"])  # a class index or name, as --class takes it
    return sample_array(_options(SampleOptions, "sample", values, allowed, checkpoint=str(checkpoint), n=n))


def evaluate(source: str | Path, reporter: Reporter | None = None, **values) -> dict:
    """Score a checkpoint, an .npz of images or a folder of PNGs against real data, as `gentool evaluate SOURCE
    --json` does; returns that result (metrics, and how they were made)."""
    from gentool.evaluate_options import EvalOptions
    from gentool.metrics.evaluate import evaluate as score

    return score(_options(EvalOptions, "evaluate", values, source=str(source)), reporter)
