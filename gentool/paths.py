"""The paths a command is given, checked before any work: an input that must be a readable regular file, an output
file or folder that must be writable there, with room for the longest path the command will write in it (one
probe, `write_probe`, for every command). Each problem is one line naming the argument and what it really is."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

from gentool import undo
from gentool.errors import GentoolError, UsageError
from gentool.fileio import MISSING, cause, not_regular, special_file, temporary_name
from gentool.links import LinkRefused, check_inside, check_no_links, own

# a new file only (O_EXCL: never one already there, nor through a link)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def check_input_file(path: Path, arg: str, expected: str) -> Path:
    """`path` if it is a readable regular file; otherwise a one-line error saying what it really is (missing, a
    dangling link, a directory, a device, unreadable)."""
    why = not_regular(path)
    if why == MISSING:
        raise UsageError(f"{arg}: {path} does not exist{_being_written(path.parent)}; expected {expected}")
    if why:
        raise UsageError(f"{arg}: {path} {why}; expected {expected}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{arg}: {path} is not readable (permission denied); expected {expected}")
    return path


def _being_written(folder: Path) -> str:
    """" yet: the run in FOLDER is being written by PROCESS" when another process is starting or writing a run
    there (a checkpoint asked for before its first epoch ended), else ""."""
    from gentool.runlock import writer

    holder = writer(folder)
    return "" if holder is None else f" yet: the run in {folder} is being written by {holder}"


def nearest_folder(path: str | os.PathLike) -> Path:
    """`path` itself if it is a folder, else its nearest ancestor that is: where free space is measured for what
    will be made there (a relative path ends at the current folder)."""
    return next(p for p in (Path(path), *Path(path).parents) if os.path.isdir(p))


def require_free(path: str | os.PathLike, need: int, arg: str, work: str, advice: str = "") -> None:
    """Refuse, before any work, work that will write about `need` bytes under `path` (made later, if it is not there
    yet) when its disk has less free: one line naming `arg`, the folder measured, what needs the room (`work`) and
    what to do (`advice`). Every command's free-space check is this one, with one wording and one exit code (1, a
    full disk: docs/guides/batch-jobs.md), so a script tells a full disk from a bad option the same way everywhere."""
    folder = nearest_folder(path)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise GentoolError(f"{arg}: only {size_text(free)} free in {folder}; {work} needs about {size_text(need)}"
                           + (f"; {advice}" if advice else ""))


def size_text(n: int) -> str:
    """Bytes as a person reads them: GiB from one GiB up, else MiB with one decimal."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def prepare_output(path: str | os.PathLike, arg: str, folder: bool = False, longest: str | None = None) -> Path:
    """Make sure `path` (a file, or a folder when `folder`, which gentool then owns) can be written before any work
    is done: its folder is created if needed and a probe written there with a name as long as the longest
    temporary the write will make (`longest`: the longest file name written in the folder; else the file's own
    name). Fails with one line naming `arg` and the cause; a link at `path` is refused."""
    path = Path(path)
    parent = path if folder else path.parent
    # os.path's tests, not Path's: a name too long is then "not there" here and the probe below names the cause
    if os.path.exists(path) and folder != os.path.isdir(path):
        raise bad_output(arg, path, "is a folder; expected a file path" if os.path.isdir(path) else
                         "exists and is not a folder")
    for ancestor in [parent, *parent.parents]:
        if os.path.exists(ancestor) and not os.path.isdir(ancestor):
            raise bad_output(arg, path, f"cannot be created: {ancestor} is a file, not a folder")
        if os.path.exists(ancestor):
            break
    try:
        own(path) if folder else check_no_links(path)
        parent.mkdir(parents=True, exist_ok=True)
        write_probe(parent, temporary_name(longest or path.name))
    except LinkRefused as exc:
        raise UsageError(f"{arg}: {exc}") from None
    except OSError as exc:
        raise refusal(exc, f"{arg}: {path} cannot be written ({cause(exc)})") from None
    return path


def refusal(exc: OSError, message: str) -> GentoolError:
    """The error for a write check that failed with `exc`: a full disk (space, inodes or quota) or a read-only one is
    exit 1, the machine's state, as every free-space check and the batch-jobs guide say; anything else (no
    permission, a name too long) is the user's path, exit 2."""
    return (GentoolError if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else UsageError)(message)


def check_replace(path: str | os.PathLike, arg: str, overwrite: bool) -> None:
    """Before any work, for an output file: what stands at `path` is replaced only with --overwrite, and never when
    it is a device, a named pipe or a socket (`fileio.special_file`), whose message must not invite --overwrite."""
    why = special_file(path)
    if why:
        raise bad_output(arg, Path(path), why)
    if os.path.lexists(path) and not overwrite:  # os.path: a name too long is not an OSError here
        raise UsageError(f"{arg}: {path} already exists; pass --overwrite to replace it")


def bad_output(arg: str, path: Path, problem: str) -> UsageError:
    return UsageError(f"{arg}: {path} {problem}")


def write_probe(folder: str | os.PathLike, longest: str | int) -> None:
    """Fail now, with the OSError the work would meet, where it could not write the longest path it will write:
    `folder / longest` (`longest` relative to `folder`, perhaps through folders not made yet; an int: a file name
    of that length). Every command that writes checks this way, with the longest name it writes, before any work.
    A file is created and deleted in the nearest folder that exists, with a name as long as the longest part of
    the path (so each part fits there), and the whole path is held against the file system's limit on a path's
    length. The probe's name is new (O_EXCL), so no file already there, nor a link, is ever written."""
    target = Path(folder) / ("x" * longest if isinstance(longest, int) else longest)
    base = target.parent
    while not base.is_dir():
        if os.path.lexists(base):  # a file (or a dangling link) where a folder must be made
            raise NotADirectoryError(errno.ENOTDIR, "it is not a folder", str(base))
        base = base.parent
    check_inside(base)  # the probe is never made through a link below a folder gentool owns
    # The absolute path: gentool makes relative paths absolute (locks, records), so a relative --out under a deep
    # working directory is held against the limit as the work will meet it.
    length, limit = len(os.fsencode(os.path.abspath(target))), _path_max(base)
    if length >= limit:
        raise OSError(errno.ENAMETOOLONG, f"{os.strerror(errno.ENAMETOOLONG)}: its absolute path has {length:,} "
                                          f"characters, at most {limit - 1:,} are allowed", str(target))
    name = max(len(os.fsencode(part)) for part in target.relative_to(base).parts)
    prefix = f".gentool-write-test.{secrets.token_hex(4)}."
    probe = base / (prefix + "x" * max(0, name - len(prefix)))
    fd, removal = undo.created(lambda: os.open(probe, _NEW_FILE, 0o600), lambda _: probe.unlink(missing_ok=True))
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        removal.run()


def _path_max(folder: Path) -> int:
    """The longest path (in bytes, with its final NUL) the file system holding `folder` takes; 4096 (Linux's) where
    the system does not say."""
    try:
        limit = os.pathconf(folder, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows)
        return 4096
    return limit if limit > 0 else 1 << 62  # -1: no limit
