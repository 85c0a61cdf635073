"""A checkpoint's string metadata, read and checked field by field before anything uses it.

Files may be hostile: every JSON field is parsed with bounded nesting and checked against what gentool writes
(types, ranges, consistency), and a problem is one line naming the file and the field. The optimizer metadata is
parsed only by `optimizer_meta`, when a run resumes: sampling and evaluation never read it.
"""

from __future__ import annotations

import os
from pathlib import Path

import gentool
from gentool import schema as s
from gentool.errors import GentoolError, UsageError
from gentool.fileio import regular_path
from gentool.paths import check_input_file
from gentool.history import PARTIAL_EPOCH  # the epoch in progress, as gentool.history.PartialEpoch holds it
from gentool.models.fields import MAX_SIDE  # pixels along an image side (--image-size is held to it)

FORMAT = "gentool-checkpoint"
FORMAT_VERSION = 1
EXPECTED = "a .safetensors checkpoint written by gentool"  # what an argument naming a checkpoint accepts
REQUIRED_KEYS = ("format", "format_version", "gentool_version", "model", "config", "data", "state")
MAX_COUNT = 10**9  # epochs, batches, images: as train's options allow
MAX_STEP = 10**15
MAX_CLASSES = 1000
SEED = s.Int(-(2**63), 2**64 - 1)  # what torch.manual_seed accepts

GEOMETRY = s.Obj({"channels": s.Int(1, 4), "height": s.Int(1, MAX_SIDE), "width": s.Int(1, MAX_SIDE)},
                 {"num_classes": s.Int(0, MAX_CLASSES)})
NAME = s.Str(200, r"[A-Za-z0-9_.:+\-]+")
# The teacher a distilled model learnt from (`gentool distill`), as its couplings and the student's data record it.
TEACHER = s.Obj({"checkpoint": s.Str(), "model": NAME, "step": s.Int(0, MAX_STEP), "epoch": s.Int(0, MAX_COUNT),
                 "weights": s.Str(20), "sampling": s.Map(s.SCALAR, max_len=20)})
DATA = s.Obj({"geometry": GEOMETRY},
             {"name": s.Opt(s.Str(200)), "source": s.Opt(s.Str()), "pixel_range": s.List(s.Num(), length=2),
              "class_names": s.Opt(s.List(s.Str(200), MAX_CLASSES)), "teacher": TEACHER, "couplings": s.Str(),
              "data_dir": s.Str(4096, r"[^\x00-\x1f\x7f]+")})  # a path evaluate reads: no NUL, no controls
RUN_OPTIONS = s.Obj({}, {"data": s.Opt(s.Str()), "limit": s.Opt(s.Int(1, MAX_COUNT)),
                         "image_size": s.Opt(s.Int(1, MAX_SIDE)), "seed": SEED,
                         "checkpoint_every": s.Int(0, MAX_COUNT), "sample_every": s.Int(0, MAX_COUNT),
                         "checkpoint_minutes": s.Num(0, 10**7)})
STATE = s.Obj({"epoch": s.Int(0, MAX_COUNT), "step": s.Int(0, MAX_STEP)},
              {"seed": SEED, "options": RUN_OPTIONS, "stopped": s.Opt(s.Str()), "batch": s.Int(0, MAX_COUNT),
               "partial": PARTIAL_EPOCH,
               "precision": s.Obj({"used": s.Str(4, r"fp32|bf16|fp16")}, {"host": s.Str(24, r"[0-9a-f]{24}")})})
EMA = s.Obj({"decay": s.Num(0, 1, open_lo=True, open_hi=True), "updates": s.Int(0, MAX_STEP)})
# Per optimizer: its parameter groups (hyperparameters and parameter indices) and non-tensor per-parameter state.
GROUP = s.Obj({"params": s.List(s.Int(0, 10**6), 10**6)})
OPTIMIZER = s.Obj({"param_groups": s.List(GROUP, 1000)},
                  {"scalars": s.Map(s.Map(s.Num(), key=r"[A-Za-z_][A-Za-z0-9_]{0,63}"), key=r"[0-9]{1,7}")})
OPTIMIZERS = s.Map(OPTIMIZER, key=r"[A-Za-z_][A-Za-z0-9_]{0,63}", max_len=100)


