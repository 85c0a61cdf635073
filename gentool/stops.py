"""The signals that stop a command (Ctrl-C, `kill`, a closed terminal) and the one word each ends with. Nothing heavy
is imported here: the CLI's signal handler uses it before any command runs (gentool.cli.on_sigint).

SIGINT raises KeyboardInterrupt where it lands; SIGTERM and SIGHUP raise a KeyboardInterrupt subclass carrying
their number, so that every clean-up written for Ctrl-C (a half-made run folder, a temporary file) runs for them too
and the command then exits 128 + the signal (130, 143, 129) with its word on stderr."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}
STOPS = tuple(WORDS)  # each ends a command in one line: 130, 143, 129


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a batch system's preemption) outside the training loop: exit 143."""

    signum = signal.SIGTERM


class HungUp(KeyboardInterrupt):
    """SIGHUP (the terminal was closed, `kill -HUP`) outside the training loop: exit 129."""

    signum = signal.SIGHUP


RAISED = {signal.SIGTERM: Terminated, signal.SIGHUP: HungUp}


_UNTOLD: list[int] = []  # the stops raised by the CLI's handler that no line has told the user of yet


def stopped(signum: int) -> KeyboardInterrupt:
    """The exception a stop signal raises where it lands, remembered until a line tells of it (`told`): Typer turns a
    KeyboardInterrupt that escapes a command's own handling (in its option parsing, or in the handling itself) into
    exit code 130 without a word, whatever the signal (gentool.cli.app._run looks here then)."""
    _UNTOLD.append(signum)
    exc = RAISED.get(signum, KeyboardInterrupt)()
    exc.from_signal = True  # not one a plugin raised itself (gentool.plugin_exits)
    return exc


def told() -> None:
    """A line has told the user how the command ended (stopped, continued later, or an error)."""
    _UNTOLD.clear()


def untold() -> int | None:
    """The signal of the last stop no line has told of, if any."""
    return _UNTOLD[-1] if _UNTOLD else None


def signum_of(exc: BaseException) -> int:
    """The signal that stopped the command (SIGINT for a plain KeyboardInterrupt)."""
    return getattr(exc, "signum", signal.SIGINT)


def word(signum: int) -> str:
    return WORDS.get(signum, signal.Signals(signum).name.lower() + " received")


def quiet_closed_terminal(signum: int) -> None:
    """After SIGHUP the terminal is gone: a write to it would fail (EIO) or block, so stdout and stderr, where they
    are that terminal, go to /dev/null from here on (a file or pipe keeps what is written, the one line included)."""
    if signum != signal.SIGHUP:
        return
    targets = [fd for fd in (1, 2) if os.isatty(fd)]
    if not targets:
        return
    quiet = os.open(os.devnull, os.O_WRONLY)
    for fd in targets:
        os.dup2(quiet, fd)
    os.close(quiet)


def hangup_is_free() -> bool:
    """Whether SIGHUP may be taken as a stop: it would end the process anyway (the default) or gentool's own CLI
    handler has it. Under nohup (ignored) or a caller's own handler, it keeps what it was given."""
    handler = signal.getsignal(signal.SIGHUP)
    return handler is signal.SIG_DFL or getattr(handler, "gentool_stop", False)


@contextlib.contextmanager
def said_if_slow(line: str, seconds: float):
    """Print `line` once on stderr if the block is still running after `seconds`: a wait on something outside
    gentool (a plugin's import, the other ranks) would otherwise look like a hang without a word (issue 26)."""
    timer = threading.Timer(seconds, lambda: print(line, file=sys.__stderr__, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
