"""The links gentool does not follow: the folders it owns in this process, and the check that nothing it writes,
replaces or deletes below one is reached through a link. (Split from gentool.fileio, which does the writing and
deleting with these checks; code that checks or owns a folder itself imports them from here.)

A folder gentool owns (a run or sweep directory, a TensorBoard folder, a `sample --out` folder, the cache) is
registered with `own`; the folder itself may be a link the user made, but nothing below it is followed when
writing, replacing or deleting: a link there is refused in one line naming it (`LinkRefused`). So is a hard link to
a file gentool would write, append to, lock or delete: the file has other names, so it is not gentool's alone, and
writing it in place (a log, a lock that filelock truncates) would change the user's file under every name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gentool.errors import UsageError

_OWNED: set[str] = set()  # folders gentool owns in this process (absolute, not resolved: see `own`)


def link_kind(path: str | os.PathLike) -> str:
    """What kind of link `path` is, as a phrase: "a symbolic link (to TARGET)", "a hard link (one of N names of the
    same file)", or "" when it is neither (a folder's many names are not hard links of a file)."""
    try:
        info = os.lstat(path)
    except OSError:
        return ""
    if stat.S_ISLNK(info.st_mode):
        try:
            return f"a symbolic link (to {os.readlink(path)})"
        except OSError:
            return "a symbolic link"
    if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
        return f"a hard link (one of {info.st_nlink} names of the same file)"
    return ""


def described(path: str | os.PathLike) -> str:
    """`path` for a message about its content, saying when it is a symbolic link and to what: what was parsed is
    the link's target, which the user may not have meant (and a parse error alone would not tell)."""
    try:
        return f"{path} (a symbolic link to {os.readlink(path)})"
    except OSError:  # not a link (EINVAL), or gone
        return str(path)


class LinkRefused(UsageError):
    """A symbolic link, or a hard link to a file, where gentool would write, replace or delete: refused rather than
    followed. (Writing a hard-linked file in place changes the user's file under its other names; and a file with
    other names is not one gentool made.)"""

    def __init__(self, link: str, kind: str | None = None):
        kind = kind or link_kind(link) or "a symbolic link"
        super().__init__(f"{link} is {kind}; gentool does not write or delete anything through a link: remove the "
                         f"link, or choose another place")
        self.link = link


def own(root: str | os.PathLike) -> Path:
    """Record `root` as a folder gentool writes in (for this process). Inside a folder already owned, the way to it
    must hold no link; elsewhere `root` itself may be a link: the user named it."""
    check_inside(root)
    _OWNED.add(os.path.abspath(root))
    return Path(root)


def _chain(path: str, roots: set[str]) -> tuple[list[str], bool]:
    """`path` and its ancestors below the deepest of `roots` holding it (none when `path` is one of them), and
    whether one holds it; ([`path`], False) when none does."""
    chain, current = [], path
    while current not in roots:
        chain.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            return chain[:1], False
        current = parent
    return chain, True


def _refuse_links(parts) -> None:
    """LinkRefused naming the first of `parts` that is a symbolic link, or a hard link to a file."""
    for part in parts:
        kind = link_kind(part)
        if kind:
            raise LinkRefused(part, kind)


def refuse_hard_link(path) -> None:
    """LinkRefused when `path` is a file with other names (a symbolic link there is the caller's to judge)."""
    if (kind := link_kind(path)).startswith("a hard link"):
        raise LinkRefused(str(path), kind)


def check_no_links(path: str | os.PathLike, last: bool = True) -> Path:
    """`path` when neither it (unless `last` is off) nor any folder between it and the owned folder holding it is
    a symbolic link; LinkRefused naming the first link otherwise."""
    chain, _ = _chain(os.path.abspath(path), _OWNED)
    _refuse_links(reversed(chain if last else chain[1:]))
    return Path(path)


def check_inside(path: str | os.PathLike) -> Path:
    """`path` when no folder from the owned folder holding it down to it (itself included) is a link; LinkRefused
    naming the first link otherwise. A path no owned folder holds is not checked: the user named it."""
    chain, inside = _chain(os.path.abspath(path), _OWNED)
    if inside:
        _refuse_links(reversed(chain))
    return Path(path)


def matching(root: Path, patterns) -> list[Path]:
    """The files under `root` matching any of the glob `patterns`, when no folder between `root` and one of them is
    a link and none is a hard link (LinkRefused naming it otherwise); a match may itself be a symbolic link."""
    matches = [f for pattern in patterns for f in root.glob(pattern)]
    roots = _OWNED | {os.path.abspath(root)}
    for f in matches:
        _refuse_links(reversed(_chain(os.path.abspath(f), roots)[0][1:]))
        refuse_hard_link(f)
    return matches


def refuse_linked(root: Path, patterns) -> list[Path]:
    """Refuse, before any work, a symbolic or hard link among the files under `root` matching `patterns` (the files
    a command will write, replace or delete there), naming the first; returns those files, for further checks."""
    files = matching(root, patterns)
    for f in files:
        if os.path.islink(f):
            raise LinkRefused(str(f))
    return files
