"""Reading files a report embeds, which may be hostile: each read is bounded in bytes before anything is parsed,
JSON records are type-checked field by field, and images are checked by signature and header (size in pixels)
before they are embedded. Nothing is unpickled."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from gentool.errors import GentoolError
from gentool.fileio import MISSING, cannot_read, not_regular, read_regular
from gentool.links import described

MAX_JSON_BYTES = 64 * 2**20  # metrics.json of a 10,000-epoch run is a few MB
MAX_IMAGE_BYTES = 25 * 2**20  # a common e-mail attachment limit: one image above it makes no sense to embed
MAX_PIXELS = 50_000_000  # a sweep's sample matrix of 100 trials is ~3,000 × 5,000
MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"GIF87a": "image/gif", b"GIF89a": "image/gif"}


@dataclass
class Picture:
    """An image file's bytes for embedding, with what a reader without the image is told (alt) and shown (caption)."""

    data: bytes
    mime: str
    width: int
    height: int
    alt: str
    caption: str


def read_limited(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them (a one-line error above that): reading stops there even when
    the size on disk lies (a file still growing, a special file behind a link)."""
    try:
        data = read_regular(path, limit)
    except OSError as exc:  # said as everywhere else: "X is a named pipe, not a regular file", "cannot read X (...)"
        raise GentoolError(cannot_read(path, exc)) from None
    if len(data) > limit:
        raise GentoolError(f"{path}: larger than the {limit / 2**20:.0f} MiB a report reads")
    return data


def readable(path: Path, notes: list[str]) -> bool:
    """Whether a regular file is at `path` to read. Something else there (a pipe, a folder, a device, a dangling
    link, a file that cannot be looked at) is named in a note as left out; nothing there is no note: what a missing
    file means is the caller's to say."""
    why = not_regular(path)
    if why not in (None, MISSING):
        notes.append(f"{path} {why}; left out")
    return why is None


def read_json_file(path: Path, limit: int = MAX_JSON_BYTES):
    """Parse a JSON file of at most `limit` bytes; a one-line error naming the file otherwise."""
    data = read_limited(path, limit)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GentoolError(f"{described(path)}: not valid JSON ({exc})") from None


def as_object(value, where: str) -> dict:
    """`value` if it is a JSON object; a one-line error naming `where` otherwise."""
    if not isinstance(value, dict):
        raise GentoolError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def clean_events(events, where: str) -> list[dict]:
    """metrics.json's events: objects with an integer epoch and text kind and message (other fields kept if scalar)."""
    if not isinstance(events, list):
        raise GentoolError(f"{where}: \"events\" must be a list")
    clean = []
    for i, event in enumerate(events):
        event = as_object(event, f"{where}: events[{i}]")
        if not (is_number(event.get("epoch")) and isinstance(event.get("kind", ""), str)
                and isinstance(event.get("message", ""), str)):
            raise GentoolError(f"{where}: events[{i}] needs a numeric epoch and text kind and message")
        clean.append({k: v for k, v in event.items() if is_scalar(v)})
    return clean


def picture(data: bytes, alt: str, caption: str, where: str = "image") -> Picture:
    """Bytes checked to be a PNG or GIF (by signature and by decoding the header) with their size in pixels."""
    from PIL import Image, UnidentifiedImageError

    mime = next((m for magic, m in MAGIC.items() if data.startswith(magic)), None)
    if mime is None:
        raise GentoolError(f"{where}: not a PNG or GIF file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise GentoolError(f"{where}: unreadable image ({exc})") from None
    if width * height > MAX_PIXELS:  # a small file can claim a huge canvas that the reader's browser would decode
        raise GentoolError(f"{where}: {width}×{height} pixels is too large to embed")
    return Picture(data, mime, width, height, alt, caption)


def read_picture(path: Path, alt: str, caption: str) -> Picture:
    """An image file, size-checked as it is read."""
    return picture(read_limited(path, MAX_IMAGE_BYTES), alt, caption, str(path))
