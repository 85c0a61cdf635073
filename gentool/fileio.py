"""Atomic file writes: write a temporary sibling, flush it to disk, then rename over the target.

A kill at any moment therefore leaves either the previous version or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gentool.errors import GentoolError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes owner-only files; give the result the permissions an ordinary open() would.
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GentoolError(f"cannot write {path}: {exc.strerror or exc}; the previous version is kept") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def read_json(path: str | os.PathLike):
    """Parse a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
