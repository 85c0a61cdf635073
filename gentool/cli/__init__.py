"""The command-line interface: one thin module per command, and the console-script entry point."""

import signal
import sys


def _leave(signum, frame):
    # Ctrl-C before a command has started, or after it has finished: nothing to save, so no traceback either.
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    finally:
        import os

        os._exit(128 + signum)


def main() -> None:
    """Console-script entry point (`gentool`, `python -m gentool`). SIGINT leaves quietly with exit code 130 while
    the command's modules load; `gentool.cli.app.main` then hands it to the command. Like the training loop's own
    handler, this also applies when gentool was started with SIGINT ignored (`gentool ... &` in a script), so that
    `kill -INT` stops it at any moment."""
    signal.signal(signal.SIGINT, _leave)
    from gentool.cli.app import main as run

    run()
