"""Everything gentool does on disk goes through here: atomic writes, reads that refuse special files, the folders
gentool owns and the links it will not follow out of them. (The paths a command is given are checked with these in
gentool.paths; damaged cache entries are moved aside by gentool.cache.)

Writes are atomic: a temporary sibling is written, flushed to disk, then renamed over the target, so a kill at any
moment leaves either the previous version or the new one, never a torn file. Paths are checked before use, and a
path that cannot be read or written is one line naming the argument and the real cause.

Links. A folder gentool owns (a run or sweep directory, a TensorBoard folder, a `sample --out` folder, the cache) is
registered with `own`; the folder itself may be a link the user made, but nothing below it is followed when
writing, replacing or deleting: a link there is refused in one line naming it (`LinkRefused`). Lock files are
created here too (O_NOFOLLOW), since older filelock versions open the lock path following links and truncating.

Special files. A named pipe, device or socket where a regular file is expected would block `open` forever (a pipe)
or read without end (a device). `open_regular` opens without blocking and checks what it opened (fstat on the open
descriptor, so the file checked is the file read); every read of a file gentool did not just write uses it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import stat
from pathlib import Path

from gentool import undo
from gentool.errors import GentoolError, UsageError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
# POSIX flags (0 where the system has none: Windows has no named pipes in the file system to block on)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ALWAYS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # on every open (O_BINARY: Windows, as bytes)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_OWNED: set[str] = set()  # folders gentool owns in this process (absolute, not resolved: see `own`)


def cause(exc: OSError) -> str:
    """An OS error's cause as a phrase ("Permission denied")."""
    return exc.strerror or type(exc).__name__


def kind_of(mode: int) -> str:
    """What a file of this st_mode is, as a phrase ("a named pipe", ...; "a regular file")."""
    return next((kind for test, kind in _KINDS if test(mode)), "a regular file")


# --- reading: regular files only ---------------------------------------------------------------------------------

class NotRegular(OSError):
    """A special file (or a folder) where a regular file is expected. An OSError, so that every reader's existing
    handling of unreadable files applies; `strerror` says what the file is."""

    def __init__(self, path, kind: str):
        super().__init__(errno.EINVAL, f"it is {kind}, not a regular file", str(path))
        self.kind = kind


