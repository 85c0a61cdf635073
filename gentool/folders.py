"""A folder of the user's own images as training data, before any pixel is decoded: which files it holds (class
subfolders give labels; anything that is not a PNG/JPEG is set aside with the reason), each image's header (size,
grey or colour, format, checked against the per-image pixel bound), the geometry they will be decoded to and the
bytes that takes (refused beyond a stated bound), and the lines that tell the user what was found.
`gentool.folder_cache` decodes the images that pass, once, into a cached array."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gentool.datatypes import IMAGE_SUFFIXES, Geometry
from gentool.errors import UsageError
from gentool.paths import size_text as gib  # noqa: F401 (as the folder checks import it)
from gentool.images import ImageError, is_grey, open_image
from gentool.models.fields import MAX_SIDE

HOLDOUT_EVERY = 10  # a folder with no test/ sibling holds out every 10th image of each class
MEMORY_SHARE = 0.5  # the decoded images may take at most this share of the machine's memory
EXAMPLES = 3  # skipped files named per reason


@dataclass
class Listing:
    """The image files of a folder (classes interleaved), their labels (-1: unlabelled), `(size, mtime_ns)` of each
    (the cache key), the class names and the files set aside as `(relative path, reason, detail)`."""

    root: Path
    files: list[Path]
    labels: list[int]
    stamps: list[tuple[int, int]]
    classes: list[str]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    part: str | None = None  # the part of the folder this is ("train", "test": `split_part`), for the found lines
    held: int = 0  # with a part: how many images the folder holds out for testing, of
    whole: int = 0  # the images the whole folder holds (a part may then be limited or have images skipped)

    def select(self, keep: list[int]) -> "Listing":
        return Listing(self.root, [self.files[i] for i in keep], [self.labels[i] for i in keep],
                       [self.stamps[i] for i in keep], self.classes, list(self.skipped), self.part, self.held,
                       self.whole)

    def rel(self, path: Path) -> str:
        text, root = str(path), str(self.root).rstrip(os.sep) + os.sep
        if text.startswith(root):  # the files of a listing: string slicing, 10x pathlib's relative_to on 50,000
            return text[len(root):]
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else text


@dataclass(frozen=True)
class Header:
    """What an image's header says: its size, whether it is grey, its format."""

    width: int
    height: int
    grey: bool
    format: str


@contextlib.contextmanager
def read_image(path: Path):
    """The one place an image file of a data folder is opened: `open_image` opens it without blocking (a named pipe
    must not hang the run), checks it is a regular file, then hands it to PIL, which reads the header only and
    refuses more than MAX_PIXELS pixels before any is decoded. Raises ImageError saying why not."""
    with open_image(path) as img:
        yield img


_KEPT: dict[str, Listing] | None = None  # inside `one_listing()`: each folder's listing, made once


@contextlib.contextmanager
def one_listing():
    """Inside the block each folder is listed once: evaluate asks for a folder's listing five times (its classes,
    its geometry at two sizes, its split), and stat-ing a 60,000-image folder takes 1-3 s each time. The block is
    one command's: a folder changed later (a test, a notebook calling the API again) is listed again."""
    global _KEPT
    outer, _KEPT = _KEPT, ({} if _KEPT is None else _KEPT)
    try:
        yield
    finally:
        _KEPT = outer


