"""What is installed: the distributions' entry points (plugins) and versions, read without blocking.

importlib.metadata reads every installed distribution's `entry_points.txt` to find one group's entry points, and a
distribution's `METADATA` for its name or version, each with a plain open(): a named pipe there blocks forever
(`gentool models`, and every command that loads plugins or hooks, hung), a link to a device reads without end and a
link loop is an OSError it does not catch. So each distribution's metadata files are looked at first (stat, which
opens nothing): one that is not a regular file of a sane size is skipped with a one-line warning naming it, and
the others are read as importlib.metadata reads them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata as md
import os
import re
import stat
import warnings

from gentool.fileio import kind_of

FILES = ("entry_points.txt", "METADATA", "PKG-INFO")  # what importlib.metadata reads of a distribution
MAX_BYTES = 16 << 20  # a package's metadata is kilobytes (long descriptions: some hundred); more is not metadata
_warned: set[str] = set()


def problem(dist) -> str | None:
    """Why `dist`'s metadata files cannot be read safely (one phrase naming the file), or None."""
    folder = getattr(dist, "_path", None)  # a PathDistribution's .dist-info/.egg-info folder (None: other kinds)
    if folder is None:
        return None
    for name in FILES:
        path = os.path.join(str(folder), name)
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:  # a link loop (ELOOP), a name too long: importlib.metadata would raise it
            return f"{path}: {exc.strerror or exc}"
        if stat.S_ISDIR(info.st_mode):
            continue  # importlib.metadata takes a folder there for a missing file
        if not stat.S_ISREG(info.st_mode):
            return f"{path} is {kind_of(info.st_mode)}, not a regular file"
        if info.st_size > MAX_BYTES:
            return f"{path} is {info.st_size:,} bytes; package metadata is at most {MAX_BYTES >> 20} MiB"
    return None


def _usable(dist) -> bool:
    why = problem(dist)
    if why and why not in _warned:  # once per process: plugins and hooks both look
        _warned.add(why)
        warnings.warn(f"gentool: an installed package's metadata is not read: {why}")
    return why is None


def entry_points(group: str) -> list[md.EntryPoint]:
    """The entry points of `group` (importlib.metadata.entry_points(group=...)), from distributions whose metadata
    files are regular files: the first distribution of a name on sys.path wins, as there."""
    seen: set[str] = set()
    found: list[md.EntryPoint] = []
    for dist in md.distributions():
        if not _usable(dist):
            continue
        key = getattr(dist, "_normalized_name", None) or re.sub(r"[-_.]+", "_", (dist.metadata["Name"] or "").lower())
        if key in seen:
            continue
        seen.add(key)
        found.extend(dist.entry_points.select(group=group))
    return found


def hide_unreadable() -> None:
    """Keep every reader of package metadata in this process (torch's device-backend autoloading, triton's backend
    discovery, gentool's plugins) from blocking on a package whose metadata is no regular file: when there is one
    (warned, naming it), importlib.metadata's path finder stops listing it. Nothing changes when there is none."""
    bad = {str(dist._path) for dist in md.distributions() if not _usable(dist)}
    if not bad:
        return
    finder = importlib.machinery.PathFinder  # the finder on sys.meta_path that lists installed distributions
    listed = finder.find_distributions

    def find_distributions(*args, **kwargs):
        return (d for d in listed(*args, **kwargs) if str(getattr(d, "_path", "")) not in bad)

    finder.find_distributions = find_distributions


def version(name: str) -> str | None:
    """The installed version of distribution `name`; None when it is not installed or its metadata is unreadable
    (warned)."""
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    return dist.version if _usable(dist) else None