def open_regular(path: str | os.PathLike):
    """`path` opened for binary reading, when it is a regular file (links to one are fine); NotRegular (an OSError)
    otherwise. Opened with O_NONBLOCK, so a named pipe cannot block, and checked with fstat on the descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _ALWAYS)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device with no driver) cannot be opened at all
            raise NotRegular(path, kind_of(os.stat(path).st_mode)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(path, kind_of(mode))
        _block(fd)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _block(fd: int) -> None:
    """Reads and writes on `fd` wait again (it was opened without blocking only so that opening cannot hang)."""
    if _NONBLOCK:
        os.set_blocking(fd, True)


def read_regular(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """A regular file's bytes; with `limit`, at most limit + 1 of them (the caller compares, to refuse a file
    larger than it reads even when the size on disk lies)."""
    with open_regular(path) as f:
        return f.read() if limit is None else f.read(limit + 1)


@contextlib.contextmanager
def regular_path(path: str | os.PathLike):
    """A path naming the regular file at `path` as opened and checked here, for libraries that open by name
    (safetensors, torchvision): on Linux /proc/self/fd/N, the very file checked; elsewhere `path` itself."""
    with open_regular(path) as f:
        pinned = f"/proc/self/fd/{f.fileno()}"
        yield pinned if os.path.exists(pinned) else str(path)


def read_json(path: str | os.PathLike):
    """Parse a JSON file (a regular file only); a document nested too deeply for the parser is a ValueError like
    any invalid one."""
    with open_regular(path) as f:
        try:
            return json.loads(f.read().decode("utf-8"))
        except RecursionError:  # the parser recurses once per level
            raise ValueError(f"{path}: nested too deeply") from None


# --- the folders gentool owns, and the links it does not follow out of them --------------------------------------

class LinkRefused(UsageError):
    """A symbolic link where gentool would write, replace or delete: refused rather than followed."""

    def __init__(self, link: str):
        try:
            target = f" (to {os.readlink(link)})"
        except OSError:
            target = ""
        super().__init__(f"{link} is a symbolic link{target}; gentool does not write or delete anything through a "
                         f"link: remove the link, or choose another place")
        self.link = link


def own(root: str | os.PathLike) -> Path:
    """Record `root` as a folder gentool writes in (for this process). Inside a folder already owned, the way to it
    must hold no link; elsewhere `root` itself may be a link: the user named it."""
    path = os.path.abspath(root)
    chain, inside = _chain(path, _OWNED)
    if inside:
        _refuse_links(reversed(chain))
    _OWNED.add(path)
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
    for part in parts:
        if os.path.islink(part):
            raise LinkRefused(part)


def check_no_links(path: str | os.PathLike, last: bool = True) -> Path:
    """`path` when neither it (unless `last` is off) nor any folder between it and the owned folder holding it is
    a symbolic link; LinkRefused naming the first link otherwise."""
    chain, _ = _chain(os.path.abspath(path), _OWNED)
    _refuse_links(reversed(chain if last else chain[1:]))
    return Path(path)


def make_dirs(path: str | os.PathLike) -> Path:
    """Create a folder (and its parents) that gentool writes in, refusing a link on the way from the owned folder."""
    check_no_links(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def remove_file(path: str | os.PathLike) -> None:
    """Delete a file gentool wrote, if it is there. A link at `path` is removed itself (its target is never
    touched); a link on the way to it from the owned folder is refused."""
    check_no_links(path, last=False)
    Path(path).unlink(missing_ok=True)


def remove_matching(root: Path, patterns) -> None:
    """Delete the files under `root` matching any of the glob `patterns`. Every match is checked before the first
    is deleted, so a folder that is a link (whose glob would reach the link's target) refuses the whole clean-up."""
    for f in matching(root, patterns):
        f.unlink(missing_ok=True)


def matching(root: Path, patterns) -> list[Path]:
    """The files under `root` matching any of the glob `patterns`, when no folder between `root` and one of them is
    a link (LinkRefused naming it otherwise); a match may itself be a link."""
    matches = [f for pattern in patterns for f in root.glob(pattern)]
    roots = _OWNED | {os.path.abspath(root)}
    for f in matches:
        _refuse_links(reversed(_chain(os.path.abspath(f), roots)[0][1:]))
    return matches


def _open_checked(path, flags: int) -> int:
    """A descriptor for `path` opened with `flags` plus O_NOFOLLOW and O_NONBLOCK, when it is a regular file."""
    check_no_links(path)
    try:
        fd = os.open(path, flags | _NONBLOCK | _NOFOLLOW | _ALWAYS, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(os.path.abspath(path)) from None
        if exc.errno == errno.ENXIO:  # a pipe with no reader, a socket
            raise NotRegular(path, kind_of(os.lstat(path).st_mode)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegular(path, kind_of(mode))
    _block(fd)
    return fd


def create_lock_file(path: str | os.PathLike) -> None:
    """Make sure the lock file at `path` exists as a regular file, created without following a link: filelock then
    opens it by name, and some of the versions gentool allows follow a link there and truncate its target."""
    os.close(_open_checked(path, os.O_RDWR | os.O_CREAT))


def open_append(path: str | os.PathLike):
    """A log file opened for appending (created if needed), never through a link."""
    return os.fdopen(_open_checked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


# --- writing: atomic, never through a link ------------------------------------------------------------------------

def temporary_name(name: str) -> str:
    """The name of the temporary a write of `name` goes through (`.NAME.XXXXXXXX.tmp`, which clean-ups match)."""
    return f".{name}.{secrets.token_hex(4)}.tmp"


def _create_temporary(path: Path) -> tuple[str, int]:
    """A new temporary beside `path`, created exclusively (O_EXCL, so never through a link), with the permissions
    an ordinary open() would give (0o666 less the umask)."""
    for _ in range(100):
        tmp = str(path.parent / temporary_name(path.name))
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _ALWAYS, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file to write `path` through: on a clean exit it is flushed, synced and renamed over `path`; on an
    error the temporary is removed and `path` is untouched. OS errors become one line (the previous version kept).
    A link at `path`, or between it and the folder gentool owns there, is refused (LinkRefused)."""
    path = check_no_links(path)
    removal = None
    try:
        tmp, fd = _create_temporary(path)
        removal = _removal(tmp)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        removal.forget()
    except OSError as exc:
        if removal:
            removal.run()
        raise GentoolError(f"cannot write {path}: {cause(exc)}; the previous version is kept") from None
    except BaseException:
        if removal:
            removal.run()
        raise


def _removal(tmp: str) -> undo.Pending:
    """The removal of a temporary, registered so that it runs however the process leaves before the temporary is
    renamed into place: also when a Ctrl-C inside an import ends it at once (gentool.cli.on_sigint)."""
    return undo.Pending(lambda: Path(tmp).unlink(missing_ok=True))


@contextlib.contextmanager
def staged(path: str | os.PathLike):
    """The path of an empty temporary sibling of `path` (same folder, so renaming it onto `path` is atomic), for a
    writer that takes a file name rather than a file: the caller renames it when complete; otherwise it is removed
    on the way out, whatever happened."""
    path = check_no_links(path)
    try:
        tmp, fd = _create_temporary(path)
        os.close(fd)
    except OSError as exc:
        raise GentoolError(f"cannot write {path}: {cause(exc)}") from None
    removal = _removal(tmp)
    try:
        yield Path(tmp)
    finally:
        removal.run()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (same folder, fsync, rename)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy `src` to `dst` atomically (in blocks, never the whole file in memory)."""
    with open_regular(src) as source, atomic_open(dst) as target:
        shutil.copyfileobj(source, target, 1 << 20)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 in hex, read in blocks (never the whole file in memory), from a regular file only."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_probe(folder: Path, length: int) -> None:
    """Create and delete a file with a name of `length` characters in `folder`: where a run's longest path fits,
    the probe does too (its total length and its name's both), so a path too long fails now, not after an epoch.
    The name is new (O_EXCL), so no file already there, nor a link, is ever written."""
    base = f".gentool-write-test.{secrets.token_hex(4)}."
    probe = folder / (base + "x" * max(0, length - len(base)))
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _ALWAYS, 0o600)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(probe)


def _scalar(item) -> float | None:
    """A numpy or torch scalar's number (a hook's forgotten `.item()`); None for anything else JSON cannot hold."""
    if isinstance(item, (set, bytes)) or getattr(item, "ndim", 0) != 0:
        return None
    try:
        return float(item)
    except (TypeError, ValueError):
        return None


def null_nonfinite(value, field: str = "") -> list[str]:
    """Replace, in place, every NaN or infinite number in the dicts and lists of `value` by None (JSON has no such
    numbers), and every value JSON cannot hold (a set, an object a hook put there) too; a tuple becomes a list and
    a numpy or torch scalar its number. Returns the fields replaced. In place, so that whoever holds a part (a hook,
    its record) sees it."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    replaced = []
    for key, item in list(items):
        where = f"{field}[{key}]" if isinstance(value, list) else f"{field}.{key}" if field else str(key)
        if isinstance(item, tuple):
            item = value[key] = list(item)
        elif not isinstance(item, (dict, list, str, int, float, type(None))):
            item = value[key] = _scalar(item)
            if item is None:
                replaced.append(where)
                continue
        if isinstance(item, float) and not math.isfinite(item):
            value[key] = None
            replaced.append(where)
        else:
            replaced += null_nonfinite(item, where)
    return replaced
