"""Drawing samples from a checkpoint into a PNG grid, an `.npz` array, a folder of PNGs, or a GIF of walks through
latent space. Large requests are drawn and written chunk by chunk (`sample_chunks`), so memory holds one chunk of
images, not all of them, and a seed gives the same images however they are chunked."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from gentool.checkpoint import load_checkpoint
from gentool.device import choose_precision, pick_device, prepare, use_threads
from gentool.errors import ConfigError, GentoolError, UsageError, bad_value
from gentool.links import LinkRefused, refuse_linked
from gentool.parsing import MAX_GRID_SIDE
from gentool.paths import check_input_file, check_replace, nearest_folder, prepare_output, require_free
from gentool.images import NpzWriter, make_grid, png_name, to_uint8, write_gif, write_grid, write_png_folder
from gentool.sample_options import MAX_SAMPLES, SampleOptions
from gentool.progress import Drawing, Reporter

WALK_POINTS = 4  # random latent points each --interpolate walk passes through before returning to its start
FRAME_MS = 80
CHUNK = 4096  # samples drawn and written at a time (a multiple of 16: see chunk_sizes)
MAX_GIF_BYTES = 512 << 20  # uncompressed frames of one --interpolate GIF
MAX_BY_CLASS_ROWS = 100  # a default --by-class grid of a model of many classes: its first 100 rows


def _check_target(kind: str, out: Path, overwrite: bool, n: int) -> None:
    """Refuse to replace what exists without --overwrite, and a place that cannot be written, before any work."""
    if kind == "folder":
        pngs = sorted(out.glob("*.png")) if os.path.isdir(out) else []  # os.path: a name too long is prepare_output's
        for png in pngs:  # before "pass --overwrite", which cannot help: a device, pipe or socket is never written over
            check_replace(png, "--out", True)
        if pngs and not overwrite:
            raise UsageError(f"--out: folder {out} already holds PNG files; pass --overwrite to replace them")
    else:
        check_replace(out, "--out", overwrite)
    if kind == "folder":
        _check_room(out, n)  # before prepare_output makes the folder: a refused sample leaves nothing
    prepare_output(out, "--out", folder=kind == "folder", longest=png_name(n - 1) if kind == "folder" else None)
    if kind == "folder":
        try:  # --overwrite replaces the folder's PNGs: refuse a link (or a hard link) among them before any work
            refuse_linked(out, ["*.png"])
        except LinkRefused as exc:
            raise UsageError(f"--out: {exc}") from None


def _check_room(folder: Path, n: int) -> None:
    """Refuse a PNG folder that cannot fit, before any drawing: each file takes at least one block of the file
    system (a lower bound: the PNGs themselves are larger), so n files need n blocks. (An .npz has no such check:
    its compressed size is not known before the drawing, and its writer streams, so a full disk stops it as soon
    as it fills, leaving no file.)"""
    stat = os.statvfs(nearest_folder(folder))
    if stat.f_blocks:  # (a file system that reports no size, /proc's, is judged by the write probe)
        require_free(folder, n * stat.f_frsize, "--out", f"writing {n:,} PNG files (one {stat.f_frsize:,}-byte "
                     f"block each at least)", "free space or ask for fewer (--n) or an .npz")


def sample(req: SampleOptions, reporter: Reporter | None = None) -> dict:
    """Draw samples as requested and write them; returns what was written. `reporter` shows how far the drawing of
    an .npz or PNG folder is (many minutes for a 16-step sampler on a CPU)."""
    kind, n, grid, out = req.resolve()
    # the checkpoint first: a missing one (in a folder not there) must not leave the output's folder made beside it
    check_input_file(Path(req.checkpoint), "CKPT", "a .safetensors checkpoint file")
    _check_target(kind, out, req.overwrite, n)
    ckpt, precision, labels, label, settings, grid = _open(req, n, grid)
    n = grid[0] * grid[1] if kind == "grid" else n  # (a --by-class grid's rows are the model's classes)
    c = ckpt.model.config
    shape = [c.channels, c.image_height, c.image_width]
    info = {"checkpoint": str(req.checkpoint), "model": ckpt.model.name, "weights": ckpt.weights,
            "precision": precision.used, "precision_reason": precision.reason, "kind": kind, "sampling": settings,
            "n": n, "seed": req.seed, "out": str(out), "shape": shape}
    if label is not None:
        info["class"] = label
    generator = torch.Generator().manual_seed(req.seed)
    if kind == "gif":
        _check_gif_size(n, req.frames, grid, shape)
        walk = latent_walk(ckpt.model, n, req.frames, generator, labels, settings)
        frames = [make_grid(to_uint8(f), *grid) for f in walk]
        write_gif(out, frames, FRAME_MS)
        return {**info, "frames": len(frames)}
    if kind == "grid":
        names = row_names(ckpt, grid[0]) if req.by_class else None
        write_grid(out, ckpt.model.generate(n, generator, labels=labels, settings=settings), *grid, names)
        if names:
            info["rows"] = names
        return info
    progress = None if reporter is None else Drawing(n, reporter, f"into {out}")
    chunks = sample_chunks(ckpt.model, n, generator, labels, settings=settings, progress=progress)
    if kind == "npz":
        with NpzWriter(out, (n, *shape[1:], shape[0])) as npz:
            for images in chunks:
                npz.write(to_uint8(images))
    else:
        _write_folder(out, chunks, n)
    return info


def _write_folder(out: Path, chunks: Iterator[torch.Tensor], n: int) -> None:
    """Write the chunks' images as a PNG folder; if that fails part-way (a full disk, a stop), remove the PNGs this
    call wrote, so a failed sample leaves no partial output filling the disk (as a failed .npz leaves no file)."""
    written: list[Path] = []
    try:
        for images in chunks:
            write_png_folder(out, images, len(written), written)
    except BaseException as exc:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, GentoolError) and written:
            raise GentoolError(f"{exc}; the {len(written):,} of {n:,} PNGs written before it were removed") from None
        raise


def sample_array(req: SampleOptions) -> np.ndarray:
    """The req.n images `sample` writes to an .npz for the same options (the same seed gives the same images), as one
    uint8 array N×H×W×C in memory (gentool.api.sample)."""
    if not isinstance(req.n, int) or isinstance(req.n, bool) or not 1 <= req.n <= MAX_SAMPLES:
        raise bad_value("n", req.n, f"an integer between 1 and {MAX_SAMPLES:,}")
    ckpt, _, labels, _, settings, _ = _open(req, req.n, None)
    c = ckpt.model.config
    out = np.empty((req.n, c.image_height, c.image_width, c.channels), dtype=np.uint8)  # filled chunk by chunk
    start, generator = 0, torch.Generator().manual_seed(req.seed)
    for images in sample_chunks(ckpt.model, req.n, generator, labels, settings=settings):
        out[start:start + len(images)] = to_uint8(images)
        start += len(images)
    return out


def _open(req: SampleOptions, n: int, grid):
    """The checkpoint ready to sample (device, precision), the labels asked for, the sampler's settings and the
    grid: a --by-class grid without --grid has a row per class of the model (the default 8 left classes out)."""
    device = pick_device(req.device)
    use_threads(req.threads, device)
    precision = choose_precision(req.precision, device)
    ckpt = load_checkpoint(req.checkpoint, device, weights=req.weights)
    prepare(ckpt.model, device, precision.used)
    if req.by_class and req.grid is None and not req.interpolate and ckpt.model.conditional:
        grid = (min(ckpt.model.config.num_classes, MAX_BY_CLASS_ROWS), grid[1])
    labels, label = requested_labels(req, ckpt, n, grid)
    return ckpt, precision, labels, label, checked_settings(req, ckpt.model), grid


def checked_settings(req: SampleOptions, model) -> dict:
    """The family's sampler settings from --steps/--solver/--guidance and --sampler, checked."""
    try:
        return model.sample_settings(req.sample_options)
    except ConfigError as exc:
        if req.interpolate and exc.field == "steps" and not exc.listed:  # --steps used to set a walk's frames
            raise ConfigError(exc.field, f"{exc.detail} (the frames per leg of a walk are --frames)",
                              section=exc.section, value=exc.value, accepted=exc.accepted) from None
        raise


