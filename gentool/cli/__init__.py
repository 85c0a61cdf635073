"""The command-line interface: one thin module per command, and the console-script entry point."""

import os
import signal
import sys


def _leave(signum, frame):
    """Exit at once, quietly: there is nothing to save. (os.write: the signal may have come in the middle of a
    write to sys.stderr, which would refuse a second one.)"""
    try:
        os.write(2, b"interrupted\n")
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
    what the command registered to undo (gentool.undo: the run folder a start is making) is undone first."""
    if _importing(frame):
        try:
            _undo_pending()
        finally:
            _leave(signum, frame)
    raise KeyboardInterrupt


def _undo_pending() -> None:
    undo = sys.modules.get("gentool.undo")  # not imported yet: nothing is registered (and no import from here)
    if undo is not None:
        undo.run_pending()


def main() -> None:
    """Console-script entry point (`gentool`, `python -m gentool`). Like the training loop's handler, `on_sigint`
    also applies when gentool was started with SIGINT ignored (`gentool ... &` in a script), so that `kill -INT`
    stops it at any moment."""
    signal.signal(signal.SIGINT, on_sigint)
    from gentool.cli.app import main as run

    run()
