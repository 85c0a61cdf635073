"""A bound on how long a plugin's code may run while `gentool models --check` loads it.

A plugin's import runs its code, and that code can hang (it sleeps, waits on a lock, a socket or a terminal):
`models --check` then hung with it. The registry tells a watcher when each step that runs a plugin's code starts
and ends (its import, then reading its class: `registry.watch_plugins`); `watchdog` starts a timer for each, and
a plugin that does not finish within `seconds` is named in one line by `expired`, which ends the process.

Why a timer thread that ends the process, rather than a child process or a thread that runs the import: an import
cannot be abandoned and the command go on: a thread stuck in one holds that module's import lock and keeps running
the plugin's code, and Python cannot stop a thread. Ending the process is what a timeout must do anyway, and
`models --check` has nothing to save or clean up when it stops (it writes nothing). A child process would be
robust to one more case (C code that never releases the GIL, which keeps this timer from running; Ctrl-C still
ends the process then), but costs every `--check` a second interpreter that imports torch again, and loses the
plugins' warnings and output to the parent's formatting.
"""

from __future__ import annotations

import contextlib
import threading

IMPORT_SECONDS = 60.0  # a plugin's import on a loaded 2-core machine, torch already imported: seconds at most


@contextlib.contextmanager
def watchdog(seconds: float, expired):
    """While the body runs, each plugin step that takes longer than `seconds` calls `expired(message)` from a timer
    thread; `expired` must end the process (the main thread is stuck in the plugin's code)."""
    from gentool import registry

    timers: list[threading.Timer] = []

    def watch(step: str | None) -> None:
        while timers:
            timers.pop().cancel()
        if step is not None:
            message = (f"{step} did not finish within {seconds:g} s (--import-timeout); the check is stopped: fix "
                       f"or uninstall that package")
            timer = threading.Timer(seconds, expired, args=(message,))
            timer.daemon = True
            timers.append(timer)
            timer.start()

    registry.watch_plugins(watch)
    try:
        yield
    finally:
        registry.watch_plugins(None)
        watch(None)
