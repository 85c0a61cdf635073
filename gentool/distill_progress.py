"""How far `gentool distill`'s drawing of couplings is: lines at the reporter's pace (`--log-every`) inside a part as
between parts (a part of 500 from a 32-step teacher took minutes on a busy CPU, and a 4-minute budget showed one
line), and a note when the rate says `--max-minutes` will end the drawing before the student starts."""

from __future__ import annotations

import math
import time

from gentool.couplings import PART
from gentool.progress import Reporter, format_duration


class DrawingPace:
    """Called with the number of pairs there now (kept before, written, and drawn of the part in progress)."""

    def __init__(self, reporter: Reporter, before: int, total: int, deadline: float | None, minutes: float | None):
        self.reporter, self.before, self.total = reporter, before, total
        self.deadline, self.minutes, self.warned = deadline, minutes, False
        self.start, self.lines = time.monotonic(), reporter.pace()

    def __call__(self, there: int, last: bool = False) -> None:
        if not self.lines.due(last=last):
            return
        rate = (there - self.before) / max(time.monotonic() - self.start, 1e-9)
        left = (self.total - there) / rate if rate > 0 else math.inf
        self.reporter.message(f"couplings {there:,}/{self.total:,} {rate:.0f}/s | eta {format_duration(left)}")
        if self.deadline is not None and not self.warned and there < self.total and \
                time.monotonic() + left > self.deadline:
            self.warned = True
            self.reporter.message(
                f"note: at this rate the couplings need about {format_duration(left)} more, beyond --max-minutes "
                f"{self.minutes:g}: the drawing will stop before the student starts, keeping its whole parts of "
                f"{PART:,}; the same command continues it, or --pairs N asks for fewer")
