"""The per-user cache (decoded image folders, reference extractors and their statistics, precision measurements):
where it is, and what happens to an entry found damaged: it is moved aside (the last KEEP_ASIDE damaged copies of
an entry kept, to be looked at) and built again."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from gentool import environment
from gentool.errors import UsageError
from gentool.fileio import cause, make_dirs, temporary_name, what_stands
from gentool.links import check_no_links, own
from gentool.paths import refusal, require_free, write_probe


def cache_dir() -> Path:
    """The per-user cache folder ($XDG_CACHE_HOME/gentool, else ~/.cache/gentool), owned by gentool: every entry
    below it is written, replaced and deleted through gentool.fileio, which refuses a link inside it (the folder
    itself may be a link the user made)."""
    base = environment.folder("XDG_CACHE_HOME", "the folder per-user caches go in")
    if base is not None and not base.is_absolute():  # the XDG spec: a relative path is invalid and to be ignored
        warnings.warn(f"XDG_CACHE_HOME={str(base)!r} is a relative path, which the XDG specification says to "
                      f"ignore; using ~/.cache")
        base = None
    name = "HOME" if base is None else "XDG_CACHE_HOME"  # the setting that chose the folder
    if base is None:  # ~/.cache, where ~ is $HOME (checked the same way) or the account's home folder
        home = environment.folder("HOME", "your home folder")
        if home is not None and not home.is_absolute():  # a cache that moves with the working folder is no cache
            account = _account_home()
            warnings.warn(f"HOME={str(home)!r} is a relative path; using the account's home folder {account}")
            home = account
        base = (home or Path(os.path.expanduser("~"))) / ".cache"
    root = base / "gentool"
    # the nearest part of the path there: a file (the folder itself, or $XDG_CACHE_HOME) would give a bare "Not a
    # directory" later, naming no setting
    there = next((p for p in (root, *root.parents) if os.path.lexists(p)), root)
    if os.path.lexists(there) and not os.path.isdir(there):
        inside = "" if there == root else f" ({there} is a file)"
        raise UsageError(f"{name}: the cache folder {root} is not a folder{inside}; move that file away or set "
                         f"XDG_CACHE_HOME to a folder")
    return own(root)


def _account_home() -> Path:
    import pwd

    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # an account with no entry (a container's arbitrary uid): the system's temporary folder
        import tempfile

        return Path(tempfile.gettempdir())


# damaged copies kept beside an entry: enough to look at, and a bound on the disk they take however often the
# entry is damaged again (a decoded-images entry or a couplings folder can be gigabytes)
KEEP_ASIDE = 3


def set_aside(path: Path, problem: str) -> None:
    """Move a damaged cache entry out of the way (see put_aside) with a one-line warning; the caller then rebuilds
    it."""
    path = Path(path)
    warnings.warn(f"cache entry {path} is damaged ({problem}); {move_aside(path)}, building it again")


def move_aside(path: Path) -> str:
    """put_aside, or why it could not be done, in words ("moved to precision.json.bad")."""
    try:
        return put_aside(Path(path))
    except (OSError, UsageError) as exc:
        return f"could not be moved aside ({exc.strerror if isinstance(exc, OSError) else exc})"


def put_aside(path: Path) -> str:
    """Rename whatever stands at `path` (a file, folder, link or pipe: a link is renamed, never followed) to NAME.bad,
    NAME.bad1, ... beside it, up to KEEP_ASIDE names; when all are taken it is deleted instead (the copies kept
    already show the damage). What was done, in words; OSError or UsageError (a link on the way) when it cannot."""
    check_no_links(path, last=False)
    for k in range(KEEP_ASIDE):
        target = path.with_name(f"{path.name}.bad{k or ''}")
        if not os.path.lexists(target):
            os.rename(path, target)
            return f"moved to {target.name}"
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # fd-based on Linux: a link inside is removed, never followed
    else:
        os.unlink(path)
    return f"removed ({KEEP_ASIDE} damaged copies are kept beside it already, {path.name}.bad and on)"


def prepare_entry(*files: Path, need: int = 0) -> None:
    """Before the work a cache entry keeps (minutes of training or scoring): its folder made (a link on the way is
    refused) and a probe as long as the longest of its files' temporaries written there, so that a cache that cannot
    hold them fails now, in one line, not when the work is done; so does one with less free space than `need` bytes
    (what the files will take, as far as the caller can tell before the work). A link, pipe or folder where a file
    goes is set aside (the link itself renamed, never what it leads to), not a refusal on every later run."""
    folder = make_dirs(files[0].parent)
    for path in files:  # a link or a pipe where the entry goes (its sidecar gone or stale, so never read): damage
        if os.path.lexists(path) and (kind := what_stands(path)) != "a regular file":
            set_aside(path, f"it is {kind}, not a file gentool wrote")
    longest = max((temporary_name(f.name) for f in files), key=len)
    try:
        write_probe(folder, longest)
    except OSError as exc:  # where the cache is, is the user's setting: refused as one (exit 2; a full disk 1)
        raise refusal(exc, f"XDG_CACHE_HOME: the cache folder {folder} cannot hold {files[0].name} ({cause(exc)}); "
                           f"set XDG_CACHE_HOME to a writable folder with room and a shorter path") from None
    check_room(folder, files[0].name, need)


def check_room(folder: Path, name: str, need: int) -> None:
    """Refuse (one line naming XDG_CACHE_HOME) when `folder` has less than `need` bytes free for `name`."""
    require_free(folder, need, "XDG_CACHE_HOME", f"the cache's {name}",
                 "free some space there or set XDG_CACHE_HOME to a folder with room")
