"""Datasets as one uint8 tensor each: torchvision's MNIST and CIFAR10 readers, image folders, the bundled sample.

Everything is decoded once into memory (N×C×H×W uint8) and batched by index; there are no per-sample transforms and
no DataLoader workers, which is what makes small models train fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from gentool import environment
from gentool.couplings import couplings_line, is_couplings, load_couplings, manifest_geometry
from gentool.cache import cache_dir
from gentool.datatypes import IMAGE_SUFFIXES, Geometry, ImageData  # noqa: F401 (imported from here)
from gentool.errors import GentoolError, UsageError, bad_value, did_you_mean
from gentool.fileio import cause, kind_of
from gentool.versions import require_torchvision

DATA_ENV = "GENTOOL_DATA"
BUILTIN_DATASETS = ("mnist", "cifar10", "mnist-sample")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = tuple(f"cifar-10-batches-py/{n}" for n in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                                          "data_batch_5", "test_batch", "batches.meta"))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """--data-dir, else $GENTOOL_DATA, else the per-user cache folder."""
    return data_root(data_dir)[0]


class RecordedDir(str):
    """A --data-dir read from a checkpoint (`gentool evaluate CKPT`), not given by the user: messages say so."""


def data_root(data_dir: str | os.PathLike | None) -> tuple[Path, str | None]:
    """The data folder and what chose it: "--data-dir", "GENTOOL_DATA", the checkpoint's recorded --data-dir, or
    None for the per-user default."""
    if isinstance(data_dir, RecordedDir):
        return Path(data_dir), "SOURCE's recorded --data-dir"
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir"
    env = environment.folder(DATA_ENV, "the folder holding MNIST and CIFAR-10")
    return (env, DATA_ENV) if env else (cache_dir() / "data", None)


def load_dataset(data: str, data_dir=None, train: bool = True, image_size: int | None = None,
                 limit: int | None = None, part: str | None = None, reporter=None) -> ImageData:
    """Load a data set by name (mnist, cifar10, mnist-sample) or an image folder path, as one uint8 tensor;
    `limit` keeps the first N images. An image folder's `part` ("train", "test": see `gentool.folders.split_part`)
    picks its held-out split or the rest, and `reporter` is told what the folder holds and how decoding goes."""
    if image_size is not None and (not isinstance(image_size, int) or not 1 <= image_size <= 1024):
        raise bad_value("--image-size", image_size, "a number of pixels from 1 to 1024")
    key = data.lower()
    if key == "mnist":
        result = _load_torchvision("MNIST", data_dir, train)
    elif key == "cifar10":
        result = _load_torchvision("CIFAR10", data_dir, train)
    elif key == "mnist-sample":
        result = load_mnist_sample(train)
    elif is_couplings(data):
        if image_size is not None:  # the latents have the teacher's size: images cannot be resized apart from them
            raise UsageError("--image-size: not allowed with couplings (they keep the teacher's image size)")
        result = load_couplings(Path(data).expanduser(), limit)
        if reporter is not None:  # what a user training on a folder of pairs reads (it said nothing)
            reporter.message(couplings_line(data, result))
    elif Path(data).expanduser().is_dir():
        result = load_image_folder(Path(data).expanduser(), limit, image_size, part, reporter)
        image_size = None
    else:
        hint = did_you_mean(data, BUILTIN_DATASETS) if "/" not in str(data) else ""
        raise UsageError(f"--data: got {data!r}{hint}; expected mnist, cifar10, mnist-sample or an existing folder of "
                         f"PNG/JPEG images")
    result = result.limit(limit)
    if image_size is not None:
        result = _resize(result, image_size)
    return result


def peek_geometry(data: str, image_size: int | None = None) -> Geometry:
    """The geometry of a data set without loading it (an image folder: from its images' headers and class folders)."""
    key = data.lower()
    if key in ("mnist", "mnist-sample"):
        geometry = Geometry(1, 28, 28, 10)
    elif key == "cifar10":
        geometry = Geometry(3, 32, 32, 10)
    elif is_couplings(data):
        geometry = manifest_geometry(Path(data).expanduser())
    elif Path(data).expanduser().is_dir():  # from every image's header: the geometry the folder decodes to
        from gentool.folder_cache import folder_geometry

        return folder_geometry(Path(data).expanduser(), image_size)
    else:
        raise bad_value("--data", data, "mnist, cifar10, mnist-sample or an existing folder of PNG/JPEG images")
    if image_size:
        geometry = Geometry(geometry.channels, image_size, image_size, geometry.num_classes)
    return geometry


MNIST_LAYOUT = f"the four MNIST files ({', '.join(MNIST_FILES)}; uncompressed), directly in it or under MNIST/raw/"
CIFAR_LAYOUT = "cifar-10-batches-py/ (data_batch_1 to data_batch_5, test_batch, batches.meta) or cifar-10-python.tar.gz"


def holds_data(spec: str, root: Path) -> bool:
    """Whether `root` holds the built-in data set `spec` (MNIST's four files, CIFAR-10's batches) as it is, so
    that reading it there writes nothing (no folder made, no download): a folder named in a file gentool reads (a
    checkpoint's recorded --data-dir) is only read from, never written to."""
    if spec == "mnist":
        return mnist_folder(root) is not None
    if spec == "cifar10":
        return any(all((base / name.split("/", 1)[1]).is_file() for name in CIFAR_FILES)
                   for base in (root / "cifar-10-batches-py", root))
    return False


def mnist_folder(root: Path) -> Path | None:
    """The folder holding the four MNIST files: root/MNIST/raw (torchvision's layout) or root itself."""
    return next((d for d in (root / "MNIST" / "raw", root) if all((d / f).is_file() for f in MNIST_FILES)), None)


def _load_torchvision(kind: str, data_dir, train: bool) -> ImageData:
    root, origin = data_root(data_dir)
    if origin and not root.is_dir():  # never created: a mistyped folder must not become an empty data set
        layout = MNIST_LAYOUT if kind == "MNIST" else CIFAR_LAYOUT
        what = "is not a folder" if os.path.lexists(root) else "does not exist"
        raise UsageError(f"{origin}: {root} {what}; expected a folder holding {layout}")
    _refuse_special_files(root, origin, kind)
    if kind == "MNIST":
        images, labels = _read_mnist(root, origin, train)
        classes = _mnist_classes()
    else:
        if root.name == "cifar-10-batches-py" and (root / "test_batch").is_file():
            root = root.parent  # the batches folder itself was given
        ds = _torchvision_dataset("CIFAR10", root, origin, train)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        labels, classes = torch.as_tensor(ds.targets, dtype=torch.long), ds.classes
    geometry = Geometry(*images.shape[1:], num_classes=len(classes))
    return ImageData(kind.lower(), images, labels, geometry, [str(c) for c in classes])


# CIFAR-10's python files: each batch is about 31 MB and the archive 163 MiB. torchvision checksums a file before it
# reads it, so a file far larger (a sparse file of terabytes) would be read for minutes before being refused.
CIFAR_MAX_BYTES = {"cifar-10-python.tar.gz": 256 << 20}
CIFAR_MAX_BATCH = 48 << 20


def _refuse_special_files(root: Path, origin: str | None, kind: str) -> None:
    """torchvision reads (and checksums) the data set's files by name: a named pipe there would block it forever,
    a link that leads nowhere (a loop) would be taken for a missing file and downloaded over, and a CIFAR-10 file
    far larger than the real one checksummed for minutes; so every file it may open must be a regular one of a
    plausible size (or absent)."""
    names = [*MNIST_FILES, *(f"MNIST/raw/{n}" for n in MNIST_FILES)] if kind == "MNIST" else [
        *CIFAR_FILES, *(n.split("/", 1)[1] for n in CIFAR_FILES), "cifar-10-python.tar.gz"]
    where = origin or "--data-dir"
    for path in (root / n for n in names):
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):  # absent (a file named MNIST beside flat files: absent)
            if path.is_symlink():
                raise UsageError(f"{where}: {path} is a symbolic link to {os.readlink(path)}, which leads to no file; "
                                 f"expected the {kind} files") from None
            continue
        except OSError as exc:  # a loop of links (ELOOP), a folder on the way that cannot be searched
            raise UsageError(f"{where}: {path} cannot be read ({cause(exc)}); expected the {kind} files") from None
        if not path.is_file():
            raise UsageError(f"{where}: {path} is {kind_of(info.st_mode)}, not a regular file; expected the {kind} "
                             f"files")
        most = CIFAR_MAX_BYTES.get(path.name, CIFAR_MAX_BATCH) if kind == "CIFAR10" else None
        if most is not None and info.st_size > most:
            raise UsageError(f"{where}: {path} has {info.st_size:,} bytes; CIFAR-10's file of that name has far "
                             f"fewer (at most {most >> 20} MiB are read)")


