"""Training progress: a rich bar on a terminal, one plain line per epoch in batch logs, or nothing (--quiet)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def format_metrics(metrics: dict, keys=None) -> str:
    """`name=value` pairs with 4 significant digits, in insertion order."""
    keys = keys or metrics.keys()
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), (int, float)))


class Reporter:
    """Silent reporter; the base of the others."""

    def start(self, total_epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int) -> None: ...
    def step(self, done: int, running, images_per_second: float) -> None:
        """After each step; `running()` returns the running means (it synchronises with the device, so call it
        only when they are shown)."""
    def epoch_end(self, record: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainReporter(Reporter):
    """One line per epoch on stderr: what a batch log wants."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.total = 0

    def start(self, total_epochs, first_epoch):
        self.total = total_epochs

    def epoch_end(self, record):
        skip = {"epoch", "step", "seconds", "images_per_second"}
        rest = format_metrics({k: v for k, v in record.items() if k not in skip})
        print(f"epoch {record['epoch']}/{self.total} step {record['step']} {record['seconds']:.1f}s "
              f"{record['images_per_second']:.0f} img/s {rest}", file=self.stream, flush=True)

    def message(self, text):
        print(text, file=self.stream, flush=True)


class RichReporter(PlainReporter):
    """A rich progress bar per epoch (step, losses, img/s, ETA), and the epoch line kept above it."""

    def __init__(self, console: Console | None = None):
        super().__init__()
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[total_epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"), TextColumn("{task.fields[ips]:.0f} img/s"), TimeRemainingColumn(),
            console=self.console, transient=True,
        )
        self.task = None
        self._last = 0.0

    def start(self, total_epochs, first_epoch):
        self.total = total_epochs
        self.progress.start()

    def epoch_start(self, epoch, steps):
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=epoch, total_epochs=self.total,
                                           metrics="", ips=0.0)

    def step(self, done, running, images_per_second):
        now = time.monotonic()
        if now - self._last < 0.2 and done < self.progress.tasks[-1].total:
            return
        self._last = now
        self.progress.update(self.task, completed=done, metrics=format_metrics(running()), ips=images_per_second)

    def epoch_end(self, record):
        skip = {"epoch", "step", "seconds", "images_per_second"}
        rest = format_metrics({k: v for k, v in record.items() if k not in skip})
        self.progress.console.print(f"epoch {record['epoch']}/{self.total} {record['seconds']:.1f}s "
                                    f"{record['images_per_second']:.0f} img/s {rest}")

    def message(self, text):
        self.progress.console.print(text)

    def close(self):
        self.progress.stop()


def make_reporter(quiet: bool) -> Reporter:
    """Quiet, rich (stderr is a terminal) or plain lines (batch logs)."""
    if quiet:
        return Reporter()
    return RichReporter() if sys.stderr.isatty() else PlainReporter()
