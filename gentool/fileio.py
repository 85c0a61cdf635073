"""Everything gentool does on disk goes through here: atomic writes, reads that refuse special files, the folders
gentool owns and the links it will not follow out of them. (The paths a command is given are checked with these in
gentool.paths; damaged cache entries are moved aside by gentool.cache.)

Writes are atomic: a temporary sibling is written, flushed to disk, then renamed over the target, so a kill at any
moment leaves either the previous version or the new one, never a torn file. Paths are checked before use, and a
path that cannot be read or written is one line naming the argument and the real cause.

Links. A folder gentool owns is registered with `own`; nothing below it is followed when writing, replacing or
deleting (gentool.links checks that, and names the link it refuses). Lock files are created here too (O_NOFOLLOW),
since older filelock versions open the lock path following links and truncating. A file gentool wrote and writes
again (sweep.json, a run's config.json on --resume, cache entries) is read without following a link (`follow=False`),
and a link there is named as the reason it is refused.

Special files. A named pipe, device or socket where a regular file is expected would block `open` forever (a pipe)
or read without end (a device). `open_regular` opens without blocking and checks what it opened (fstat on the open
descriptor, so the file checked is the file read); every read of a file gentool did not just write uses it. A file
refused unread says why in its OSError's strerror ("it is a named pipe, not a regular file", "it is larger than
256 MiB, ...", "it is a symbolic link (to X), ..."), so that every reader's message names the reason rather than a
parse error further down.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from pathlib import Path

from gentool import undo
from gentool.errors import GentoolError, UsageError
# the link checks each write, replacement and deletion here makes (callers that check links import gentool.links)
from gentool.links import LinkRefused, check_no_links, link_kind, matching, refuse_hard_link

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
# POSIX flags (0 where the system has none: Windows has no named pipes in the file system to block on)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ALWAYS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # on every open (O_BINARY: Windows, as bytes)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def cause(exc: BaseException) -> str:
    """An OS error's cause as a phrase ("Permission denied", "it is a named pipe, not a regular file"); another
    error's own text."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def kind_of(mode: int) -> str:
    """What a file of this st_mode is, as a phrase ("a named pipe", ...; "a regular file")."""
    return next((kind for test, kind in _KINDS if test(mode)), "a regular file")


def what_stands(path: str | os.PathLike) -> str:
    """What stands at `path` (which exists), link or not, as a phrase: 'a symbolic link (to …)', 'a hard link (…)',
    'a named pipe', 'a directory', …, 'a regular file'."""
    return link_kind(path) or kind_of(os.lstat(path).st_mode)


def special_file(path: str | os.PathLike) -> str | None:
    """Why gentool will not replace what stands at `path`, as the words after its name ("is a character device, not
    a regular file; ..."), when it is a device, a named pipe or a socket; None when nothing, a regular file, a folder
    (the caller's to judge) or a link (`check_no_links`'s) is there. Renaming a result over /dev/null (`--out
    /dev/null --overwrite`) deleted the device for the whole machine."""
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    return f"is {kind_of(mode)}, not a regular file; gentool replaces only regular files"


def refuse_special(path: str | os.PathLike) -> None:
    """UsageError (exit 2) when `special_file` finds a device, a pipe or a socket at `path`, about to be replaced."""
    why = special_file(path)
    if why:
        raise UsageError(f"{path} {why}")


# --- reading: regular files only ---------------------------------------------------------------------------------

class NotRegular(OSError):
    """A special file (or a folder) where a regular file is expected. An OSError, so that every reader's existing
    handling of unreadable files applies; `strerror` says what the file is."""

    def __init__(self, path, kind: str):
        super().__init__(errno.EINVAL, f"it is {kind}, not a regular file", str(path))
        self.kind = kind


