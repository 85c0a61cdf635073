"""A new run's folder while the run starts. The promise: Ctrl-C at any moment leaves a run that resumes, or nothing.
Until the training loop runs (from then a Ctrl-C saves a checkpoint), the start is registered with gentool.undo,
so that a start that fails or is interrupted, even by a Ctrl-C that ends the process during an import, puts the
--out path back as it was: a folder the start created is removed, and gentool's files of a run that was there
(started again, or replaced with --overwrite) come back from the hidden folder they were set aside in. Nothing of
the user's is deleted before the new run's loop runs (`RunStart.keep`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
from pathlib import Path

from gentool import fileio, links, paths, rundir, undo
from gentool.errors import GentoolError, UsageError

SET_ASIDE = ".gentool-replaced-"  # + a new token: a folder in the run folder itself (a rename never copies)


def prepare_new(path: Path, overwrite: bool) -> RunStart:
    """Create the run folder (or take over an existing one), locked for this process; returns the start, to `keep`
    once the run's loop runs or to `undo`. A folder holding only the leftovers of a run that never reached its first
    checkpoint is started again; any other non-empty one is refused unless `overwrite`. Either way only gentool's own
    files there make way (set aside until `keep`); anything else in the folder stays."""
    try:  # stat can fail too (a name longer than the file system takes): the same one line naming --out
        not_a_folder = path.exists() and not path.is_dir()
    except OSError as exc:
        raise _cannot_create(path, exc) from None
    if not_a_folder:
        raise UsageError(f"--out: {path} exists and is not a directory; expected a run directory path")
    # filelock loads its classes on first use: loaded now, so that taking the lock loads no module. A Ctrl-C inside
    # an import ends the process at once; the undo runs then too, but until the lock is held it leaves an existing
    # folder alone, a lock file this start made there included.
    from filelock import FileLock, SoftFileLock, Timeout  # noqa: F401

    start = RunStart(path)
    try:
        start.take(overwrite)
    except BaseException:  # a refusal, an error or Ctrl-C: leave the path as it was
        start.undo()
        raise
    return start


def _cannot_create(path: Path, exc: OSError) -> GentoolError:
    """One line; exit 1 on a full or read-only disk (an inode-full disk passed the free-space check), else 2."""
    return paths.refusal(exc, f"--out: cannot create run directory {path} ({exc.strerror or exc})")


class RunStart:
    """The run folder a new run is being set up in, and what undoing the start puts back."""

    def __init__(self, path: Path):
        self.path, self.held = path, path / (SET_ASIDE + secrets.token_hex(4))
        self.made: list[Path] = []  # the folders this start made: the run folder and any missing parent of it
        self.cleared = False
        self.before: set[str] = set()  # the names in the folder before this start
        self.moved: list[tuple[Path, Path]] = []  # (file, where it was set aside), in the order moved
        self._pending = undo.Pending(self._undo)  # registered before anything is made: any moment is covered

    def take(self, overwrite: bool) -> None:
        path = self.path
        try:
            self.made = [p for p in (path, *path.parents) if not p.exists()]
            path.mkdir(parents=True, exist_ok=True)
            self.before = {p.name for p in path.iterdir()}
        except OSError as exc:
            raise _cannot_create(path, exc) from None
        rundir.lock_run(path, "--out")  # before anything in it is moved: another process may be writing it
        rundir.undo_before_release(path, self.undo)  # undone, if not kept, while the lock is still held
        if any(name not in rundir.LOCK_FILES for name in self.before):
            self._check_taken(overwrite)
            self._set_aside()
        self.cleared = True  # from here gentool's files in the folder are this start's
        try:
            fileio.make_dirs(path / rundir.SAMPLES)
        except OSError as exc:
            raise _cannot_create(path, exc) from None

    def _check_taken(self, overwrite: bool) -> None:
        if overwrite:
            return
        rundir.refuse_links(self.path, "--out")
        if not rundir.unstarted(self.path):
            raise rundir.taken(self.path, f"--resume {shlex.quote(str(self.path))} (or --resume auto)")

    def _set_aside(self) -> None:
        """Move gentool's own files in the folder into the hidden `held` folder, each at its place there."""
        try:
            files = links.matching(self.path, rundir.OWNED_GLOBS + rundir.TEMPORARY_GLOBS)
        except links.LinkRefused as exc:
            raise UsageError(f"--out: {exc}") from None
        rundir.refuse_special_files(files, "--out")
        if not files:
            return
        os.mkdir(self.held)  # new (never one already there, nor a link): what is moved into it stays in the folder
        for f in files:
            target = self.held / f.relative_to(self.path)
            self.moved.append((f, target))  # before the rename: an undo at any moment finds it (if moved)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(f, target)

    def keep(self) -> None:
        """The run's loop runs (a Ctrl-C now saves a checkpoint that resumes): the start stays, and the files of the
        run it replaced are deleted."""
        self._pending.forget()
        if self.moved:
            shutil.rmtree(self.held, ignore_errors=True)  # files gentool moved there itself; links are not followed

    def undo(self) -> None:
        """Put the path back as it was before this start (once; later calls do nothing)."""
        self._pending.run()

    def _undo(self) -> None:
        held = rundir.holds(self.path)  # nothing in the folder is touched unless this process is its one writer
        if held:
            self._put_back()
        if self.made:
            with contextlib.suppress(OSError, GentoolError):
                for name in rundir.LOCK_FILES:
                    fileio.remove_file(self.path / name)
            for folder in self.made:  # the deepest first; refused where something else appeared: that stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if held:  # last: the files are put back while no other process may write there
            rundir.release_run(self.path)

    def _put_back(self) -> None:
        path = self.path
        with contextlib.suppress(OSError, GentoolError):
            if self.cleared:  # gentool's files there now are this start's (the run's before were set aside)
                rundir.remove_own_files(path)
            for f in path.iterdir():  # this start's own hidden files: write probes, the lock if it made it
                if rundir.temporary(f) and f.name not in self.before and not f.is_dir():
                    fileio.remove_file(f)
        for source, target in reversed(self.moved):
            with contextlib.suppress(OSError):
                if os.path.lexists(target):
                    os.rename(target, source)
        for folder in [*(Path(d) for d, _, _ in os.walk(self.held, topdown=False)),
                       *(path / name for name in (rundir.SAMPLES, rundir.TENSORBOARD) if name not in self.before)]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a file that could not be put back stays where it is
