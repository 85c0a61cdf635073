"""Progress: a rich bar on a terminal, plain lines in batch logs (one every --log-every seconds within an epoch and
one at each epoch's end, each with an ETA for the whole run), or nothing (--quiet). Every other long pass (decoding a
folder, training an extractor, drawing samples or couplings, a sweep's trials) shows its lines by the same rule,
`Pace`: at most one every --log-every seconds in a log (TERMINAL_EVERY on a terminal) and its last one."""

from __future__ import annotations

import sys
import time

from gentool.checks import Numbers
from gentool.errors import printable
from gentool.history import BOOKKEEPING  # a record's fields not shown in progress lines

LOG_EVERY = 30.0  # seconds between progress lines within an epoch in a batch log
LOG_EVERY_RANGE = Numbers(0, 1e6, what="a number of seconds from 0 (a line at each epoch's end only) to 1,000,000")
WARMUP = 3  # steps before the run's ETA is shown
WIDE = 100  # terminal columns from which the progress bar also draws a bar and img/s
TERMINAL_EVERY = 5.0  # seconds between a long pass's lines on a terminal, where someone is watching


class Pace:
    """When a long pass shows its next progress line: at most one every `every` seconds (0: none but the last),
    and always the last one, so that a log says how each pass ended. One rule for every producer: an extractor's
    hundreds of short epochs printed a line each, a thousand lines in a batch log for a folder of 54 images."""

    def __init__(self, every: float, clock=time.monotonic):
        self.every, self.clock = every, clock
        self.last = clock()  # when the last line was shown (or the pass started)

    def due(self, last: bool = False) -> bool:
        """Whether to show a line now (`last`: the pass's last one); if so, the next waits `every` seconds."""
        now = self.clock()
        if not (last or (self.every and now - self.last >= self.every)):
            return False
        self.last = now
        return True


def format_metrics(metrics: dict, keys=None) -> str:
    """`name=value` pairs with 4 significant digits, in insertion order."""
    keys = keys or metrics.keys()
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if isinstance(metrics.get(k), (int, float)))


def format_duration(seconds: float | None) -> str:
    """'1:02:03', or '3d 01h' beyond a day (a run's ETA that far out moves by hours: seconds would be noise); '?'
    while unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    if days:
        return f"{days}d {rest // 3600:02d}h"
    return f"{rest // 3600}:{rest // 60 % 60:02d}:{rest % 60:02d}"


def compact_metrics(metrics: dict) -> str:
    """`format_metrics` for a progress bar that shares 80 columns: 3 significant digits and `_loss` dropped from
    the names (critic_loss=0.512 becomes critic=0.512), so every value fits where names alone were cut off."""
    return " ".join(f"{k.removesuffix('_loss')}={v:.3g}" for k, v in metrics.items() if isinstance(v, (int, float)))


class Reporter:
    """Silent reporter; the base of the others. It keeps the count of steps done and left in the run, for the
    ETA of the whole run."""

    clock = staticmethod(time.monotonic)
    total = epoch = steps = done = done_here = 0  # epochs in the run; the epoch, its steps, those done; steps here
    t0 = t1 = 0.0  # when the run started here, and when its first step ended
    deadline: float | None = None  # when a time budget (--max-minutes) ends the run, on `clock`

    def start(self, total_epochs: int, first_epoch: int, budget: float | None = None) -> None:
        """A run of `total_epochs` starts at `first_epoch`; `budget`: the seconds it may train, if limited."""
        self.total, self.t0, self.done_here = total_epochs, self.clock(), 0
        self.deadline = None if budget is None else self.t0 + budget

    def epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps, self.done = epoch, steps, 0

    def step(self, done: int, running, images_per_second: float) -> None:
        """After each step; `running()` returns the running means (it synchronises with the device, so call it
        only when they are shown)."""
        self.done = done
        self.done_here += 1
        if self.done_here == 1:
            self.t1 = self.clock()

    def epoch_end(self, record: dict) -> None: ...
    def message(self, text: str) -> None: ...

    def pace(self) -> Pace:
        """The pace of a long pass's progress lines (`Pace`) for this output, starting now."""
        return Pace(LOG_EVERY, self.clock)

    def close(self) -> None: ...

    def run_eta(self) -> float | None:
        """Seconds left in the run at this process's pace so far (epoch-end work included), None until WARMUP
        steps are done: the first steps (allocation, kernel choice, a cold cache) are slow, and an ETA taken from
        them swung by days in a long run's first minutes. The pace is counted from the end of the first step."""
        if self.done_here <= WARMUP:
            return None
        left = (self.steps - self.done) + self.steps * (self.total - self.epoch)
        now = self.clock()
        eta = left * (now - self.t1) / (self.done_here - 1)
        return eta if self.deadline is None else max(0.0, min(eta, self.deadline - now))


