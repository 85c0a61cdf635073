"""MNIST's idx files, read here rather than by torchvision's reader, which reads the whole file into memory, copies
it, then checks the header with `assert`: a wrong magic number was an AssertionError traceback, a type code outside
its table a KeyError, and a file of gigabytes was read (twice over) before its size was compared with its header.
Here every header field is checked, and the file's size held against the size the header claims, before one byte
of data is read; the data are then read once, into the array returned."""

from __future__ import annotations

import math
import os
import struct

import numpy as np

UNSIGNED_BYTE = 0x08  # the idx type code of MNIST's files (the only one gentool reads)


class IdxError(ValueError):
    """An idx file that is not what it should be; the message says what is wrong with it (no file name)."""


def read_idx(path: str | os.PathLike, shape: tuple[int | None, ...], max_bytes: int) -> np.ndarray:
    """The uint8 array of the idx file at `path`, whose dimensions must match `shape` (None: any size; the number
    of dimensions is len(shape)) and whose data may take at most `max_bytes`. IdxError saying what is wrong; an
    OSError (NotRegular for a pipe or a folder) when the file cannot be read."""
    from gentool.fileio import open_regular  # a named pipe there cannot block the read

    ndim = len(shape)
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = f.read(4 + 4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise IdxError(f"it ends after {len(header)} bytes, inside its {4 + 4 * ndim}-byte header")
        magic, *dims = struct.unpack(f">I{ndim}I", header)
        if magic != UNSIGNED_BYTE << 8 | ndim:
            raise IdxError(f"its magic number is 0x{magic:08X}; expected 0x{UNSIGNED_BYTE << 8 | ndim:08X} (unsigned "
                           f"bytes in {ndim} dimension{'s' if ndim > 1 else ''})")
        if any(want is not None and got != want for got, want in zip(dims, shape)):
            raise IdxError(f"its header says {'x'.join(map(str, dims))}; expected "
                           f"{'x'.join('N' if s is None else str(s) for s in shape)}")
        count = math.prod(dims)
        if count > max_bytes:
            raise IdxError(f"its header claims {count:,} bytes of data; at most {max_bytes:,} are read")
        if size != len(header) + count:
            raise IdxError(f"it holds {size - len(header):,} bytes after its header, which says {count:,}")
        data = np.empty(count, np.uint8)
        view, done = memoryview(data), 0
        while done < count and (got := f.readinto(view[done:])):
            done += got
    if done != count:
        raise IdxError(f"it ended after {done:,} of its {count:,} bytes of data (changed while read)")
    return data.reshape(dims)
