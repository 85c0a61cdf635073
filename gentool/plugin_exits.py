"""Plugin code that tries to end the process while gentool runs it (its import, reading its class): `os._exit`,
`sys.exit` (SystemExit), a KeyboardInterrupt it raises itself. Each used to end gentool there and then, silently
(os._exit(0) in an import: `gentool models --check` exited 0 with nothing said) or with the plugin's own exit code;
now each is one line naming the plugin, exit 1 (PluginEnded). A plugin whose code hangs is `gentool.plugin_check`'s.

os._exit cannot be caught: while a plugin step runs, `os._exit` is replaced by a function that raises instead when
called from the thread running that step (anywhere else, and after the step, it is os._exit itself). Code that
ends the process below Python (a C library's exit(), a SIGKILL it sends itself) is beyond any of this."""

from __future__ import annotations

import contextlib
import os
import threading

from gentool.errors import GentoolError


_REAL_EXIT = os._exit  # taken as this module is imported: before any plugin step can have replaced it


def exit_now(code: int) -> None:
    """End the process at once, for gentool's own reasons (a stop signal's handler, a timeout): os._exit itself,
    also when a plugin's step is running under this thread. A stop signal landing in a plugin's import used to exit
    through the stand-in: its line said, the stand-in then blamed the plugin ("tried to end the process
    (os._exit(143))", or "terminated" a second time), exit 1 instead of 143."""
    _REAL_EXIT(code)


class PluginEnded(GentoolError):
    """A plugin's code tried to end the process (exit code 1)."""


class _Exit(BaseException):  # a BaseException: a plugin's own `except Exception` does not swallow it
    def __init__(self, code):
        super().__init__(code)
        self.code = code


@contextlib.contextmanager
def no_exit(step: str):
    """Run a plugin step (`step` names it: "the import of plugin 'x' (entry point 'y')"), turning each way its code
    may end the process into PluginEnded. A KeyboardInterrupt from a real stop signal (gentool.stops) goes on."""
    real, thread, active = os._exit, threading.get_ident(), [True]

    def intercepted(code):
        if active[0] and threading.get_ident() == thread:
            raise _Exit(code)
        real(code)

    os._exit = intercepted
    try:
        yield
    except _Exit as exc:
        raise _ended(step, f"os._exit({exc.code!r})") from None
    except SystemExit as exc:
        raise _ended(step, f"sys.exit({exc.code!r}): SystemExit") from None
    except KeyboardInterrupt as exc:
        if getattr(exc, "from_signal", False):  # the user's Ctrl-C, SIGTERM or SIGHUP: the command stops as usual
            raise
        raise _ended(step, "raise KeyboardInterrupt") from None
    finally:
        active[0] = False
        if os._exit is intercepted:
            os._exit = real


def _ended(step: str, how: str) -> PluginEnded:
    return PluginEnded(f"{step} tried to end the process ({how}): fix or uninstall that package")
