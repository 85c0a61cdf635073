"""`gentool export`: a checkpoint's sampler as one file that maps latent codes (and class labels) to images, for use
without gentool (onnxruntime, or torch.jit.load).

The file holds the whole sampler with the settings it was exported with: one pass of a decoder, or the unrolled
loop of a flow or diffusion sampler (every step a copy of the network's graph, the schedule as constants). Before
anything is written, the file is run in its own runtime on fixed codes and compared with gentool's images (fp32,
same codes); above the tolerance nothing is kept. The file and its JSON are written as temporaries beside the
target and renamed only when both are complete, so no failure leaves a partial file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import torch

import gentool
from gentool import stops
from gentool.checkpoint import load_checkpoint
from gentool.device import use_threads
from gentool.errors import GentoolError, UsageError, dims
from gentool.export_formats import BATCH, WRITERS, Sampler, require, runtime_version
from gentool.export_options import FORMATS, ExportOptions
from gentool.fileio import sha256, staged

PARITY_N, PARITY_SEED = 8, 0  # codes the file is checked on; it is traced on TRACE_N others, so the batch is free
TRACE_N = 2


def export(req: ExportOptions) -> dict:
    """Export the checkpoint's sampler, check its parity, then write the file and its JSON; returns the JSON."""
    out, meta_path = req.resolve()
    require(req.format, FORMATS[req.format][2])
    use_threads(req.threads, torch.device("cpu"))  # (the checkpoint is exported from the CPU)
    ckpt = _load(req)
    model = ckpt.model.eval()
    settings = model.sample_settings(req.sample_options)
    if not model.has_latent:
        raise UsageError(f"CKPT: {model.name} has no latent code; export writes a map from codes to images")
    z, labels = _codes(model, PARITY_N, PARITY_SEED)
    reference = _deterministic(model, z, labels, settings)
    module = Sampler(model, settings)
    example = tuple(a for a in _codes(model, TRACE_N, PARITY_SEED + 1) if a is not None)
    write, run = WRITERS[req.format]
    with _terminable(), staged(out) as tmp, staged(meta_path) as tmp_meta:
        made = _guarded(f"cannot be exported to {req.format}", model.name, write, module, example, tmp)
        images = _guarded(f"was exported, but the file fails in {runtime_version(req.format)}", model.name, run, tmp,
                          tuple(a for a in (z, labels) if a is not None))
        parity = _parity(images, reference.numpy(), req)
        info = _describe(req, ckpt, settings, out, tmp, {**made, "parity": parity})
        tmp_meta.write_text(json.dumps(info, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        os.replace(tmp_meta, meta_path)
    return {**info, "out": str(out), "json": str(meta_path)}


@contextlib.contextmanager
def _terminable():
    """SIGTERM (`kill`, a batch system) or SIGHUP (a closed terminal) while the temporaries exist raises a
    KeyboardInterrupt carrying its number, as Ctrl-C does, so they are removed on the way out (exit 143, 129);
    Python's default would end the process on the spot and leave them. A SIGHUP ignored (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    taken = [signal.SIGTERM] + ([signal.SIGHUP] if stops.hangup_is_free() else [])
    previous = {s: signal.signal(s, _stop) for s in taken}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop(signum, frame):
    raise stops.stopped(signum)


def _load(req: ExportOptions):
    """The checkpoint in fp32 on the CPU. Whatever is wrong with the file is bad input here (exit 2): export
    reads a checkpoint and writes nothing else."""
    try:
        return load_checkpoint(req.checkpoint, "cpu", arg="CKPT", weights=req.weights)
    except UsageError:
        raise
    except GentoolError as exc:
        raise UsageError(str(exc)) from None


def _codes(model, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`n` latent codes drawn from `seed`, and for a conditional model the labels 0, 1, …, K−1, 0, … (every class)."""
    return model.sample_latent(n, torch.Generator().manual_seed(seed)), model.spread_labels(n)


def _deterministic(model, z, labels, settings: dict) -> torch.Tensor:
    """gentool's images for the codes; refused when they depend on more than the codes (an ancestral sampler's
    fresh noise), which a file of codes → images cannot reproduce. The refusal names the setting that would make it
    deterministic, found by trying the family's declared choices (on two codes, as is the check itself)."""
    def varies(s: dict, n: int = 2) -> bool:
        return not torch.equal(_draw(model, z[:n], labels, s, 1), _draw(model, z[:n], labels, s, 2))

    if not varies(settings):
        return _draw(model, z, labels, settings, 1)
    for option in model.sample_options:
        for choice in option.choices:
            if choice != settings[option.name] and not varies({**settings, option.name: choice}):
                raise UsageError(f"--{option.name}: {model.name}'s sampler with --{option.name} "
                                 f"{settings[option.name]} draws noise beyond the latent code, which an exported "
                                 f"file cannot reproduce; export with --{option.name} {choice}")
    raise UsageError(f"CKPT: {model.name}'s sampler draws noise beyond the latent code, which an exported "
                     f"file cannot reproduce")


def _draw(model, z: torch.Tensor, labels, settings: dict, seed: int) -> torch.Tensor:
    """gentool's images for the codes `z` (and the first labels), anything else the sampler draws from `seed`."""
    n = len(z)
    return model.generate(n, torch.Generator().manual_seed(seed), None if labels is None else labels[:n], latents=z,
                          settings=settings)


def _guarded(what: str, name: str, step, *args):
    """`step(*args)`, a failure of the tracer or the runtime on a family's sampler being one line (exit 2): the
    sampler is what cannot be exported (e.g. it fixes the batch size, so the file fails on another), not gentool."""
    try:
        return step(*args)
    except OSError as exc:
        raise GentoolError(f"--out: the exported file cannot be written or read: {exc.strerror or exc}; nothing "
                           f"was written") from None
    except Exception as exc:  # noqa: BLE001 - whatever the tracer or runtime raised, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"CKPT: {name}'s sampler {what}: {first[:300]}; nothing was written") from None


def _parity(images: np.ndarray, reference: np.ndarray, req: ExportOptions) -> dict:
    """How far the file's images are from gentool's; refused above --tolerance."""
    if images.shape != reference.shape:
        raise GentoolError(f"export: the exported file gave images of shape {dims(images.shape)}, gentool "
                           f"{dims(reference.shape)}; nothing was written")
    diff = np.abs(images.astype(np.float64) - reference)
    worst, mean = float(diff.max()), float(diff.mean())
    if not worst <= req.tolerance:  # NaN fails too
        raise GentoolError(f"export: the exported file's images differ from gentool's by up to {worst:.3g} "
                           f"(mean {mean:.3g}), more than --tolerance {req.tolerance:g}; nothing was written")
    return {"n": len(reference), "seed": PARITY_SEED, "max_abs_diff": worst, "mean_abs_diff": mean,
            "tolerance": req.tolerance, "runtime": runtime_version(req.format),
            "compared_with": "gentool's own sampler in fp32 on the CPU, on the same latent codes and labels"}


def _describe(req: ExportOptions, ckpt, settings: dict, out: Path, tmp: Path, made: dict) -> dict:
    """The JSON beside the file: what goes in and comes out, and where it came from."""
    model, c = ckpt.model, ckpt.model.config
    inputs = {"z": {"shape": [BATCH, *model.latent_shape], "dtype": "float32",
                    "distribution": "standard normal"}}
    if model.conditional:
        inputs["labels"] = {"shape": [BATCH], "dtype": "int64", "range": [0, c.num_classes - 1],
                            "class_names": list(ckpt.data.get("class_names") or [])}
    return {
        "file": out.name, "format": req.format, "bytes": tmp.stat().st_size, "sha256": sha256(tmp),
        "inputs": inputs,
        "output": {"name": "images", "shape": [BATCH, c.channels, c.image_height, c.image_width],
                   "dtype": "float32", "range": [0.0, 1.0], "layout": "NCHW"},
        "model": model.name, "model_source": ckpt.meta.get("model_source"), "config": c.to_dict(),
        "checkpoint": str(Path(req.checkpoint).resolve()), "checkpoint_sha256": sha256(req.checkpoint),
        "weights": ckpt.weights,
        "step": ckpt.state.get("step"), "sampling": settings, "gentool_version": gentool.__version__, **made,
    }