def chunk_sizes(n: int, chunk: int) -> list[int]:
    """How many samples each successive draw takes: `chunk` (a multiple of 16), the last draw also taking a
    remainder shorter than 16. Latent codes drawn in these pieces are then the very numbers one draw of all `n`
    gives: torch's CPU normal sampler fills blocks of 16 values, and a draw of 16 or more values continues the
    stream exactly where the previous one stopped (tests/test_memory.py checks this against one draw)."""
    if chunk % 16:
        raise ValueError(f"chunk {chunk} is not a multiple of 16")
    sizes = [chunk] * (n // chunk)
    rest = n - chunk * len(sizes)
    if rest and sizes and rest < 16:
        sizes[-1] += rest
    elif rest:
        sizes.append(rest)
    return sizes


def sample_chunks(model, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
                  chunk: int | None = None, settings: dict | None = None,
                  progress: Callable[[int], None] | None = None) -> Iterator[torch.Tensor]:
    """The images `model.generate(n, generator, labels=labels)` gives (in [0, 1] on the CPU), drawn and handed out
    chunk by chunk through the model's own `generate`. A conditional model drawing its own classes draws them after
    all n latent codes, as one call would: they are found by running a copy of the generator past the codes.
    `progress` is told each batch's count as `generate` draws it. (A
    sampler that draws noise of its own, such as DDPM's ancestral one, draws it per chunk: the images are then
    fixed by the seed and the chunk size, and equal one draw's up to CHUNK samples given their labels.)"""
    sizes = chunk_sizes(n, chunk or CHUNK)
    if labels is None and model.conditional:
        ahead = torch.Generator().set_state(generator.get_state())
        for size in sizes:
            model.sample_latent(size, ahead)
        labels = model.sample_labels(n, ahead)
    start = 0
    for size in sizes:
        yield model.generate(size, generator, labels=None if labels is None else labels[start:start + size],
                             settings=settings, progress=progress)
        start += size


def _check_gif_size(walks: int, frames: int, grid: tuple[int, int], shape: list[int]) -> None:
    """A walk GIF holds all its frames in memory while it is encoded: refuse one larger than MAX_GIF_BYTES."""
    c, h, w = shape
    rows, cols = grid
    size = WALK_POINTS * frames * (rows * (h + 2) + 2) * (cols * (w + 2) + 2) * c
    if size > MAX_GIF_BYTES:
        raise bad_value("--frames", frames, f"fewer frames or a smaller --grid: {WALK_POINTS * frames} frames of "
                                          f"{rows}x{cols} images are {size / 2**30:.1f} GiB uncompressed, more "
                                          f"than the {MAX_GIF_BYTES >> 20} MiB a GIF may take")


def requested_labels(req: SampleOptions, ckpt, n: int, grid) -> tuple[torch.Tensor | None, dict | None]:
    """The class of every sample for --class or --by-class (None: the model's own choice), and the class asked for."""
    model = ckpt.model
    if req.label is None and not req.by_class:
        return None, None
    arg = "--by-class" if req.by_class else "--class"
    if not model.conditional:
        raise UsageError(f"{arg}: {model.name} is not class-conditional; class-conditional models: "
                         f"{', '.join(conditional_models())}")
    k = model.config.num_classes
    if req.by_class:
        if grid[0] > k:
            raise bad_value("--grid", f"{grid[0]}x{grid[1]}", f"at most {k} rows with --by-class (one per class)")
        if grid[0] < k:
            warnings.warn(f"--by-class: --grid {grid[0]}x{grid[1]} draws classes 0–{grid[0] - 1} of the model's {k}; "
                          f"{_all_rows(k, grid[1])}")
        return torch.arange(grid[0]).repeat_interleave(grid[1]), None
    names = list(ckpt.data.get("class_names") or [])
    index = parse_class(req.label, k, names)
    return torch.full((n,), index, dtype=torch.long), {"index": index, "name": class_name(ckpt, index)}


def _all_rows(k: int, cols: int) -> str:
    """How to see all k classes: a grid takes at most MAX_GRID_SIDE rows, a default --by-class grid MAX_BY_CLASS_ROWS."""
    if k <= MAX_GRID_SIDE:
        return f"--grid {k}x{cols} (or no --grid) draws them all"
    if k <= MAX_BY_CLASS_ROWS:
        return "no --grid draws them all"
    return f"no grid holds them all (without --grid: the first {MAX_BY_CLASS_ROWS}); --class draws any one of them"


def class_name(ckpt, index: int) -> str:
    """Class `index` as the training data named it, else its index."""
    names = ckpt.data.get("class_names") or []
    return str(names[index]) if index < len(names) else str(index)


def row_names(ckpt, rows: int) -> list[str]:
    """A --by-class grid's row names (`class_name` of each row's class)."""
    return [class_name(ckpt, r) for r in range(rows)]


def parse_class(spec: str, num_classes: int, names: list[str]) -> int:
    """A class given as an index (0 … K−1) or by its name in the training data."""
    text = str(spec).strip()
    if text in names:
        return names.index(text)
    # ASCII digits only: str.isdigit() takes '³', which int() refuses; and an index has at most a few digits
    if re.fullmatch(r"[0-9]{1,9}", text) and int(text) < num_classes:
        return int(text)
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "") if names else ""
    accepted = f"a class index 0–{num_classes - 1}" + (f" or a class name ({shown})" if shown else "")
    raise bad_value("--class", spec, accepted)