def listed_once(command):
    """`command` (train, evaluate) run inside `one_listing()`."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        with one_listing():
            return command(*args, **kwargs)
    return run


def list_folder(root: Path) -> Listing:
    """The folder's image files: with class subfolders (searched to any depth), their images interleaved (1st of
    each class, then 2nd, ...) so that the first N are balanced; else the images directly in `root`. A copy of
    the listing made before inside `one_listing()` (callers set files aside in theirs)."""
    if _KEPT is None:
        return _list_folder(root)
    if str(root) not in _KEPT:
        _KEPT[str(root)] = _list_folder(root)
    kept = _KEPT[str(root)]
    return kept.select(list(range(len(kept.files))))


def _list_folder(root: Path) -> Listing:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    walked = [_walk(d) for d in subdirs]
    skipped: list[tuple[str, str, str]] = []
    if subdirs and any(images for images, _ in walked):
        order = sorted((k, label) for label, (group, _) in enumerate(walked) for k in range(len(group)))
        files, labels = [walked[label][0][k] for k, label in order], [label for _, label in order]
        classes = [d.name for d in subdirs]
        others = [f for _, group in walked for f in group]
        for loose in sorted(p for p in root.iterdir() if not p.is_dir()):
            if loose.suffix.lower() in IMAGE_SUFFIXES:
                skipped.append((loose.name, "not in a class folder", "beside the class folders"))
            else:
                others.append(loose)
        _refuse_a_stray_subfolder(root, classes, len(files), len(skipped))
    else:
        files = sorted(p for p in root.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES)
        others = sorted(p for p in root.iterdir() if not p.is_dir() and p.suffix.lower() not in IMAGE_SUFFIXES)
        labels, classes = [-1] * len(files), []
    skipped += [(str(p.relative_to(root)), "not PNG/JPEG", "by its name") for p in others]
    listing = Listing(root, [], [], [], classes, skipped)
    for path, label in zip(files, labels):
        try:
            info = path.stat()
        except OSError as exc:
            listing.skipped.append((listing.rel(path), "unreadable", exc.strerror or str(exc)))
            continue
        if not stat.S_ISREG(info.st_mode):
            listing.skipped.append((listing.rel(path), "not a regular file", "a pipe, device or socket"))
            continue
        listing.files.append(path)
        listing.labels.append(label)
        listing.stamps.append((info.st_size, info.st_mtime_ns))
    return listing


def _refuse_a_stray_subfolder(root: Path, classes: list[str], in_classes: int, loose: int) -> None:
    """Images beside class folders are not read (torchvision's layout). When they outnumber the images in the class
    folders, the subfolders are a stray, not the data set: a flat folder of 300 photos with one in a subfolder
    trained on that one image, exit 0. Refused in one line saying both ways out."""
    if loose > in_classes:
        named = ", ".join(classes[:3]) + (f" and {len(classes) - 3:,} more" if len(classes) > 3 else "")
        raise UsageError(f"--data: {root} holds {loose:,} images directly in it but only {in_classes:,} in its "
                         f"{len(classes):,} subfolder(s) ({named}), and images beside class folders are not read; "
                         f"move the subfolder(s) out to train on the {loose:,} as unlabelled images, or sort them "
                         f"into class folders")


MAX_DEPTH = 64  # levels of folders below a class folder; deeper is a mistake or an attack, not a data set


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """Images and other files below `folder`, each sorted (symbolic links to folders are not followed: no loops).
    A stack instead of os.walk, which recurses once per level (a folder some thousand levels deep was a
    RecursionError); folders more than MAX_DEPTH levels below `folder` are refused."""
    images, others, stack = [], [], [(folder, 0)]
    while stack:
        top, depth = stack.pop()
        try:
            with os.scandir(top) as entries:
                entries = list(entries)
        except OSError:  # as os.walk: an unreadable folder adds nothing
            continue
        for entry in entries:
            path = Path(top) / entry.name
            with contextlib.suppress(OSError):
                if entry.is_dir():
                    if entry.is_symlink():
                        continue
                    if depth >= MAX_DEPTH:
                        raise UsageError(f"--data: {folder} holds folders more than {MAX_DEPTH} levels deep; at "
                                         f"most {MAX_DEPTH} levels below a class folder are read")
                    stack.append((path, depth + 1))
                    continue
            (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    return sorted(images), sorted(others)


def split_part(listing: Listing, part: str | None) -> Listing:
    """The images of `part`: "test" every HOLDOUT_EVERY-th image of each class (of the whole folder when
    unlabelled), "train" the others, None all."""
    keep = list(range(len(listing.files)))
    if part is not None:
        seen: Counter = Counter()
        ranks = []
        for y in listing.labels:  # the image's place within its class
            ranks.append(seen[y])
            seen[y] += 1
        keep = [i for i in keep if (ranks[i] % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == (part == "test")]
    selected = listing.select(keep)
    if part is not None:
        selected.part = part
        selected.held = len(listing.files) - len(keep) if part == "train" else len(keep)
        selected.whole = len(listing.files)
    return selected


def held_out(labelled: bool) -> str:
    """Which images a folder without a test/ beside it holds out, in the words every message and record uses."""
    return f"every {HOLDOUT_EVERY}th image of {'each class' if labelled else 'the folder'}"


def _images_found(listing: Listing, n: int) -> str:
    """How many images the folder holds and, for a part of it, how they divide between training and the held-out
    test split: "60 images (no class subfolders: unlabelled): 54 for training, 6 (every 10th image of the folder)
    held out for `evaluate --split test` (and the held-out losses …)" (`n`: the images of the part read, fewer
    with --limit or images skipped)."""
    each = ""
    if listing.classes:
        counts = Counter(listing.labels)
        per = [counts.get(k, 0) for k in range(len(listing.classes))]
        each = f"{min(per):,}" if min(per) == max(per) else f"{min(per):,} to {max(per):,}"
    which = held_out(bool(listing.classes))
    if listing.part == "test":
        return f"{n:,} images{_classes(listing, each)}: {which}, held out from training for `evaluate --split test`"
    if listing.part != "train":
        return f"{n:,} images{_classes(listing, each)}"
    train = listing.whole - listing.held
    read = [f"{n:,} of them used"] if n < train else []  # (fewer: --limit, or files found unreadable)
    read += [f"{each} of each class" if read else f"{each} each"] if each else []
    return (f"{listing.whole:,} images{_classes(listing)}: {train:,} for training"
            f"{' (' + ', '.join(read) + ')' if read else ''}, {listing.held:,} ({which}) held out for "
            f"`evaluate --split test` (and the held-out losses of the families that have them)")


def _classes(listing: Listing, each: str = "") -> str:
    if not listing.classes:
        return " (no class subfolders: unlabelled)"
    return f" in {len(listing.classes)} class folders" + (f" ({each} each)" if each else "")


def read_headers(listing: Listing, progress=None, limit: int | None = None) -> tuple[Listing, list[Header]]:
    """Each image's header, read without decoding pixels, up to the first `limit` usable ones; unreadable and
    too large images are set aside."""
    keep, headers = [], []
    for i, path in enumerate(listing.files):
        if limit is not None and len(keep) >= limit:
            break
        try:
            with read_image(path) as img:
                headers.append(Header(img.size[0], img.size[1], is_grey(img), img.format or "?"))
            keep.append(i)
        except ImageError as exc:
            listing.skipped.append((listing.rel(path), *reason(str(exc))))
        if progress:
            progress.tick(i + 1)
    return listing.select(keep), headers


def reason(message: str) -> tuple[str, str]:
    """An ImageError's message as (reason, detail), for grouping skipped files by reason."""
    kinds = (("pixels; at most", "too large"), ("transparent", "transparent"), ("regular file", "not a regular file"),
             ("cannot be opened", "unreadable"), ("cannot be decoded", "unreadable"))
    message = re.sub(r"cannot identify image file <[^>]*>", "not an image file PIL knows", message)
    return next((kind for needle, kind in kinds if needle in message), "not usable"), message


