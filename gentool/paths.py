"""The paths a command is given, checked before any work: an input that must be a readable regular file, an output
file or folder that must be writable there. Each problem is one line naming the argument and what it really is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gentool.errors import UsageError
from gentool.fileio import LinkRefused, cause, check_no_links, kind_of, own, temporary_name, write_probe


def check_input_file(path: Path, arg: str, expected: str) -> Path:
    """`path` if it is a readable regular file; otherwise a one-line error saying what it really is (missing, a
    dangling link, a directory, a device, unreadable)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise UsageError(f"{arg}: {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                             f"expected {expected}") from None
        raise UsageError(f"{arg}: {path} does not exist; expected {expected}") from None
    except OSError as exc:
        raise UsageError(f"{arg}: cannot access {path} ({cause(exc)}); expected {expected}") from None
    link = f" (a symbolic link to {os.readlink(path)})" if path.is_symlink() else ""
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{arg}: {path}{link} is a directory; expected {expected}")
    kind = kind_of(info.st_mode)
    if kind != "a regular file":
        raise UsageError(f"{arg}: {path}{link} is {kind}, not a regular file; expected {expected}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{arg}: {path} is not readable (permission denied); expected {expected}")
    return path


def prepare_output(path: str | os.PathLike, arg: str, folder: bool = False, longest: str | None = None) -> Path:
    """Make sure `path` (a file, or a folder when `folder`, which gentool then owns) can be written before any work
    is done: its folder is created if needed and a probe written there with a name as long as the longest
    temporary the write will make (`longest`: the longest file name written in the folder; else the file's own
    name). Fails with one line naming `arg` and the cause; a link at `path` is refused."""
    path = Path(path)
    parent = path if folder else path.parent
    if path.exists() and folder != path.is_dir():
        raise bad_output(arg, path, "is a folder; expected a file path" if path.is_dir() else
                         "exists and is not a folder")
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists() and not ancestor.is_dir():
            raise bad_output(arg, path, f"cannot be created: {ancestor} is a file, not a folder")
        if ancestor.exists():
            break
    try:
        own(path) if folder else check_no_links(path)
        parent.mkdir(parents=True, exist_ok=True)
        write_probe(parent, len(temporary_name(longest or path.name)))
    except LinkRefused as exc:
        raise UsageError(f"{arg}: {exc}") from None
    except OSError as exc:
        raise bad_output(arg, path, f"cannot be written ({cause(exc)})") from None
    return path


def bad_output(arg: str, path: Path, problem: str) -> UsageError:
    return UsageError(f"{arg}: {path} {problem}")
