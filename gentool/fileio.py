"""Files in and out. Writes are atomic: a temporary sibling is written, flushed to disk, then renamed over the
target, so a kill at any moment leaves either the previous version or the new one, never a torn file. Paths are
checked before use, and a path that cannot be read or written is one line naming the argument and the real cause.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from gentool.errors import GentoolError, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
          (stat.S_ISSOCK, "a socket"))


def _cause(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """A binary file to write `path` through: on a clean exit it is flushed, synced and renamed over `path`; on an
    error the temporary is removed and `path` is untouched. OS errors become one line (the previous version kept)."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp makes owner-only files; give the result the permissions an ordinary open() would.
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise GentoolError(f"cannot write {path}: {_cause(exc)}; the previous version is kept") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged(path: str | os.PathLike):
    """The path of an empty temporary sibling of `path` (same folder, so renaming it onto `path` is atomic), for a
    writer that takes a file name rather than a file: the caller renames it when complete; otherwise it is removed
    on the way out, whatever happened."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, _FILE_MODE)
    except OSError as exc:
        raise GentoolError(f"cannot write {path}: {_cause(exc)}") from None
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (same folder, fsync, rename)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy `src` to `dst` atomically (in blocks, never the whole file in memory)."""
    with open(src, "rb") as source, atomic_open(dst) as target:
        shutil.copyfileobj(source, target, 1 << 20)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 in hex, read in blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike):
    """Parse a JSON file; a document nested too deeply for the parser is a ValueError like any invalid one."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except RecursionError:  # the parser recurses once per level
            raise ValueError(f"{path}: nested too deeply") from None


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
        raise UsageError(f"{arg}: cannot access {path} ({_cause(exc)}); expected {expected}") from None
    link = f" (a symbolic link to {os.readlink(path)})" if path.is_symlink() else ""
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{arg}: {path}{link} is a directory; expected {expected}")
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise UsageError(f"{arg}: {path}{link} is {kind}, not a regular file; expected {expected}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{arg}: {path} is not readable (permission denied); expected {expected}")
    return path


def prepare_output(path: str | os.PathLike, arg: str, folder: bool = False) -> Path:
    """Make sure `path` (a file, or a folder when `folder`) can be written before any work is done: its folder is
    created if needed and a probe file written there. Fails with one line naming `arg` and the cause."""
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
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gentool-write-test.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise bad_output(arg, path, f"cannot be written ({_cause(exc)})") from None
    return path


def bad_output(arg: str, path: Path, problem: str) -> UsageError:
    return UsageError(f"{arg}: {path} {problem}")
