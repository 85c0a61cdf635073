"""What is installed: the distributions' entry points (plugins) and versions, read without blocking.

importlib.metadata reads every installed distribution's `entry_points.txt` to find one group's entry points, and a
distribution's `METADATA` for its name or version, each with a plain open(): a named pipe there blocks forever
(`gentool models`, and every command that loads plugins or hooks, hung), a link to a device reads without end and a
link loop is an OSError it does not catch. So each distribution's metadata files are looked at first (stat, which
opens nothing): one that is not a regular file of a sane size is skipped with a one-line warning naming it, and
the others are read as importlib.metadata reads them.

Each distribution's verdict is taken once per process (`_verdicts`): the start-up pass that hides unreadable
packages from every reader (`hide_unreadable`) and the later entry-point and version look-ups share it, instead of
stat-ing every package's files again.

The size of the work is bounded whatever a package declares: importlib.metadata parses a distribution's whole
entry_points.txt on every look-up of a group (torch's, triton's and gentool's own), so one is read only up to
MAX_ENTRY_POINTS_BYTES (a larger one is warned about and its package skipped like an unreadable one), and of one
group at most MAX_PER_DISTRIBUTION entry points of a distribution are taken (each may be imported: the rest are
named in one warning). A package declaring 200,000 broken entry points was 200,000 imports and warnings.
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
# The largest entry_points.txt in this project's environment is setuptools' (2.4 KB, 44 entry points): 256 KiB
# (some 10,000 entry points) is a hundred times that, and parses in well under a second.
MAX_ENTRY_POINTS_BYTES = 256 << 10
MAX_PER_DISTRIBUTION = 100  # entry points of one group taken from one distribution (gentool's: models, hooks)
_warned: set[str] = set()
_verdicts: dict[str, str | None] = {}  # a distribution's folder → `problem`'s verdict, taken once per process


def problem(dist) -> str | None:
    """Why `dist`'s metadata files cannot be read safely (one phrase naming the file), or None; looked at once per
    process for each distribution's folder."""
    folder = getattr(dist, "_path", None)  # a PathDistribution's .dist-info/.egg-info folder (None: other kinds)
    if folder is None:
        return None
    if str(folder) not in _verdicts:
        _verdicts[str(folder)] = _look(folder)
    return _verdicts[str(folder)]


def _look(folder) -> str | None:
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
        if name == "entry_points.txt" and info.st_size > MAX_ENTRY_POINTS_BYTES:
            return (f"{path} is {info.st_size:,} bytes; an entry_points.txt gentool reads is at most "
                    f"{MAX_ENTRY_POINTS_BYTES >> 10} KiB")
    return None


def _usable(dist) -> bool:
    why = problem(dist)
    if why and why not in _warned:  # once per process: plugins and hooks both look
        _warned.add(why)
        warnings.warn(f"gentool: an installed package's metadata is not read: {why}")
    return why is None


def entry_points(group: str) -> list[md.EntryPoint]:
    """The entry points of `group` (importlib.metadata.entry_points(group=...)), from distributions whose metadata
    files are regular files: the first distribution of a name on sys.path wins, as there. At most
    MAX_PER_DISTRIBUTION of one distribution (the rest are warned about, in one line)."""
    seen: set[str] = set()
    found: list[md.EntryPoint] = []
    for dist in md.distributions():
        if not _usable(dist):
            continue
        key = getattr(dist, "_normalized_name", None) or re.sub(r"[-_.]+", "_", (dist.metadata["Name"] or "").lower())
        if key in seen:
            continue
        seen.add(key)
        found.extend(_bounded(dist, group))
    return found


def _bounded(dist, group: str) -> list[md.EntryPoint]:
    selected = list(dist.entry_points.select(group=group))
    if len(selected) > MAX_PER_DISTRIBUTION:
        name = dist.metadata["Name"] or str(getattr(dist, "_path", "?"))
        warnings.warn(f"gentool: the package {name!r} declares {len(selected):,} {group} entry points; gentool takes "
                      f"at most {MAX_PER_DISTRIBUTION} of one package: the first {MAX_PER_DISTRIBUTION} are used")
    return selected[:MAX_PER_DISTRIBUTION]


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