def _mnist_classes() -> list[str]:
    require_torchvision()
    import torchvision.datasets as tvd

    return list(tvd.MNIST.classes)


def _read_mnist(root: Path, origin: str | None, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's images (N×1×28×28 uint8) and labels from whichever layout holds them, downloading when none does.
    Read by `gentool.idx`, which checks every header field and the files' sizes before reading their data."""
    from gentool.folders import memory_bound
    from gentool.idx import IdxError, read_idx

    folder = mnist_folder(root)
    if folder is None:
        _torchvision_dataset("MNIST", root, origin, train)  # downloads into root/MNIST/raw, or explains why not
        folder = root / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    paths = folder / f"{prefix}-images-idx3-ubyte", folder / f"{prefix}-labels-idx1-ubyte"
    arrays, where = [], origin or "--data-dir"
    for path, shape in zip(paths, ((None, 28, 28), (None,))):
        try:
            arrays.append(read_idx(path, shape, memory_bound()))
        except IdxError as exc:  # a damaged file, exit 1 (docs/guides/batch-jobs.md)
            raise GentoolError(f"{where}: {path} is not an MNIST {path.name.split('-')[1]} file: "
                               f"{exc}") from None
        except OSError as exc:
            raise UsageError(f"{where}: {path} cannot be read ({cause(exc)})") from None
    images, labels = arrays
    if len(images) != len(labels):
        raise GentoolError(f"{where}: {paths[0]} holds {len(images):,} images and {paths[1]} "
                           f"{len(labels):,} labels; expected one label per image")
    if len(labels) and labels.max() > 9:
        raise GentoolError(f"{where}: {paths[1]} holds the label {labels.max()}; expected digits "
                           f"0 to 9")
    return torch.from_numpy(images).unsqueeze(1).contiguous(), torch.from_numpy(labels).long()


def _torchvision_dataset(kind: str, root: Path, origin: str | None, train: bool):
    """torchvision's reader for a data set, downloading it into `root` when missing. A failed download is one line
    naming the folders searched, the layout expected and the download's real error; folders made for it go again."""
    require_torchvision()
    import torchvision.datasets as tvd

    cls = getattr(tvd, kind)
    target = root / kind / "raw"
    made = [d for d in (target, *target.parents) if not d.exists()]  # deepest first
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints its downloads; stdout is for results
            return cls(root=str(root), train=train, download=True)
    except Exception as exc:  # offline or a mirror error: the user needs the folder and the files, not a traceback
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise GentoolError(_not_found(kind, root, origin, _one_line(exc))) from None


def _not_found(kind: str, root: Path, origin: str | None, cause: str) -> str:
    if kind == "MNIST":
        searched = f"searched {root / 'MNIST' / 'raw'} and {root} for {', '.join(MNIST_FILES)}"
        gz = sorted(p.name for d in (root, root / "MNIST" / "raw") if d.is_dir() for p in d.glob("*-ubyte.gz"))
        if gz:
            searched += f"; found {', '.join(gz)}: gunzip them"
    else:
        searched = f"searched {root} for {CIFAR_LAYOUT}"
    where = str(root) if origin else f"the default data folder {root}"
    hint = f"; pass --data-dir DIR or set {DATA_ENV} to a folder holding it" if origin is None else ""
    return f"{origin or '--data-dir'}: {kind} not found in {where} ({searched}); downloading it failed: {cause}{hint}"


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line. torchvision's "Error downloading F:\nTried URL, got:\nERROR\n..." keeps
    its first line and each distinct error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    errors = list(dict.fromkeys(line for line in lines[1:] if not line.startswith("Tried ")))
    return f"{lines[0].rstrip(':')}: {'; '.join(errors)}" if errors else lines[0]


def load_mnist_sample(train: bool = True) -> ImageData:
    """The small real MNIST sample shipped inside the package (2,000 train / 500 test digits)."""
    ref = resources.files("gentool") / "resources" / "mnist_sample.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
        prefix = "train" if train else "test"
        images = torch.from_numpy(z[f"{prefix}_images"]).unsqueeze(1).contiguous()
        labels = torch.from_numpy(z[f"{prefix}_labels"]).long()
    return ImageData("mnist-sample", images, labels, Geometry(1, 28, 28, 10), [str(i) for i in range(10)])


def load_image_folder(root: Path, limit: int | None = None, image_size: int | None = None, part: str | None = None,
                      reporter=None) -> ImageData:
    """Decode the PNG/JPEG images under `root` (the first `limit`, classes interleaved, each decoded to
    image_size×image_size if given; see `gentool.folder_cache`); class subfolders, when present, give the labels."""
    from gentool.folder_cache import load_folder

    return load_folder(root, image_size, limit, part, reporter)


RESIZE_CHUNK = 256  # images resized at a time: the float copy interpolation needs stays small


def _resize(data: ImageData, size: int) -> ImageData:
    """`data` resized to size×size, refused beyond the memory bound before anything is allocated (MNIST at
    --image-size 1024 is 63 GB; its float copy was allocated at once, then died with an allocator traceback)."""
    from gentool.folders import MEMORY_SHARE, gib, memory_bound

    channels = data.geometry.channels
    need, bound = len(data) * channels * size * size, memory_bound()
    if need > bound:
        raise UsageError(f"--image-size: {len(data):,} images of {channels}x{size}x{size} pixels take {gib(need)}; at "
                         f"most {gib(bound)} ({MEMORY_SHARE:.0%} of this machine's memory) are held; pass a smaller "
                         f"--image-size or --limit N")
    images = torch.empty((len(data), channels, size, size), dtype=torch.uint8)
    for start in range(0, len(data), RESIZE_CHUNK):
        chunk = data.images[start:start + RESIZE_CHUNK].float()
        x = torch.nn.functional.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True)
        images[start:start + RESIZE_CHUNK] = x.round().clamp(0, 255).to(torch.uint8)
    geometry = Geometry(channels, size, size, data.geometry.num_classes)
    return ImageData(data.name, images, data.labels, geometry, data.class_names)


def batches(n: int, batch_size: int, seed: int, epoch: int, device: torch.device, rank: int = 0, world: int = 1):
    """Index batches of a seeded permutation for `epoch`; the same (seed, epoch) always gives the same order. With
    `world` ranks, rank r takes every world-th index from position r (all ranks get the same number)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    if world > 1:
        perm = perm[: n // world * world][rank::world]
    perm = perm.to(device)
    chunks = list(perm.split(batch_size))
    # A batch of one cannot train BatchNorm layers; drop such a tail (it is a different image every epoch).
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks.pop()
    return chunks