class PlainReporter(Reporter):
    """Lines on stderr, what a batch log wants: one every `every` seconds within an epoch (step of the epoch's
    steps, img/s, running means, the run's ETA) and one at each epoch's end."""

    def __init__(self, stream=None, every: float = LOG_EVERY):
        self.stream = stream or sys.stderr
        self.every = every
        self.lines = self.pace()  # within an epoch; each epoch's own line starts the wait again

    def pace(self) -> Pace:
        return Pace(self.every, self.clock)

    def step(self, done, running, images_per_second):
        super().step(done, running, images_per_second)
        if done < self.steps and self.lines.due():
            self._print(f"epoch {self.epoch}/{self.total} step {done}/{self.steps} {images_per_second:.0f} img/s "
                        f"{format_metrics(running())} | run eta {format_duration(self.run_eta())}")

    def epoch_end(self, record):
        self.lines.due(last=True)
        rest = format_metrics({k: v for k, v in record.items() if k not in BOOKKEEPING})
        # "done at step N": N counts the whole run's steps, unlike the within-epoch "step k/K" lines before it
        self._print(f"epoch {record['epoch']}/{self.total} done at step {record['step']} in {record['seconds']:.1f}s "
                    f"{record['images_per_second']:.0f} img/s {rest} | run eta {format_duration(self._left())}")

    def _left(self) -> float | None:
        return 0.0 if self.epoch >= self.total else self.run_eta()

    def message(self, text):
        self._print(printable(text))  # a note names the user's paths: their control characters are escaped

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class RichReporter(PlainReporter):
    """A rich progress bar per epoch and the epoch line kept above it. The bar keeps, at 80 columns, the epoch,
    the step count, the epoch's time left and the run's and the running means; wider, a bar and img/s too."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        super().__init__(every=0)
        self.console = console or Console(stderr=True)
        # Below WIDE columns the bar and img/s (both in the epoch's line anyway) give their room to the losses.
        self.wide = self.console.width >= WIDE
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[total_epochs]}"),
            *([BarColumn(bar_width=12)] if self.wide else []),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[rest]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=self.console, transient=True, expand=True,
        )
        self.task = None
        self._drawn = 0.0

    def pace(self):
        return Pace(TERMINAL_EVERY, self.clock)

    def start(self, total_epochs, first_epoch, budget=None):
        super().start(total_epochs, first_epoch, budget)
        self.progress.start()

    def epoch_start(self, epoch, steps):
        super().epoch_start(epoch, steps)
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=epoch, total_epochs=self.total, eta="", rest="")

    def step(self, done, running, images_per_second):
        Reporter.step(self, done, running, images_per_second)
        now = self.clock()
        if now - self._drawn < 0.2 and done < self.steps:
            return
        self._drawn = now
        task = self.progress.tasks[-1]
        eta = f"eta {format_duration(task.time_remaining)} run {format_duration(self.run_eta())}"
        self.progress.update(self.task, completed=done, eta=eta,
                             rest=f"{images_per_second:.0f} img/s " * self.wide + compact_metrics(running()))

    def epoch_end(self, record):
        rest = format_metrics({k: v for k, v in record.items() if k not in BOOKKEEPING})
        self.progress.console.print(f"epoch {record['epoch']}/{self.total} {record['seconds']:.1f}s "
                                    f"{record['images_per_second']:.0f} img/s {rest} | run eta "
                                    f"{format_duration(self._left())}", highlight=False, soft_wrap=True)

    def message(self, text):
        from rich.markup import escape

        self.progress.console.print(escape(printable(text)), highlight=False, soft_wrap=True)

    def close(self):
        self.progress.stop()


def make_reporter(quiet: bool, log_every: float = LOG_EVERY) -> Reporter:
    """Quiet, rich (stderr is a terminal) or plain lines (batch logs) every `log_every` seconds."""
    if quiet:
        return Reporter()
    if log_every is None or not log_every >= 0 or log_every == float("inf"):
        from gentool.errors import bad_value

        raise bad_value("--log-every", log_every, LOG_EVERY_RANGE.accepted())
    return RichReporter() if sys.stderr.isatty() else PlainReporter(every=log_every)


class Drawing:
    """A checkpoint's drawing, shown at the reporter's pace (`Pace`): a first line ("drawing 10,000 samples to
    score") and then how far it is. Called with each batch's count as the model draws it (`generate`'s `progress`),
    not each written chunk: a 16-step sampler's chunk of 4,096 took minutes on a busy CPU, a silence a walk saw."""

    def __init__(self, n: int, reporter: Reporter, purpose: str):
        reporter.message(f"drawing {n:,} samples {purpose}")
        self.n, self.reporter, self.done = n, reporter, 0
        self.start, self.lines = time.perf_counter(), reporter.pace()

    def __call__(self, count: int) -> None:
        self.done += count
        seconds = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / seconds
        if self.done >= self.n:  # how the pass ended, as every pass's last line says (Pace)
            self.reporter.message(f"drew {self.n:,} samples in {format_duration(seconds)} ({rate:,.0f} img/s)")
        elif self.lines.due():
            self.reporter.message(f"drawn {self.done:,} of {self.n:,} samples ({rate:,.0f} img/s, about "
                                  f"{max(1, round((self.n - self.done) / rate / 60))} min left)")
