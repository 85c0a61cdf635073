"""Work a command must take back if it does not finish (a run folder it created, the files of a run it set aside to
replace), registered while the work is under way. An undo runs when the work fails or is interrupted, and also
when the process ends before any clean-up code can run: Ctrl-C during an import leaves at once
(gentool.cli.on_sigint, which calls `run_pending` on its way out), since a KeyboardInterrupt raised inside an
import leaves half-initialised modules behind; SIGTERM the same (exit 143). Nothing heavy is imported here: the
signal handler looks for this module in sys.modules and never imports it."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from gentool.stops import STOPS

T = TypeVar("T")
_PENDING: list["Pending"] = []


class Pending:
    """An undo action registered until the work is kept (`forget`) or taken back (`run`, at most once)."""

    def __init__(self, action: Callable[[], None]):
        self.action, self.pid = action, os.getpid()
        _PENDING.append(self)

    def forget(self) -> None:
        """The work is done: there is nothing to undo any more."""
        if self in _PENDING:
            _PENDING.remove(self)

    def run(self) -> None:
        """Take the work back now (once; later calls do nothing), with a Ctrl-C held off meanwhile."""
        if self not in _PENDING:
            return
        with _sigint_held():
            self.forget()
            self.action()


def created(make: Callable[[], T], remove: Callable[[T], None]) -> tuple[T, Pending]:
    """Make something (a temporary file, a probe, a folder) and register its removal in one step, with Ctrl-C held
    off between: a Ctrl-C that landed after the file was made and before its removal was registered left it behind
    (in a run folder a start had made, the folder could then not be taken back). A Ctrl-C held meanwhile removes it
    before it is raised."""
    pending = None
    try:
        with _sigint_held():
            thing = make()
            pending = Pending(lambda: remove(thing))
    except BaseException:
        if pending is not None:
            pending.run()
        raise
    return thing, pending


def run_pending() -> None:
    """Undo every registered action, newest first: the process is leaving before the work finished."""
    while _PENDING:
        pending = _PENDING[-1]
        if pending.pid != os.getpid():  # inherited by a forked child: its parent's work, not the child's to undo
            pending.forget()
            continue
        with contextlib.suppress(Exception):  # the process is leaving: one undo that fails must not stop the others
            pending.run()


# The last chance: an exception (a second Ctrl-C) that skipped the clean-up on its way out of the command.
atexit.register(run_pending)


HELD_SIGNALS = STOPS  # turned into a clean-up (gentool.cli.on_sigint)


@contextlib.contextmanager
def _sigint_held():
    """A Ctrl-C (or SIGTERM, SIGHUP) arriving while an undo runs (a few renames and deletions) waits until it is done,
    rather than cutting it short and leaving half a run folder behind; then it is raised again, for the handler it
    was meant for. Only the main thread may set a handler; on another no handler of gentool's runs anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in HELD_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            # None: the handler was set outside Python; SIG_DFL is the nearest that can be put back
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)
