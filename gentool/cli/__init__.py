"""The command-line interface: one thin module per command, and the console-script entry point."""

import os
import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a batch system's preemption) outside the training loop: raised where the signal lands, like
    Ctrl-C's KeyboardInterrupt, so that every clean-up written for Ctrl-C (a half-made run folder, a temporary file)
    runs for it too; the command then exits 143 instead of 130. Python's default for SIGTERM ends the process on the
    spot, skipping all of that."""

    signum = signal.SIGTERM


def _leave(signum, frame):
    """Exit at once, quietly: there is nothing to save. (os.write: the signal may have come in the middle of a
    write to sys.stderr, which would refuse a second one.)"""
    try:
        os.write(2, b"terminated\n" if signum == signal.SIGTERM else b"interrupted\n")
    finally:
        os._exit(128 + signum)


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
    is handled the same way (raising Terminated; exit 143)."""
    if _importing(frame):
        try:
            _undo_pending()
        finally:
            _leave(signum, frame)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _undo_pending() -> None:
    undo = sys.modules.get("gentool.undo")  # not imported yet: nothing is registered (and no import from here)
    if undo is not None:
        undo.run_pending()


def main() -> None:
    """Console-script entry point (`gentool`, `python -m gentool`). Like the training loop's handler, `on_sigint`
    also applies when gentool was started with SIGINT ignored (`gentool ... &` in a script), so that `kill -INT`
    stops it at any moment. SIGTERM gets the same handler: before the training loop (which installs its own, saving
    the run) a SIGTERM undoes what the start made, as Ctrl-C does, instead of ending the process half-way."""
    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    from gentool.cli.app import main as run

    run()