def conditional_models() -> list[str]:
    """Names of the registered class-conditional models."""
    from gentool.registry import list_models

    return [e.name for e in list_models() if getattr(e.cls, "class_conditional", False)]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of `a` and `b` (straight lines when they are parallel): Gaussian codes
    keep their typical norm along the way, which a straight line between them would shrink."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = torch.nn.functional.cosine_similarity(af, bf, dim=1).clamp(-1, 1)
    omega = torch.acos(cos)[:, None]
    sin = torch.sin(omega)
    straight = (1 - t) * af + t * bf
    curved = (torch.sin((1 - t) * omega) * af + torch.sin(t * omega) * bf) / sin.clamp_min(1e-6)
    return torch.where(sin > 1e-4, curved, straight).reshape(a.shape)


def latent_walk(model, n: int, frames: int, generator: torch.Generator, labels: torch.Tensor | None = None,
                settings: dict | None = None) -> Iterator[torch.Tensor]:
    """Frames (each n images in [0, 1]) of n walks at once through WALK_POINTS random latent points and back to the
    first, `frames` frames per leg, so the animation loops without a jump; made one at a time as they are taken. A
    conditional model keeps each walk's class fixed (`labels`, or drawn once). Whatever else a sampler draws (an
    ancestral sampler's step noise) is the same in every frame, so frames differ by their latent codes alone; for
    flow's ODE and DDIM the latent (the initial noise) determines the image."""
    if not model.has_latent:
        raise UsageError(f"--interpolate: {model.name} has no latent code to walk through")
    points = [model.sample_latent(n, generator) for _ in range(WALK_POINTS)]
    if labels is None:
        labels = model.sample_labels(n, generator)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return (model.generate(n, torch.Generator().manual_seed(seed), labels, latents=slerp(a, b, k / frames),
                           settings=settings)
            for a, b in zip(points, points[1:] + points[:1]) for k in range(frames))
