"""The lock that gives a run (or a sweep) one writer at a time, and who holds it. Apart from gentool.rundir, which
names and checks run directories, so that gentool.paths can ask who is writing a folder without importing it."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gentool import fileio, links
from gentool import schema as s
from gentool.errors import GentoolError
from gentool.fileio import atomic_write_json, read_json

LOCK = ".gentool.lock"  # held by the process writing the run
LOCK_FILES = (LOCK, LOCK + ".owner")
SWEEP_LOCK = ".sweep.lock"  # held by the process writing a sweep directory's sweep.json (gentool.sweep)


class ProcessLock:
    """An exclusive lock on `path` that the operating system drops when the holding process ends, however it ends
    (the `filelock` library: flock on POSIX, msvcrt on Windows). With `record`, who holds it (pid, host, command,
    since when) is written beside it, so that a refused process can name the holder."""

    def __init__(self, path: Path, record: bool = True):
        from filelock import FileLock  # imported here: the CLI's --help must not pay for it

        self.path, self.record = Path(path), record
        self.owner = self.path.with_name(self.path.name + ".owner")
        self._lock = FileLock(str(self.path))

    def acquire(self, wait: bool = True) -> bool:
        """Take the lock (waiting for it when `wait`); False when another process holds it and `wait` is off."""
        from filelock import SoftFileLock, Timeout

        links.check_no_links(self.path)
        if not isinstance(self._lock, SoftFileLock):  # a soft lock (no fcntl) is the file's creation, with O_EXCL
            fileio.create_lock_file(self.path)  # not through a link, whatever filelock's version does
        try:
            self._lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        if self.record:
            atomic_write_json(self.owner, {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                                           "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            if self.record:
                try:
                    fileio.remove_file(self.owner)
                except links.LinkRefused:  # a link made there since: left alone (the lock is released all the same)
                    pass
            self._lock.release(force=True)

    def holder(self) -> str:
        """Who holds the lock, as a phrase for messages (read from the owner file, checked like any input)."""
        try:
            info = s.check(read_json(self.owner, 1 << 16, follow=False), OWNER, "owner")
        except (OSError, ValueError):
            return "another process (it has not recorded who it is)"
        return f"process {info['pid']} on {info['host']} since {info['since']} ({info['command']})"


OWNER = s.Obj({"pid": s.Int(0), "host": s.Str(255), "command": s.Str(), "since": s.Str(40)})
_HELD: dict[Path, ProcessLock] = {}
_UNDO: dict[Path, Callable[[], None]] = {}  # what is undone before a held run directory's lock is given up
PROCESS: list[str] = []  # what this process is, when its command line says it badly (set by sweep workers)


def _command() -> str:
    if PROCESS:
        return PROCESS[0]
    name = Path(sys.argv[0]).name
    args = " ".join(sys.argv[1:])
    return (f"gentool {args}" if name in ("gentool", "__main__.py") else f"{name} {args}")[:300]


def in_use(arg: str, folder: Path, holder: str, what: str = "run directory") -> GentoolError:
    """The one line for a run (or sweep) directory another process is writing, or starting (before its files)."""
    return GentoolError(f"{arg}: {what} {folder} is in use by {holder}; wait for it to finish or stop it first")


def writer(folder: Path, lock_name: str = LOCK) -> str | None:
    """Who else is writing the run (or, with SWEEP_LOCK, the sweep) in `folder` right now: the process holding its
    lock, as `holder` says it; None when no other process does. Asked on the way to an error about what the folder
    lacks: a run another process has just started has no config.json or checkpoint yet, and that, not the lack, is
    what to say. (Probing takes the lock for an instant when it is free.)"""
    path = Path(folder) / lock_name
    if holds(folder) or not os.path.isfile(path) or os.path.islink(path):
        return None
    lock = ProcessLock(path, record=False)
    try:
        free = lock.acquire(wait=False)
    except (OSError, GentoolError):  # a lock this process may not open (another user's run): nothing to say
        return None
    if free:
        lock.release()
        return None
    return lock.holder()


def refuse_if_written(folder: Path, arg: str) -> None:
    """`in_use` when another process is writing the run or the sweep in `folder`."""
    for lock_name, what in ((LOCK, "run directory"), (SWEEP_LOCK, "sweep directory")):
        holder = writer(folder, lock_name)
        if holder is not None:
            raise in_use(arg, folder, holder, what)


def holds(run_dir: Path) -> bool:
    """Whether this process is the run directory's writer (`lock_run`)."""
    return Path(run_dir).resolve() in _HELD


def undo_before_release(run_dir: Path, undo) -> None:
    """Have `undo()` run before this process gives up the run directory's lock (`release_run`, `release_runs`):
    work in the folder that only its writer may take back (a start not kept: gentool.run_start). A Ctrl-C that
    fell between the start and the code that undoes it left the undo to the process's exit, after the lock was
    given up, when it no longer touches the folder: a dead-end run folder stayed."""
    _UNDO[Path(run_dir).resolve()] = undo


def release_run(run_dir: Path) -> None:
    """Give up one run directory this process writes (a start that was undone), if it holds it; what is to be
    undone before (`undo_before_release`) is undone first."""
    key = Path(run_dir).resolve()
    undo = _UNDO.pop(key, None)
    if undo is not None:
        undo()  # a start's undo gives the lock up itself once its files are back
    lock = _HELD.pop(key, None)
    if lock is not None:
        lock.release()


def release_runs() -> None:
    """Give up every run directory this process writes (the end of a train call)."""
    while _HELD:
        release_run(next(iter(_HELD)))
