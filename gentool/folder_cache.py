"""Decoding a data folder's images once. They are decoded one at a time (never more than one full-size image in
memory; a JPEG at no more than the size needed) into a uint8 N×C×H×W array, with progress and an ETA. A folder
worth it (CACHE_MIN_BYTES decoded or more) is decoded into an `.npy` under the cache folder that later runs map
into memory: its key holds every file's name, size and modification time, the image size and the part of the
folder, so later runs start at once and a changed folder is decoded again, never served stale."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gentool import fileio, links, undo
from gentool.cache import cache_dir, put_aside
from gentool.datatypes import Geometry, ImageData
from gentool.errors import GentoolError, UsageError, dims
from gentool.digests import arrays_digest
from gentool.fileio import atomic_write_json, read_json
from gentool.folders import (Header, Listing, found_lines, gib, list_folder, plan_geometry, read_headers,
                             nothing_usable, read_image, reason, skipped_lines, split_part)
from gentool.images import ImageError, image_pixels
from gentool.models.fields import MAX_SIDE
from gentool.paths import write_probe
from gentool.progress import Reporter, format_duration

CACHE_FORMAT, CACHE_VERSION = "gentool-folder-cache", 1
# Below this many decoded bytes (a few hundred small images) decoding takes well under a second: an entry per such
# folder would only litter the cache.
CACHE_MIN_BYTES = 1 << 20
IMAGES, META = "images.npy", "meta.json"


class Progress:
    """A line at the reporter's pace (`gentool.progress.Pace`) while a pass over `total` images runs: done, rate and
    ETA (the pass's end has a line of its own)."""

    def __init__(self, reporter: Reporter, what: str, total: int):
        self.reporter, self.what, self.total = reporter, what, total
        self.start, self.lines = time.monotonic(), reporter.pace()

    def tick(self, done: int) -> None:
        if done >= self.total or not self.lines.due():
            return
        rate = done / max(time.monotonic() - self.start, 1e-9)
        self.reporter.message(f"{self.what}: {done:,}/{self.total:,} ({done / self.total:.0%}), {rate:,.0f} img/s, "
                              f"eta {format_duration((self.total - done) / rate)}")


def cache_folder() -> Path:
    """Where decoded folders are cached ($XDG_CACHE_HOME/gentool/folders)."""
    return cache_dir() / "folders"


def load_folder(root: Path, image_size: int | None = None, limit: int | None = None, part: str | None = None,
                reporter: Reporter | None = None) -> ImageData:
    """The images of a folder (of `part` of it, see `split_part`; the first `limit`), decoded to image_size² when
    given, labelled by class subfolder; from the cache when the folder is unchanged since it was decoded."""
    reporter = reporter or Reporter()
    listing = split_part(list_folder(root), part)
    key = cache_key(listing, image_size, part, limit)
    entry = cache_folder() / f"{_slug(root.name)}-{key[:20]}"
    cached = open_entry(entry, key, reporter, len(listing.files))
    if cached is not None:
        return cached
    listing, headers = read_headers(listing, Progress(reporter, "reading image headers", len(listing.files)), limit)
    geometry = plan_geometry(listing, headers, image_size)
    found = found_lines(listing, headers, geometry, image_size)
    for line in found:
        reporter.message(line)
    skipped_before = len(listing.skipped)
    shape = (len(headers), *geometry.shape)
    if int(np.prod(shape)) < CACHE_MIN_BYTES:
        kept, images = decode_all(listing, headers, geometry, image_size, np.empty(shape, np.uint8), reporter)
        _report_decode_skips(kept, skipped_before, reporter)
        return _image_data(root, images[:len(kept.files)], kept.labels, kept.classes)
    from filelock import FileLock  # imported here: the CLI's --help must not pay for it

    try:
        lock_path = fileio.make_dirs(entry.parent) / f"{entry.name}.lock"
        # the longest path the entry is built through (build_entry's temporary folder): not cached if it cannot be
        write_probe(entry.parent, f".{entry.name}.{'x' * 8}/{fileio.temporary_name(META)}")
        fileio.create_lock_file(lock_path)  # never through a link, whatever filelock's version does
        lock = FileLock(str(lock_path))
        lock.acquire()
    except (OSError, UsageError) as exc:  # UsageError: a link in the cache, never written through
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        reporter.message(f"note: decoded images are not cached ({cache_folder()}: {problem})")
        kept, images = decode_all(listing, headers, geometry, image_size, np.empty(shape, np.uint8), reporter)
        _report_decode_skips(kept, skipped_before, reporter)
        return _image_data(root, images[:len(kept.files)], kept.labels, kept.classes)
    try:  # another process (a rank, a sweep worker) may have decoded it while this one waited
        return open_entry(entry, key, Reporter(), len(listing.files)) or build_entry(
            entry, key, listing, headers, geometry, {"image_size": image_size, "part": part, "limit": limit,
                                                     "found": found, "skipped_before": skipped_before}, reporter)
    finally:
        lock.release()


def cached_geometry(listing: Listing, image_size: int | None) -> Geometry | None:
    """The geometry of the whole folder decoded at `image_size`, when the cache holds it (the entry checked as
    `open_entry` checks it, and moved aside when damaged); None otherwise, or when the cache folder is unusable."""
    key = cache_key(listing, image_size, None, None)
    try:
        data = open_entry(cache_folder() / f"{_slug(listing.root.name)}-{key[:20]}", key, Reporter(),
                          len(listing.files))
    except GentoolError:  # a cache that cannot be read is no reason to refuse what its headers can tell
        return None
    return None if data is None else data.geometry


def cache_key(listing: Listing, image_size: int | None, part: str | None, limit: int | None) -> str:
    """A hash of everything the decoded array depends on: each file's relative name, label, size and modification
    time, the classes, the image size, the part, the limit and this decoder's version."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, CACHE_VERSION, str(listing.root), image_size, part, limit,
                                        listing.classes]).encode())
    for path, label, (size, mtime) in zip(listing.files, listing.labels, listing.stamps):
        # a name that is not UTF-8 (os.fsdecode's surrogate escapes) hashes as its bytes
        digest.update(f"{listing.rel(path)}\0{label}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def decode(path: Path, grey: bool, size: int | None) -> np.ndarray:
    """One image as uint8 H×W×C (C = 1 when `grey`, else 3), centre-cropped to square and resized to size×size
    (bicubic, antialiased) when `size` is given."""
    with read_image(path) as img:
        if size and img.format == "JPEG":  # decoded by the JPEG's own 1/2, 1/4, 1/8 scaling, never below size
            img.draft("L" if grey else "RGB", (size, size))
        pixels = image_pixels(img, grey)
    if size and pixels.shape[:2] != (size, size):
        from PIL import Image, ImageOps

        fitted = ImageOps.fit(Image.fromarray(pixels[:, :, 0] if grey else pixels), (size, size),
                              Image.Resampling.BICUBIC)
        pixels = np.asarray(fitted).reshape(size, size, -1)
    return pixels


def decode_all(listing: Listing, headers: list[Header], geometry: Geometry, image_size: int | None,
               out: np.ndarray, reporter: Reporter) -> tuple[Listing, np.ndarray]:
    """Decode the listed images into the rows of `out` (N×C×H×W, kept images first, in order); images that fail
    are set aside with the reason. Returns the listing of the kept images and `out`."""
    keep, start = [], time.perf_counter()
    progress = Progress(reporter, f"decoding {len(headers):,} images", len(headers))
    expected = (geometry.height, geometry.width, geometry.channels)
    for i, path in enumerate(listing.files):
        try:
            pixels = decode(path, geometry.channels == 1, image_size)
            if pixels.shape != expected:
                raise ImageError(f"cannot be decoded (changed while read: now {pixels.shape[1]}x{pixels.shape[0]})")
            out[len(keep)] = pixels.transpose(2, 0, 1)
            keep.append(i)
        except ImageError as exc:
            listing.skipped.append((listing.rel(path), *reason(str(exc))))
        progress.tick(i + 1)
    seconds = time.perf_counter() - start
    reporter.message(f"decoded {len(keep):,} images in {format_duration(seconds)} "
                     f"({len(keep) / max(seconds, 1e-9):,.0f} img/s)")
    kept = listing.select(keep)
    if not kept.files:
        raise nothing_usable(kept)
    return kept, out


def _report_decode_skips(kept: Listing, before: int, reporter: Reporter) -> None:
    for line in skipped_lines(kept.skipped[before:]):
        reporter.message(line)


def build_entry(entry: Path, key: str, listing: Listing, headers: list[Header], geometry: Geometry, made: dict,
                reporter: Reporter) -> ImageData:
    """Decode into a new cache entry (built in a temporary folder, then renamed into place) and open it."""
    # removed however the build ends, also by a Ctrl-C that ends the process at once (inside an import: PIL loads
    # its format plugins on first use)
    tmp, removal = undo.created(lambda: Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent)),
                                lambda made: shutil.rmtree(made, ignore_errors=True))
    try:
        whole = np.lib.format.open_memmap(tmp / "whole.npy", "w+", np.uint8, (len(headers), *geometry.shape))
        kept, _ = decode_all(listing, headers, geometry, made["image_size"], whole, reporter)
        n = len(kept.files)
        if n < len(headers):  # some failed to decode: keep only the rows written
            rows = np.lib.format.open_memmap(tmp / IMAGES, "w+", np.uint8, (n, *geometry.shape))
            for a in range(0, n, 4096):
                rows[a:a + 4096] = whole[a:a + 4096]
            rows.flush()
            del rows
        whole.flush()
        del whole
        os.replace(tmp / "whole.npy", tmp / IMAGES) if n == len(headers) else os.unlink(tmp / "whole.npy")
        digest = _values_digest(np.load(tmp / IMAGES, mmap_mode="r", allow_pickle=False), kept.labels)
        _report_decode_skips(kept, made["skipped_before"], reporter)
        found = made["found"] + skipped_lines(kept.skipped[made["skipped_before"]:])
        meta = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "root": str(listing.root),
                "image_size": made["image_size"], "part": made["part"], "limit": made["limit"],
                "shape": [n, *geometry.shape], "labels": kept.labels, "class_names": kept.classes, "found": found,
                "skipped": [list(s) for s in kept.skipped], "decoded": time.strftime("%Y-%m-%d %H:%M:%S"),
                "sha256": digest}
        atomic_write_json(tmp / META, meta)
        if entry.exists() or entry.is_symlink():
            put_aside(entry)
        os.rename(tmp, entry)
        removal.forget()
    except BaseException:
        removal.run()
        raise
    reporter.message(f"cached the decoded images ({gib(n * int(np.prod(geometry.shape)))}) in {entry}; later runs "
                     f"read them from there while the folder's files are unchanged")
    _prune(entry, meta)
    opened = open_entry(entry, key, Reporter(), len(listing.files))
    if opened is None:  # its own checks refused what it just wrote: never a None handed on (an AttributeError)
        raise GentoolError(f"--data: the decoded images cached in {entry} do not read back; they were moved aside "
                           f"in {entry.parent}")
    return opened


def open_entry(entry: Path, key: str, reporter: Reporter, most: int | None = None) -> ImageData | None:
    """The cached images of `entry`, memory-mapped (copy-on-write), after checking every field (at most `most`
    images: the folder's files; grey or colour, sides the checkpoint may record); None when there is no entry. A
    damaged entry is reported in one line and moved aside (then decoded again)."""
    if not entry.exists() and not entry.is_symlink():
        return None
    try:
        if entry.is_symlink():  # the entry itself a link: what it leads to is not an entry gentool wrote
            raise ValueError(f"it is {links.link_kind(entry)}, not a folder gentool wrote")
        if not entry.is_dir():  # a file or a named pipe: said as what it is, not as "Not a directory" inside it
            raise ValueError(f"it is {fileio.kind_of(os.lstat(entry).st_mode)}, not a folder gentool wrote")
        meta = read_json(entry / META, follow=False)  # a link in the cache is damage, named as such
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            raise ValueError("it was written for other files or by another gentool")
        # a pipe there would block np.load's open forever; a link there is damage
        with fileio.regular_path(entry / IMAGES, follow=False) as pinned:
            images = np.load(pinned, mmap_mode="c", allow_pickle=False)
        shape, labels, classes = meta["shape"], meta["labels"], meta["class_names"]
        if not _plausible(shape, most):
            raise ValueError(f"it says it holds {dims(shape)} images, not what the folder can decode to")
        if images.dtype != np.uint8 or list(images.shape) != shape or images.ndim != 4:
            raise ValueError(f"its images are {images.dtype} {dims(images.shape)}, but it says uint8 {dims(shape)}")
        if not (isinstance(labels, list) and len(labels) == shape[0] and isinstance(classes, list)
                and all(type(y) is int and (0 <= y < len(classes) if classes else y == -1) for y in labels)):
            raise ValueError("its labels do not match its images and classes")  # (-1: unlabelled, never in a class)
        if len(set(map(str, classes))) != len(classes):  # a folder's subfolder names are unique
            raise ValueError("its class names repeat, which a folder's subfolder names cannot")
        found = [str(line) for line in meta["found"]]
        if not isinstance(meta.get("sha256"), str) or _values_digest(images, labels) != meta["sha256"]:
            raise ValueError("its images or labels are not those decoded (their SHA-256 is not the one in its "
                             "meta.json)")
    except (OSError, ValueError, KeyError, TypeError, RecursionError, AttributeError) as exc:
        try:
            aside = put_aside(entry)
        except (OSError, UsageError) as cause:
            why = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
            raise GentoolError(f"the cached decoded images in {entry} are damaged ({fileio.cause(exc)}) and cannot be "
                               f"moved aside ({why}); delete that folder") from None
        reporter.message(f"note: the cached decoded images in {entry} are damaged ({fileio.cause(exc)}); {aside}, "
                         f"decoding again")
        return None
    for line in found:
        reporter.message(line)
    reporter.message(f"decoded images read from the cache {entry} (decoded {meta.get('decoded', '?')}; the folder's "
                     f"files, sizes and times are unchanged since)")
    return _image_data(Path(meta["root"]), images, labels, [str(c) for c in classes])


def _values_digest(images: np.ndarray, labels: list[int]) -> str:
    """The SHA-256 of an entry's images and labels: pixels changed under an intact meta.json were trained on
    without a word (attacker hour 14); the file names, sizes and times the key holds are the folder's, not the
    entry's. (About 0.3 s for 50,000 CIFAR-10 images, against minutes to decode them.)"""
    return arrays_digest({"images": images, "labels": np.asarray(labels, dtype=np.int64)})


def _plausible(shape, most: int | None) -> bool:
    """Whether `shape` (N, C, H, W, from a cache entry's meta.json) can be a decoded folder's: N no more than the
    folder's `most` images, grey or colour, each side at most MAX_SIDE."""
    return (isinstance(shape, list) and len(shape) == 4 and all(type(k) is int and k >= 1 for k in shape)
            and (most is None or shape[0] <= most) and shape[1] in (1, 3) and max(shape[2:]) <= MAX_SIDE)


def _image_data(root: Path, images: np.ndarray, labels: list[int], classes: list[str]) -> ImageData:
    tensor = torch.from_numpy(images)
    return ImageData(root.name, tensor, torch.tensor(labels, dtype=torch.long),
                     Geometry(*tensor.shape[1:], num_classes=len(classes)), classes)


def _prune(entry: Path, meta: dict) -> None:
    """Remove older entries of the same folder, image size, part and limit: the folder has changed since."""
    same = ("root", "image_size", "part", "limit")
    for other in entry.parent.glob(entry.name.rsplit("-", 1)[0] + "-*"):
        if other == entry or not other.is_dir() or other.is_symlink():
            continue
        with contextlib.suppress(OSError, ValueError, RecursionError, AttributeError):
            old = read_json(other / META, follow=False)
            if all(old.get(k) == meta[k] for k in same):
                for name in (IMAGES, META):  # only the files gentool wrote there; unlink never follows a link
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(other / name)
                other.rmdir()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:40] or "folder"


_GEOMETRIES: dict[tuple, Geometry] = {}  # per process: evaluate asks for a folder's geometry several times


def folder_geometry(root: Path, image_size: int | None = None) -> Geometry:
    """The geometry a folder's images decode to (from their headers, without decoding pixels; or from the cached
    decoded images of the same files at the same size)."""
    listing = list_folder(root)
    memo = (str(root), image_size, tuple(map(str, listing.files)), tuple(listing.stamps))
    if memo not in _GEOMETRIES:
        # a folder train decoded: its cached array's shape (reading 50,000 headers again took 10-20 s)
        _GEOMETRIES[memo] = cached_geometry(listing, image_size) or plan_geometry(*read_headers(listing), image_size)
    return _GEOMETRIES[memo]
