"""The command-line interface: one thin module per command, and the console-script entry point."""

import atexit
import contextlib
import os
import signal
import sys

from gentool.plugin_exits import exit_now
from gentool.stops import STOPS, hangup_is_free, quiet_closed_terminal, stopped, word



def _leave(signum, frame):
    """Exit at once, quietly: there is nothing to save. (os.write: the signal may have come in the middle of a
    write to sys.stderr, which would refuse a second one.)"""
    try:
        quiet_closed_terminal(signum)
        os.write(2, word(signum).encode() + b"\n")
    finally:
        exit_now(128 + signum)  # not os._exit: a plugin's import it lands in has that replaced


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def on_sigint(signum, frame):
    """SIGINT for the whole CLI process. A KeyboardInterrupt raised inside an import (torch, numpy and scipy take
    seconds) leaves half-initialised modules that fail with unrelated errors (ImportError "initialization failed",
    RecursionError), so during an import gentool leaves at once (exit 130); anywhere else the KeyboardInterrupt lets
    the command clean up (a half-made run directory, a temporary file) before the one-line "interrupted". The
    training loop replaces this with its own handler, which saves the run. Leaving at once skips that clean-up, so
    what the command registered to undo (gentool.undo: the run folder a start is making) is undone first. SIGTERM
    and SIGHUP are handled the same way (raising gentool.stops.Terminated / HungUp; exit 143 / 129)."""
    quiet_closed_terminal(signum)
    if _importing(frame):
        try:
            _undo_pending()
        finally:
            _leave(signum, frame)
    raise stopped(signum)


on_sigint.gentool_stop = True  # a handler the training loop's own (gentool.guards.StopSignals) may take over


def _undo_pending() -> None:
    undo = sys.modules.get("gentool.undo")  # not imported yet: nothing is registered (and no import from here)
    if undo is not None:
        undo.run_pending()


def _hold_stops_at_exit() -> None:
    """The last thing before the interpreter tears itself down: Python then puts back the default handlers (a stop
    signal would end the process silently, by the signal, for the ~0.3 s the teardown takes), so the stop signals are
    blocked from here: the command is over, its output written, and it exits with its own code. Until here (the
    command, its closing, the other exit handlers, waiting for threads) a stop still ends in one line."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)


def main() -> None:
    """Console-script entry point (`gentool`, `python -m gentool`). Like the training loop's handler, `on_sigint`
    also applies when gentool was started with SIGINT ignored (`gentool ... &` in a script), so that `kill -INT`
    stops it at any moment. SIGTERM gets the same handler: before the training loop (which installs its own, saving
    the run) a SIGTERM undoes what the start made, as Ctrl-C does, instead of ending the process half-way. SIGHUP
    too, unless it is ignored (nohup) or handled by whoever started gentool."""
    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    if hangup_is_free():
        signal.signal(signal.SIGHUP, on_sigint)
    atexit.register(_hold_stops_at_exit)  # registered first, so it runs after every other exit handler
    for stream in (sys.stdout, sys.stderr):  # PYTHONIOENCODING=ascii, LANG=C: a '·' or '–' is written as '?', not
        with contextlib.suppress(AttributeError, ValueError):  # a UnicodeEncodeError traceback
            stream.reconfigure(errors="replace")
    from gentool.cli.app import main as run

    run()
