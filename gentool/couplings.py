"""Couplings: a teacher's own (noise, sample) pairs, the data `gentool distill` trains a student on.

A couplings folder holds `couplings.json` (what drew them: the teacher's checkpoint, model, step, sampler settings,
the data set it imitates, the seed) and parts `part_NNNNN.safetensors` of PART pairs each: `images` (uint8
N×C×H×W, the teacher's samples as a data set stores images), `latents` (float16 N × latent shape, the noise each
came from: half the size of float32, and its rounding, 5·10⁻⁴ of a value, is far below what the student resolves)
and `labels` (int64 N; −1 for an unconditional teacher). Part k is drawn from its own seed, so parts can be drawn
in any number of sessions and the first N pairs are always the same. `gentool train --data FOLDER` reads the folder
like any data set (with its latents beside the images), so a student trains in the ordinary training loop.

Files may be hostile: the manifest is checked field by field and every part's header (names, dtypes, shapes)
before a tensor is read; nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import torch

from gentool import schema as s
from gentool.digests import tensors_digest
from gentool.checkpoint_meta import TEACHER
from gentool.checks import MAX_SEED
from gentool.datatypes import class_names_problem
from gentool.errors import GentoolError, UsageError, dims, listed, settings_text

MANIFEST = "couplings.json"
FORMAT = "gentool-couplings"
PART = 500  # pairs per part file: a kill loses at most one part's drawing
MAX_PARTS = 20_000  # 10⁷ pairs
# The teacher's noise is standard normal (Model.sample_latent): over 10⁷ pairs of any latent size a value beyond ±12
# has a chance far below 10⁻²⁰, so one there is not a teacher's noise (float16 holds up to 65,504).
MAX_LATENT = 12.0
PRINTABLE = r"[^\x00-\x1f\x7f]*"  # a data set's name and source are printed and used as paths: no control characters
DATA_META = s.Obj({"geometry": s.Obj({"channels": s.Int(1, 4), "height": s.Int(1, 4096), "width": s.Int(1, 4096),
                                      "num_classes": s.Int(0, 1000)})},
                  {"name": s.Opt(s.Str(200, PRINTABLE)), "source": s.Opt(s.Str(4096, PRINTABLE)),
                   "class_names": s.Opt(s.List(s.Str(200), 1000))})
SPEC = s.Obj({"format": s.Str(40, FORMAT), "version": s.Int(1, 1), "teacher": TEACHER, "data": DATA_META,
              "seed": s.Int(0, MAX_SEED), "part": s.Int(1, 10**6),  # distill's --seed range
              "latent_shape": s.List(s.Int(1, 4096), 8)})


def is_couplings(path) -> bool:
    """Whether `path` is a couplings folder (it holds couplings.json: whatever is there by that name, so that a pipe
    or a folder there is named when read, not taken for a folder of images without one)."""
    return Path(path).expanduser().is_dir() and os.path.lexists(Path(path).expanduser() / MANIFEST)


def read_manifest(folder: Path, arg: str = "--data", follow: bool = True) -> dict:
    """The folder's couplings.json, checked field by field (not through a link unless `follow`: distill, which
    writes there, reads it so). A file refused unread (a link, a pipe, too large, unreadable) is named as such."""
    from gentool.fileio import cannot_read

    try:
        manifest = s.read(folder / MANIFEST, SPEC, max_bytes=1 << 20, follow=follow)
    except OSError as exc:  # a pipe, a link, too large: bad input, as a part file that is no regular file
        raise UsageError(f"{arg}: {cannot_read(folder / MANIFEST, exc)}") from None
    except (s.Invalid, ValueError) as exc:
        raise GentoolError(f"{arg}: {folder / MANIFEST} is not a couplings manifest gentool wrote ({exc})") from None
    _check_manifest(manifest, folder, arg)
    return manifest


def _check_manifest(manifest: dict, folder: Path, arg: str) -> None:
    """Fields each well-typed but impossible together (attacker hour h26v): class names that do not name the
    geometry's classes once each, and a teacher's sampler no gentool family has (steps below 1; a solver name that is
    no identifier), which the student's first line and metadata would repeat."""
    data = manifest["data"]
    problem = class_names_problem(data.get("class_names") or [], data["geometry"]["num_classes"])
    if problem:
        raise GentoolError(f"{arg}: {folder / MANIFEST}: {problem}")
    sampling = manifest["teacher"]["sampling"]
    steps, solver = sampling.get("steps", 1), sampling.get("solver", "euler")
    good_steps = isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= 1000
    if not good_steps or not (isinstance(solver, str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,19}", solver)):
        raise GentoolError(f"{arg}: {folder / MANIFEST}: teacher.sampling {str(sampling)[:80]} is no sampler gentool "
                           f"runs (steps from 1 to 1,000, a solver's name)")


def part_path(folder: Path, k: int) -> Path:
    return folder / f"part_{k:05d}.safetensors"


def parts_done(folder: Path, arg: str = "--data") -> int:
    """How many parts, from the first, are complete (each is written atomically: present means whole). Anything
    else by a part's name (a link, a folder, a pipe, a device) is refused in one line naming it: counted as not
    drawn, it would be drawn over, and a link would be read as a part gentool wrote."""
    from gentool.fileio import what_stands

    k, mode = _regular_parts(folder)
    if mode is not None:
        path = part_path(folder, k)
        raise UsageError(f"{arg}: {path} is {what_stands(path)}, not a couplings part gentool wrote (a regular "
                         f"file); move it away")
    return k


def _regular_parts(folder: Path) -> tuple[int, int | None]:
    """The count of regular part files from the first, and the mode of what stands at the next part's name when it
    is there but not a regular file (looked at without following links; never opened, so a pipe cannot block)."""
    for k in range(MAX_PARTS):
        try:
            mode = os.lstat(part_path(folder, k)).st_mode
        except FileNotFoundError:
            return k, None
        if not stat.S_ISREG(mode):
            return k, mode
    return MAX_PARTS, None


def write_part(folder: Path, k: int, images: torch.Tensor, latents: torch.Tensor, labels: torch.Tensor) -> None:
    from safetensors.torch import save

    from gentool.fileio import atomic_write_bytes

    tensors = {"images": images.contiguous(), "latents": latents.to(torch.float16).contiguous(),
               "labels": labels.long().contiguous()}
    meta = {"format": FORMAT, "part": str(k), "sha256": tensors_digest(tensors)}
    atomic_write_bytes(part_path(folder, k), save(tensors, metadata=meta))


def _expected(manifest: dict, n: int) -> dict:
    g = manifest["data"]["geometry"]
    return {"images": ("U8", (n, g["channels"], g["height"], g["width"])),
            "latents": ("F16", (n, *manifest["latent_shape"])), "labels": ("I64", (n,))}


def _read_part(path: Path, manifest: dict, arg: str, rows: int) -> dict[str, torch.Tensor]:
    """The first `rows` pairs of one part, after checking its header against the manifest."""
    from safetensors import SafetensorError, safe_open

    from gentool.fileio import regular_path

    try:
        with regular_path(path) as pinned, safe_open(pinned, framework="pt") as f:
            expected = _expected(manifest, manifest["part"])
            meta, index = f.metadata() or {}, str(int(path.stem.removeprefix("part_")))  # (a part_path name)
            if meta.get("format") != FORMAT or meta.get("part") != index:  # what write_part wrote there
                raise GentoolError(f"{arg}: {path}: its header says format {str(meta.get('format'))[:40]!r}, part "
                                   f"{str(meta.get('part'))[:20]!r}; expected {FORMAT!r}, part {index}")
            if set(f.keys()) != set(expected):
                raise GentoolError(f"{arg}: {path} holds tensors {listed(sorted(f.keys()))}; expected "
                                   f"{listed(sorted(expected))}")
            for key, (dtype, shape) in expected.items():
                sl = f.get_slice(key)
                if sl.get_dtype() != dtype or tuple(sl.get_shape()) != shape:
                    raise GentoolError(f"{arg}: {path}: tensor {key} is {sl.get_dtype()} {dims(sl.get_shape())}; "
                                       f"expected {dtype} {dims(shape)}")
            if not isinstance(meta.get("sha256"), str):  # a missing digest checks nothing: damage, as a wrong one
                raise GentoolError(f"{arg}: {path}: its header has no sha256, the digest its values are checked "
                                   f"against")
            tensors = {k: f.get_slice(k)[:manifest["part"]] for k in expected}  # the digest is of whole tensors
    except (SafetensorError, OSError, MemoryError) as exc:  # MemoryError: a part too large to map in this process
        raise GentoolError(f"{arg}: {path} is not a readable couplings part ({exc})") from None
    if tensors_digest(tensors) != meta["sha256"]:
        raise GentoolError(f"{arg}: {path}: its values are not those written (their SHA-256 differs from the one in "
                           f"its header): damaged after it was drawn")
    tensors = {k: t[:rows] for k, t in tensors.items()}
    if not torch.isfinite(tensors["latents"]).all():
        raise GentoolError(f"{arg}: {path}: tensor latents holds NaN or infinite values")
    if tensors["latents"].numel() and tensors["latents"].abs().max() > MAX_LATENT:
        raise GentoolError(f"{arg}: {path}: tensor latents holds values beyond ±{MAX_LATENT:g}, which a teacher's "
                           f"standard normal noise does not")
    return tensors


def load_couplings(folder: Path, limit: int | None = None, arg: str = "--data"):
    """The couplings in `folder` as a data set: the first `limit` pairs (all complete parts when None), with their
    latents and where they came from (`origin`: the teacher and the data set it imitates)."""
    from gentool.datatypes import Geometry, ImageData

    manifest = read_manifest(folder, arg)
    done = parts_done(folder, arg)
    want = done if limit is None else min(done, -(-limit // manifest["part"]))
    if want == 0 or (limit is not None and want * manifest["part"] < limit):
        have = done * manifest["part"]
        raise GentoolError(f"{arg}: {folder} holds {have:,} couplings; {limit or 1:,} needed (draw more with "
                           f"gentool distill)")
    pairs = want * manifest["part"] if limit is None else limit
    check_memory(pairs, manifest["data"]["geometry"], manifest["latent_shape"], arg, "--limit N", f" in {folder}")
    parts = [_read_part(part_path(folder, k), manifest, arg, min(manifest["part"], pairs - k * manifest["part"]))
             for k in range(want)]
    joined = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    labels = joined["labels"]
    _check_labels(labels, folder, arg)
    g = manifest["data"]["geometry"]
    geometry = Geometry(g["channels"], g["height"], g["width"], g["num_classes"])
    data = manifest["data"]
    origin = {"source": data.get("source"), "teacher": manifest["teacher"], "couplings": str(folder.absolute())}
    return ImageData(data.get("name") or "couplings", joined["images"], labels, geometry,
                     list(data.get("class_names") or []), latents=joined["latents"], origin=origin)


def couplings_line(data: str, couplings) -> str:
    """What `train --data COUPLINGS` read: "--data DIR: 20,000 couplings of flow step 2,423 (steps 16, solver
    euler), imitating mnist"."""
    teacher, origin = couplings.origin["teacher"], couplings.origin.get("source")
    return (f"--data {data}: {len(couplings):,} couplings of {teacher['model']} step {teacher['step']:,} "
            f"({settings_text(teacher['sampling'])}){f', imitating {origin}' if origin else ''}")


def _check_labels(labels: torch.Tensor, where: Path, arg: str) -> None:
    """Distill's teachers are unconditional (gentool.distill refuses the others), so every pair's label is -1."""
    if (labels != -1).any():
        raise GentoolError(f"{arg}: {where}: labels hold {int(labels[labels != -1][0])}; couplings of an "
                           f"unconditional teacher are labelled -1")


def usable_parts(folder: Path, manifest: dict, noise_of, redraw, needed: int | None = None) -> int:
    """Before distill draws into `folder` (its cache of one teacher's pairs): how many parts, from the first, the
    student can train on. A manifest that is damaged, or another teacher's or sampler's (a run moved or copied),
    moves the whole folder aside (its parts are not this teacher's); the first damaged part (truncated, not a file,
    wrong shapes, labels not -1, noise other than `noise_of(k)`: part k's noise, drawn from its own seed; among the
    first `needed`, images other than the teacher's, `_first_unlike`) is moved aside and drawn again. Each is one
    warning line (gentool.cache.set_aside), never a failure on every later run."""
    from gentool.cache import set_aside

    if os.path.lexists(folder / MANIFEST):
        try:
            old = read_manifest(folder, "RUN", follow=False)
            problem = None if _same(old, manifest) else f"{MANIFEST} is another teacher's or sampler's"
        except GentoolError as exc:
            problem = str(exc).removeprefix("RUN: ")
        if problem:
            set_aside(folder, problem)
            return 0
    done, special = _regular_parts(folder)
    if special is not None:  # the user's folder for train --data refuses it; distill's own cache moves it aside
        from gentool.fileio import what_stands

        path = part_path(folder, done)
        set_aside(path, f"it is {what_stands(path)}, not a couplings part gentool wrote")
    rows = []  # (noise, stored images) of the rows re-drawn, per part to verify
    for k in range(done):
        try:
            tensors = _read_part(part_path(folder, k), manifest, "RUN", manifest["part"])
            _check_labels(tensors["labels"], part_path(folder, k), "RUN")
            noise = noise_of(k)
            if not torch.equal(tensors["latents"], noise.to(torch.float16)):  # cheap: no network is run
                raise GentoolError(f"RUN: {part_path(folder, k)}: tensor latents is not the noise of this part's seed")
        except GentoolError as exc:
            set_aside(part_path(folder, k), str(exc).removeprefix(f"RUN: {part_path(folder, k)}").lstrip(": "))
            done = k
            break
        if needed is None or k < needed:
            pick = check_rows(k, manifest["part"])
            rows.append((noise[pick], tensors["images"][pick]))
    unlike = _first_unlike(rows, redraw)
    if unlike is None:
        return done
    set_aside(part_path(folder, unlike[0]), unlike[1])
    return unlike[0]


# Each part's images are checked against the teacher on a few of its rows: noise is cheap to check (its seed), an image
# is not (only the teacher makes it, and drawing is the cost). CHECK_ROWS of PART is 0.4 % of the drawing: on a busy
# 2-core AMD EPYC, 1 thread, re-drawing the rows of 20 parts (40 MNIST digits, one batched call for all parts) took
# 0.8 s (bf16) and 1.2 s (fp32) with a 16-step flow teacher of 0.2 M parameters, 1.3 s and 2.2 s at 32 steps, on top
# of 0.3 s to read the parts and check their noise; drawing those 20 parts takes 3 to 9 minutes at the same rates.
CHECK_ROWS = 2
# An honest re-draw differs from the stored images by rounding alone. Measured on MNIST flow and ddpm (ddim) teachers
# at 2 and 32 steps: batches of 1 to 50 change nothing in fp32 or bf16; bf16 against fp32 differs by at most 0.2
# levels averaged over an image for flow and 2.7 for ddpm at 2 steps (a few pixels flip far). A zeroed image differs
# by 48 to 76 on average over those teachers (a digit's ink: 33 over real MNIST), another noise's image by 60 or
# more. The tolerance is three times the worst rounding and well below damage.
IMAGE_TOLERANCE = 8.0  # uint8 levels, averaged over an image


def check_rows(k: int, part: int) -> torch.Tensor:
    """The rows of part k re-drawn to verify it: CHECK_ROWS of them, the same on every run (from k itself)."""
    return torch.randperm(part, generator=torch.Generator().manual_seed(k))[:CHECK_ROWS]


def _first_unlike(rows: list[tuple[torch.Tensor, torch.Tensor]], redraw) -> tuple[int, str] | None:
    """The first part whose stored images are not what the teacher draws from their noise (`redraw(noise)`: uint8
    N×C×H×W), and why; None when all agree. All parts' rows go through the teacher in one call."""
    if not rows:
        return None
    drawn = redraw(torch.cat([noise for noise, _ in rows]))
    stored = torch.cat([images for _, images in rows])
    gap = (drawn.int() - stored.int()).abs().float().flatten(1).mean(1).view(len(rows), -1).amax(1)
    for k, worst in enumerate(gap.tolist()):
        if not worst <= IMAGE_TOLERANCE:
            return k, (f"its images are not the teacher's samples from their noise: {CHECK_ROWS} drawn again differ "
                       f"by {worst:.1f} levels on average (rounding makes at most {IMAGE_TOLERANCE:g})")
    return None


def _same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def make_manifest(teacher: dict, data: dict, seed: int, latent_shape) -> dict:
    return {"format": FORMAT, "version": 1, "teacher": teacher, "data": data, "seed": seed, "part": PART,
            "latent_shape": list(latent_shape)}


def pair_bytes(geometry: dict, latent_shape) -> int:
    """Bytes one coupling takes, in memory and in its part file alike: uint8 image, fp16 noise, int64 label."""
    return geometry["channels"] * geometry["height"] * geometry["width"] + 2 * math.prod(latent_shape) + 8


def check_memory(pairs: int, geometry: dict, latent_shape, arg: str, fewer: str, where: str = "") -> None:
    """Refuse, before a byte is read or drawn, `pairs` couplings (images, noise, labels: their shapes say how much)
    that would not fit in the memory data sets may take, where the student reads them all; `arg` names the option
    that asked for them, `fewer` the one that asks for fewer, `where` the folder they are read from."""
    from gentool.folders import MEMORY_SHARE, gib, memory_bound

    each, bound = pair_bytes(geometry, latent_shape), memory_bound()
    if pairs * each > bound:
        raise UsageError(f"{arg}: {pairs:,} couplings{where} take {gib(pairs * each)} in memory; at most {gib(bound)} "
                         f"({MEMORY_SHARE:.0%} of this machine's memory) are read; pass a smaller {fewer} (at most "
                         f"{bound // each:,} couplings of this teacher fit)")


def check_drawing(folder: Path, geometry: dict, latent_shape, pairs: int, have: int,
                  student: tuple[Path, int] | None = None) -> None:
    """Refuse `distill --pairs`, before anything is drawn or written, when the student could not read that many
    couplings into memory or the disk under `folder` cannot hold the whole parts still to draw (from `have` pairs
    to `pairs` rounded up to a part) and, when `student` (its run folder and the bytes its run asks for) is on the
    same disk, the student's run too."""
    from gentool.folders import gib
    from gentool.paths import nearest_folder, require_free

    check_memory(pairs, geometry, latent_shape, "--pairs", "--pairs N")
    more = max(math.ceil(pairs / PART) * PART - have, 0)
    existing = nearest_folder(folder)
    need, also = more * pair_bytes(geometry, latent_shape), ""
    if student is not None and os.stat(nearest_folder(student[0])).st_dev == os.stat(existing).st_dev:
        need, also = need + student[1], f" with the student's run in {student[0]} ({gib(student[1])})"
    if more:
        require_free(existing, need, "--pairs", f"drawing {more:,} more couplings{also}",
                     "pass a smaller --pairs or free some space there")


def manifest_geometry(folder: Path):
    from gentool.datatypes import Geometry

    g = read_manifest(folder)["data"]["geometry"]
    return Geometry(g["channels"], g["height"], g["width"], g["num_classes"])


def new_manifest(folder: Path, teacher: dict, data: dict, seed: int, latent_shape) -> dict:
    """Write (or check against) the folder's manifest: one folder holds the pairs of one teacher, sampler and seed."""
    from gentool.fileio import atomic_write_json, make_dirs

    manifest = make_manifest(teacher, data, seed, latent_shape)
    if os.path.lexists(folder / MANIFEST):  # a link (even a dangling one) is named, not followed nor replaced
        old = read_manifest(folder, "RUN", follow=False)
        if not _same(old, manifest):
            raise GentoolError(f"{folder}: holds couplings of another teacher or sampler ({MANIFEST} differs)")
        return old
    make_dirs(folder)  # refused through a link (gentool.distill owns the teacher's run folder)
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest
