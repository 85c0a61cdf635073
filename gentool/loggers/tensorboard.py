"""TensorBoard logging (`train --tensorboard [DIR]`, `sweep --tensorboard [DIR]`), a hook like any other.

What a run records, as TensorBoard shows it, all against the global optimizer step: each epoch record's numbers
(`epoch/<name>`, including the epoch number, its seconds and images per second), the evaluation metrics of
--eval-every (`eval/fid`, `eval/modes`, `eval/class_kl`), the reported losses averaged over a steady interval of
steps (`step/<name>`, about POINTS_PER_EPOCH points per epoch, at least every MAX_STEP_INTERVAL steps), the
fixed-noise sample grid of each epoch (image `samples`), and the model's config with the data options as
hyperparameters (the HPARAMS tab compares a sweep's trials).

The events go to RUN_DIR/tensorboard (`--tensorboard` alone) or DIR/<run folder name> (`--tensorboard DIR`), so
that one `tensorboard --logdir` shows several runs side by side. A resumed run appends to the same folder;
TensorBoard drops what an earlier process logged after the checkpoint the run resumed from.

The writer is torch's SummaryWriter, which needs the `tensorboard` package (the `gentool[tensorboard]` extra); it
is imported only when a run asks for it, so gentool works the same without it.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from gentool import fileio, links, rundir
from gentool.errors import GentoolError, UsageError
from gentool.fileio import read_json
from gentool.hooks import EVALUATION_KEYS, TrainHook

AUTO = rundir.TENSORBOARD_AUTO  # --tensorboard without DIR: the run's own folder
DIR_NAME = rundir.TENSORBOARD
POINTS_PER_EPOCH = 10
MAX_STEP_INTERVAL = 50  # Lightning's default log_every_n_steps
EXTRA_HINT = "pip install 'gentool[tensorboard]' (or pip install tensorboard)"


def log_dir(target: str, run_dir: Path) -> Path:
    """Where a run's events go: RUN_DIR/tensorboard for "auto", else DIR/<run folder name>."""
    return Path(run_dir) / DIR_NAME if target == AUTO else Path(target).expanduser() / Path(run_dir).name


def check_target(target: str, flag: str = "--tensorboard") -> None:
    """Refuse a DIR that cannot hold event folders, and a missing tensorboard package, before any work starts."""
    if target != AUTO:
        path = Path(target).expanduser()
        if path.exists() and not path.is_dir():
            raise UsageError(f"{flag}: {target} exists and is not a directory; expected a folder for the event files "
                             f"(or {flag} alone for RUN_DIR/{DIR_NAME})")
    try:
        import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
    except ImportError:
        raise GentoolError(f"{flag}: the tensorboard package is not installed; {EXTRA_HINT}") from None


def hparams_of(run_dir: Path) -> dict:
    """The run's hyperparameters from its config.json: the model's config fields, the model and the data options
    (TensorBoard takes numbers, strings and booleans; anything else is written as text)."""
    config = read_json(Path(run_dir) / rundir.CONFIG)
    options = config.get("options") or {}
    values = {"model": config.get("model"), "data": options.get("data"), "limit": options.get("limit"),
              "seed": options.get("seed"), "ema": options.get("ema"), **(config.get("config") or {})}
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items() if v is not None}


class TensorBoardHook(TrainHook):
    """Writes the run's scalars, sample grids and hyperparameters to TensorBoard event files when the run's options
    ask for it (`tensorboard`: "auto" or DIR; a resumed run has its recorded value by then), else does nothing."""

    def __init__(self):
        self.target, self.writer, self.every = None, None, 1
        self.sums: dict = {}
        self.counts: dict[str, int] = {}

    def setup(self, opts) -> None:
        self.target = opts.tensorboard
        if self.target:
            check_target(self.target)

    def on_train_start(self, session, reporter) -> None:
        if not self.target:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        path = log_dir(self.target, session.run_dir)
        if self.target != AUTO:
            links.own(path.parent)
        fileio.make_dirs(path)  # the writer would follow a link there out of the folder gentool owns
        # purge_step: what an earlier process logged after the checkpoint this run resumes from (steps beyond
        # session.step, which this run logs again) is dropped by TensorBoard
        self.writer = SummaryWriter(str(path), purge_step=session.step + 1 if session.step else None)
        steps_per_epoch = math.ceil(len(session.data) / (session.model.config.batch_size * session.world.size))
        self.every = max(1, min(MAX_STEP_INTERVAL, steps_per_epoch // POINTS_PER_EPOCH))
        _, start_info, _ = hparams(hparams_of(session.run_dir), {})
        self.writer.file_writer.add_summary(start_info)
        reporter.message(f"tensorboard: {path} (view: tensorboard --logdir {shlex.quote(str(path.parent))})")

    def on_step(self, session, losses: dict) -> None:
        if self.writer is None:
            return
        for key, value in losses.items():  # device tensors: adding them does not wait for the device
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1
        if session.step % self.every == 0 and self.sums:
            for key, total in self.sums.items():
                value = float(total) / self.counts[key]
                if math.isfinite(value):
                    self.writer.add_scalar(f"step/{key}", value, session.step)
            self.sums, self.counts = {}, {}

    def on_sample_grid(self, session, epoch: int, grid) -> None:
        if self.writer is not None:
            self.writer.add_image("samples", grid, session.step, dataformats="HWC")

    def on_epoch_end(self, session, record: dict, reporter) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{'eval' if key in EVALUATION_KEYS else 'epoch'}/{key}", value, record["step"])
        self.writer.flush()  # a running TensorBoard shows each epoch as it ends

    def teardown(self, session) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