class CheckpointError(GentoolError):
    """A checkpoint gentool will not use; the message names the file and what is wrong."""


def refuse(arg: str, path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{arg}: {path}: {what}")


def read_metadata(path, arg: str = "CKPT", expected: str = EXPECTED) -> dict:
    """The validated metadata of a checkpoint file, read without touching its tensors; `arg` names the argument
    the path came from in error messages and `expected` what it accepts. JSON fields come back parsed (except
    `optimizers`). A file that is no checkpoint at all (a text file, an image, not gentool's) is bad input (exit 2)
    in one line saying so; a checkpoint that fails its checks is a damaged file (exit 1)."""
    from safetensors import SafetensorError, safe_open

    path = check_input_file(Path(path), arg, expected)
    try:
        with regular_path(path) as pinned:
            if (why := _not_safetensors(pinned)) is not None:
                raise UsageError(f"{arg}: {path} is not a gentool checkpoint ({why}); expected {expected}")
            with safe_open(pinned, framework="pt") as f:
                meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GentoolError(f"{arg}: {path} is not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{arg}: {path} is not a gentool checkpoint (a safetensors file without gentool's "
                         f"metadata); expected {expected}")
    return validate_metadata(path, meta, arg)


def _not_safetensors(path: str) -> str | None:
    """Why the file is no safetensors file, from its first bytes (a little-endian 8-byte header length, then a JSON
    header of that length beginning with "{"), or None when it may be one: said plainly, where the library's
    "header too large" would not tell a user that a PNG or a text file was given."""
    with open(path, "rb") as f:
        head, size = f.read(9), os.fstat(f.fileno()).st_size
    if size == 0:
        return "the file is empty"
    length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if not 2 <= length <= size - 8 or head[8:9] != b"{":
        return "its first bytes are not a safetensors header"
    return None


def validate_metadata(path: Path, meta: dict, arg: str) -> dict:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise refuse(arg, path, f"metadata field {missing[0]} is missing")
    try:
        version = int(s.Str(20, r"[0-9]{1,18}").check(meta["format_version"], "format_version"))
        parsed = {k: s.parse(meta[k], k) for k in ("config", "data", "state", "ema") if k in meta}
        for key in ("gentool_version", "model", "model_source", "model_class"):
            if key in meta:
                s.check(meta[key], s.Str(200), key)
    except s.Invalid as exc:
        raise refuse(arg, path, f"metadata {exc}") from None
    if version > FORMAT_VERSION:
        raise GentoolError(f"{arg}: {path} uses checkpoint format {version}, written by gentool "
                           f"{meta['gentool_version']}; this gentool {gentool.__version__} reads up to {FORMAT_VERSION}: upgrade gentool")
    try:
        s.check(meta["model"], NAME, "model")
        s.check(parsed["config"], s.Map(s.Any(), key=r"[A-Za-z_][A-Za-z0-9_]{0,63}", max_len=200), "config")
        parsed["data"] = s.check(parsed["data"], DATA, "data")
        parsed["state"] = s.check(parsed["state"], STATE, "state")
        if "ema" in parsed:
            parsed["ema"] = s.check(parsed["ema"], EMA, "ema")
    except s.Invalid as exc:
        raise refuse(arg, path, f"metadata {exc}") from None
    return {**meta, **parsed, "format_version": version}


def check_geometry(meta: dict, config, path: Path, arg: str) -> None:
    """The data geometry recorded beside the config must be the one the config builds networks for."""
    g = meta["data"]["geometry"]
    recorded, built = (g["channels"], g["height"], g["width"]), (config.channels, config.image_height, config.image_width)
    if recorded != built:
        raise refuse(arg, path, f"metadata field data.geometry {'x'.join(map(str, recorded))} disagrees with field "
                                f"config ({'x'.join(map(str, built))})")


def optimizer_meta(meta: dict, path: Path, arg: str) -> dict:
    """The `optimizers` field, parsed and checked (only a resumed run reads it)."""
    if "optimizers" not in meta:
        raise refuse(arg, path, "metadata field optimizers is missing; this checkpoint cannot resume training")
    try:
        return s.check(s.parse(meta["optimizers"], "optimizers"), OPTIMIZERS, "optimizers")
    except s.Invalid as exc:
        raise refuse(arg, path, f"metadata {exc}") from None