def plan_geometry(listing: Listing, headers: list[Header], image_size: int | None) -> Geometry:
    """The geometry every image is decoded to: image_size² (or the one size all share), grey when most images are
    grey, else colour. Refuses mixed sizes without image_size, decoded images beyond the memory bound, and sides
    beyond MAX_SIDE (what a checkpoint records, and what the decoded cache reads back)."""
    if not headers:
        raise nothing_usable(listing)
    channels = 1 if 2 * sum(h.grey for h in headers) > len(headers) else 3
    if image_size:
        height = width = image_size
    else:
        sizes = Counter((h.width, h.height) for h in headers)
        if len(sizes) > 1:
            (w0, h0), (w1, h1) = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
            raise UsageError(f"--data: images differ in size ({len(sizes)} sizes, from {w0}x{h0} to {w1}x{h1} in "
                             f"{listing.root}); pass --image-size S to decode them all to SxS (centre-cropped)")
        width, height = next(iter(sizes))
    need, bound = len(headers) * channels * height * width, memory_bound()
    if need > bound:
        raise UsageError(f"--data: {len(headers):,} images of {channels}x{height}x{width} pixels decode to "
                         f"{need / 2**30:.2f} GiB; at most {bound / 2**30:.2f} GiB ({MEMORY_SHARE:.0%} of this "
                         f"machine's memory) are decoded; pass a smaller --image-size or --limit N")
    if max(width, height) > MAX_SIDE:  # what a checkpoint records and the decoded cache reads back: refused before
        raise UsageError(f"--data: the images in {listing.root} are {width}x{height} pixels; at most {MAX_SIDE} "
                         f"pixels a side are decoded; pass --image-size S to decode them to SxS (centre-cropped)")
    return Geometry(channels, height, width, len(listing.classes))


def nothing_usable(listing: Listing) -> UsageError:
    if listing.skipped:
        rel, why, detail = next((s for s in listing.skipped if s[1] != "not PNG/JPEG"), listing.skipped[0])
        image = f"image {listing.root / rel} {detail}" if why != "not PNG/JPEG" else f"{listing.root / rel} {why}"
        return UsageError(f"--data: {image}, and {listing.root} holds no other usable PNG or JPEG image "
                          f"({len(listing.skipped):,} files skipped)")
    return UsageError(f"--data: {listing.root} holds no PNG or JPEG images (directly or in class subfolders)")


def memory_bound() -> int:
    """The most bytes the decoded images may take: MEMORY_SHARE of physical memory (16 GiB when unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return int(total * MEMORY_SHARE)


def found_lines(listing: Listing, headers: list[Header], geometry: Geometry, image_size: int | None) -> list[str]:
    """What the folder holds, for the user: images and classes, sizes and formats, conversions, files skipped."""
    n = len(headers)
    lines = [f"--data {listing.root}: {_images_found(listing, n)}"]
    if headers:
        small, big = min(headers, key=lambda h: h.width * h.height), max(headers, key=lambda h: h.width * h.height)
        formats = ", ".join(f"{k:,} {f}" for f, k in Counter(h.format for h in headers).most_common())
        one = (small.width, small.height) == (big.width, big.height)
        sizes = f"all {small.width}x{small.height}" if one else (f"sizes {small.width}x{small.height} to "
                                                                 f"{big.width}x{big.height}")
        sizes += f" ({formats})"
        if image_size:
            counts = {"not square (centre-cropped)": sum(h.width != h.height for h in headers),
                      "smaller (enlarged)": sum(min(h.width, h.height) < image_size for h in headers)}
            sizes += f"; each decoded to {image_size}x{image_size}" + "".join(
                f"{': ' if i == 0 else ', '}{k:,} {what}" for i, (what, k) in enumerate(
                    (what, k) for what, k in counts.items() if k))
        grey = sum(h.grey for h in headers)
        if 0 < grey < n:
            turned = (f"{n - grey:,} colour images made grey (most are grey)" if geometry.channels == 1 else
                      f"{grey:,} grey images made colour (most are colour)")
            sizes += f"; {turned}"
        lines.append(sizes)
    return lines + skipped_lines(listing.skipped)


def skipped_lines(skipped: list[tuple[str, str, str]]) -> list[str]:
    """One line per reason: how many files were skipped for it, and the first few with the detail."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for rel, why, detail in skipped:
        groups.setdefault(why, []).append((rel, detail))
    lines = []
    for why, items in groups.items():
        plain = why in ("not PNG/JPEG", "not in a class folder")  # the reason says it all
        shown = ", ".join(rel if plain else f"{rel} ({detail})" for rel, detail in items[:EXAMPLES])
        more = f" and {len(items) - EXAMPLES:,} more" if len(items) > EXAMPLES else ""
        lines.append(f"skipped {len(items):,} {'file' if len(items) == 1 else 'files'} ({why}): {shown}{more}")
    return lines