def open_regular(path: str | os.PathLike, follow: bool = True):
    """`path` opened for binary reading, when it is a regular file; NotRegular (an OSError) otherwise. A link to one
    is fine unless `follow` is off: a file gentool wrote itself and will write again (a sweep's sweep.json, a run's
    config.json on --resume, a cache entry) is never read through a link, and the link is named as the reason.
    Opened with O_NONBLOCK, so a named pipe cannot block, and checked with fstat on the descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _ALWAYS | (0 if follow else _NOFOLLOW))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device with no driver) cannot be opened at all
            raise NotRegular(path, kind_of(os.stat(path).st_mode)) from None
        if not follow and os.path.islink(path):  # ELOOP (EMLINK on some BSDs): the link, not what it leads to
            raise NotRegular(path, link_kind(path)) from None
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


MISSING = "does not exist"


def not_regular(path: str | os.PathLike) -> str | None:
    """Why `path` is not a regular file to read, as the words that follow its name in a message: MISSING ("does not
    exist": nothing there), "is a named pipe, not a regular file" (a folder, a device, a socket alike), "(a symbolic
    link to /dev/zero) is a character device, not a regular file", "is a symbolic link to X, which does not exist",
    "cannot be looked at (Permission denied)"; None for a regular file (or a link to one). Looks with stat only, so
    a pipe there cannot block. The three cases a reader must tell apart (missing, not a regular file, unreadable)
    each have their own words, the same wherever a command names the file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"is {_link_to(path)}, which does not exist" if os.path.islink(path) else MISSING
    except OSError as exc:  # a link loop, a name too long, no permission on a folder above
        return f"cannot be looked at ({cause(exc)})"
    if stat.S_ISREG(info.st_mode):
        return None
    through = f"({_link_to(path)}) " if os.path.islink(path) else ""
    return f"{through}is {kind_of(info.st_mode)}, not a regular file"


def cannot_read(path: str | os.PathLike, exc: OSError) -> str:
    """The words for `path` refused unread with `exc`: "X is a named pipe, not a regular file" (and the others of
    `not_regular`), else "cannot read X (cause)" (too large, a link where none is followed, permission denied)."""
    why = not_regular(path)
    return f"{path} {why}" if why not in (None, MISSING) else f"cannot read {path} ({cause(exc)})"


def _link_to(path) -> str:
    try:
        return f"a symbolic link to {os.readlink(path)}"
    except OSError:  # gone since
        return "a symbolic link"


def _block(fd: int) -> None:
    """Reads and writes on `fd` wait again (it was opened without blocking only so that opening cannot hang)."""
    if _NONBLOCK:
        os.set_blocking(fd, True)


def read_regular(path: str | os.PathLike, limit: int | None = None, follow: bool = True) -> bytes:
    """A regular file's bytes; with `limit`, at most limit + 1 of them (the caller compares, to refuse a file
    larger than it reads even when the size on disk lies; `read_bounded` refuses it itself)."""
    with open_regular(path, follow) as f:
        if limit is None:
            return f.read()
        # in blocks: f.read(limit + 1) would allocate the whole limit (256 MiB for JSON) up front, for any file
        chunks, total = [], 0
        while total <= limit and (chunk := f.read(min(1 << 16, limit + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)


class TooLarge(OSError):
    """A file larger than gentool reads of its kind: an OSError like any unreadable file, whose `strerror` says so
    (and not a parse error further down: the file is refused, not read)."""

    def __init__(self, path, limit: int):
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit:,} bytes"
        super().__init__(errno.EFBIG, f"it is larger than {size}, the most gentool reads of such a file", str(path))


def read_bounded(path: str | os.PathLike, limit: int, follow: bool = True) -> bytes:
    """A regular file's bytes, all of them; TooLarge when there are more than `limit` (counted as read, so a size
    on disk that lies changes nothing), NotRegular for anything but a regular file (a link too, unless `follow`)."""
    data = read_regular(path, limit, follow)
    if len(data) > limit:
        raise TooLarge(path, limit)
    return data


@contextlib.contextmanager
def regular_path(path: str | os.PathLike, follow: bool = True):
    """A path naming the regular file at `path` as opened and checked here (`open_regular`), for libraries that
    open by name (safetensors, torchvision): on Linux /proc/self/fd/N, the very file checked; elsewhere `path`."""
    with open_regular(path, follow) as f:
        pinned = f"/proc/self/fd/{f.fileno()}"
        yield pinned if os.path.exists(pinned) else str(path)


MAX_JSON_BYTES = 256 << 20  # the largest JSON file gentool reads (a sweep of MAX_TRIALS trials is far below it)


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES, follow: bool = True):
    """Parse a JSON file (a regular file of at most `limit` bytes: `read_bounded`); a document nested too deeply
    for the parser is a ValueError like any invalid one."""
    data = read_bounded(path, limit, follow)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:  # the parser recurses once per level
        raise ValueError(f"{path}: nested too deeply") from None


# --- folders, deletions and appends: never through a link (the checks: gentool.links) -----------------------------

def make_dirs(path: str | os.PathLike) -> Path:
    """Create a folder (and its parents) that gentool writes in, refusing a link on the way from the owned folder."""
    check_no_links(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def remove_file(path: str | os.PathLike) -> None:
    """Delete a file gentool wrote, if it is there. A symbolic link at `path` is removed itself (its target is never
    touched); a hard link there (a file with other names: not gentool's alone) and a link on the way to it from the
    owned folder are refused."""
    check_no_links(path, last=False)
    refuse_hard_link(path)
    Path(path).unlink(missing_ok=True)


def remove_matching(root: Path, patterns) -> None:
    """Delete the files under `root` matching any of the glob `patterns`. Every match is checked before the first
    is deleted, so a folder that is a link (whose glob would reach the link's target) refuses the whole clean-up."""
    for f in matching(root, patterns):
        f.unlink(missing_ok=True)


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
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegular(path, kind_of(info.st_mode))
    if info.st_nlink > 1:  # made a hard link since the check: appending would write the user's file too
        os.close(fd)
        raise LinkRefused(os.path.abspath(path), f"a hard link (one of {info.st_nlink} names of the same file)")
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
    A link at `path`, or between it and the folder gentool owns there, is refused (LinkRefused), and so is a file
    there that is not a regular one (`refuse_special`)."""
    path = check_no_links(path)
    refuse_special(path)
    removal = None
    try:
        (tmp, fd), removal = _new_temporary(path)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        removal.forget()
    except OSError as exc:
        if removal:
            removal.run()
        kept = "the previous version is kept" if os.path.lexists(path) else "nothing was written there"
        raise GentoolError(f"cannot write {path}: {cause(exc)}; {kept}") from None
    except BaseException:
        if removal:
            removal.run()
        raise


def _new_temporary(path: Path) -> tuple[tuple[str, int], undo.Pending]:
    """A new temporary beside `path` and its removal, registered in the same step (`undo.created`) so that it runs
    however the process leaves before the temporary is renamed into place: also when a Ctrl-C inside an import
    ends it at once (gentool.cli.on_sigint)."""
    return undo.created(lambda: _create_temporary(path), lambda made: Path(made[0]).unlink(missing_ok=True))


@contextlib.contextmanager
def staged(path: str | os.PathLike):
    """The path of an empty temporary sibling of `path` (same folder, so renaming it onto `path` is atomic), for a
    writer that takes a file name rather than a file: the caller renames it when complete; otherwise it is removed
    on the way out, whatever happened."""
    path = check_no_links(path)
    refuse_special(path)
    try:
        (tmp, fd), removal = _new_temporary(path)
        os.close(fd)
    except OSError as exc:
        raise GentoolError(f"cannot write {path}: {cause(exc)}") from None
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
