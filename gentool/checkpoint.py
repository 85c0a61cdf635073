"""Checkpoints: one safetensors file with every network's weights, the optimizer state and RNG state as tensors,
and string metadata (format version, gentool version, model name and source, config JSON, data geometry, run state).

Nothing is ever unpickled: the file is read with safetensors and its metadata with json, and the metadata is
validated (types, names, shapes against the model rebuilt from its config) before any tensor is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

import gentool
from gentool.ema import EMA
from gentool.ema import PREFIX as EMA_PREFIX
from gentool.errors import GentoolError, UsageError
from gentool.fileio import atomic_write_bytes
from gentool.models.base import GenerativeModel
from gentool.registry import get_entry

FORMAT = "gentool-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "gentool_version", "model", "config", "data", "state")
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable")  # optimizer settings that pick a kernel, not a result


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model, its optimizers' saved state and the run state."""

    model: GenerativeModel
    meta: dict
    state: dict
    data: dict
    optimizer_state: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)
    ema_tensors: dict = field(default_factory=dict)  # the averaged sampling networks (--ema), by "<net>.<name>"
    weights: str = "raw"  # which weights the model holds: "raw" or "ema"

    @property
    def ema_meta(self) -> dict | None:
        """{"decay", "updates"} of the run's EMA, or None when it was trained without --ema."""
        return self.meta.get("ema")

    def load_optimizers(self, optimizers: dict) -> None:
        """Restore saved optimizer state into freshly built optimizers."""
        for name, opt in optimizers.items():
            if name not in self.optimizer_state:
                raise GentoolError(f"checkpoint: no state for optimizer {name!r}")
            saved = self.optimizer_state[name]
            # JSON turned tuples (Adam's betas) into lists; give them back the type the optimizer uses. Which
            # kernel runs (fused, foreach) is this machine's choice, made when the optimizer was built, not the
            # saving machine's.
            groups = [{**{k: tuple(v) if isinstance(ref.get(k), tuple) else v for k, v in group.items()},
                       **{k: ref[k] for k in IMPLEMENTATION_KEYS if k in ref}}
                      for group, ref in zip(saved["param_groups"], opt.param_groups)]
            opt.load_state_dict({"state": saved["state"], "param_groups": groups})
            _match_layouts(opt)


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give per-parameter state tensors their parameter's memory layout. Checkpoints store them contiguous, and a
    fused optimizer kernel walks parameter and state memory in step: on a channels-last model a contiguous moment
    would be applied to the wrong elements (measured: resumed weights off by up to 0.16 after one Adam step)."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _optimizer_tensors(name: str, opt: torch.optim.Optimizer, tensors: dict) -> dict:
    sd = opt.state_dict()
    scalars: dict = {}
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(path, model: GenerativeModel, optimizers: dict, state: dict, data: dict, source: str,
                    ema=None) -> None:
    """Write a checkpoint atomically; `state` holds epoch, step, seed and other JSON-able run state; `ema` (an
    `gentool.ema.EMA`) adds the averaged sampling networks."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({k: v.detach().cpu().contiguous() for k, v in ema.tensors().items()})
    optim_meta = {name: _optimizer_tensors(name, opt, tensors) for name, opt in optimizers.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "gentool_version": gentool.__version__,
        "model": model.name, "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_source": source, "config": json.dumps(model.config.to_dict()), "data": json.dumps(data),
        "state": json.dumps(state), "optimizers": json.dumps(optim_meta),
    }
    if ema is not None:
        meta["ema"] = json.dumps(ema.meta())
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def read_metadata(path, arg: str = "CKPT") -> dict:
    """The validated metadata of a checkpoint file, read without touching its tensors; `arg` names the argument
    the path came from in error messages."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{arg}: {path} is a directory; expected a .safetensors checkpoint file")
    if not path.is_file():
        raise UsageError(f"{arg}: {path} does not exist; expected a .safetensors checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise GentoolError(f"{arg}: {path} is not a readable safetensors checkpoint ({exc})") from None
    return _validate_meta(path, meta, arg)


def _validate_meta(path: Path, meta: dict, arg: str) -> dict:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise GentoolError(f"{arg}: {path} is a safetensors file but not a gentool checkpoint (missing {missing or ['format']})")
    try:
        version = int(meta["format_version"])
        parsed = {k: json.loads(meta[k]) for k in ("config", "data", "state", "optimizers", "ema") if k in meta}
    except (ValueError, TypeError) as exc:
        raise GentoolError(f"{arg}: {path} has malformed metadata ({exc})") from None
    if version > FORMAT_VERSION:
        raise GentoolError(f"{arg}: {path} uses checkpoint format {version}, written by gentool "
                           f"{meta['gentool_version']}; this gentool {gentool.__version__} reads up to {FORMAT_VERSION}: upgrade gentool")
    if not all(isinstance(parsed[k], dict) for k in parsed):
        raise GentoolError(f"{arg}: {path} has malformed metadata (config, data and state must be JSON objects)")
    ema = parsed.get("ema")
    if ema is not None and not (isinstance(ema.get("decay"), float) and 0 < ema["decay"] < 1
                                and isinstance(ema.get("updates"), int) and ema["updates"] >= 0):
        raise GentoolError(f"{arg}: {path} has malformed metadata (ema needs a decay in (0, 1) and a count of updates)")
    state = parsed["state"]
    if not all(isinstance(state.get(k), int) and state[k] >= 0 for k in ("epoch", "step")):
        raise GentoolError(f"{arg}: {path} has malformed metadata (state.epoch and state.step must be integers ≥ 0)")
    return {**meta, **parsed, "format_version": version}


def _rebuild(path: Path, meta: dict, arg: str) -> GenerativeModel:
    try:
        entry = get_entry(meta["model"])
    except UsageError:
        source = meta.get("model_source", "")
        hint = f"; install the plugin package {source!r} that provides it" if source and source != "built-in" else ""
        raise GentoolError(f"{arg}: {path} holds model {meta['model']!r}, which is not registered{hint}") from None
    try:
        config = entry.cls.config_class.from_dict(meta["config"])
        config.validate()
        return entry.cls(config)
    except (TypeError, ValueError, RuntimeError, GentoolError) as exc:
        raise GentoolError(f"{arg}: {path} has a config that cannot rebuild {meta['model']!r}: {exc}") from None


WEIGHTS = ("auto", "ema", "raw")


def load_checkpoint(path, device: torch.device | str = "cpu", arg: str = "CKPT", weights: str = "auto") -> Checkpoint:
    """Rebuild the model from the checkpoint's metadata alone and load its weights (shapes checked first).

    weights: "auto" gives the model the EMA weights of its sampling networks when the run kept them (--ema) and
    the raw ones otherwise; "ema" insists on them; "raw" always loads the weights the optimizer trained."""
    if weights not in WEIGHTS:
        raise UsageError(f"--weights: got {weights!r}; expected one of {', '.join(WEIGHTS)}")
    path = Path(path)
    meta = read_metadata(path, arg)
    model = _rebuild(path, meta, arg)
    expected = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        wanted = {f"model.{k}" for k in expected}
        if wanted - keys or {k for k in keys if k.startswith("model.")} - wanted:
            raise GentoolError(f"{arg}: {path} does not match model {meta['model']!r}: missing "
                               f"{sorted(wanted - keys)[:3]}, unexpected {sorted({k for k in keys if k.startswith('model.')} - wanted)[:3]}")
        tensors = {}
        for k, ref in expected.items():
            sl = f.get_slice(f"model.{k}")
            if tuple(sl.get_shape()) != tuple(ref.shape):
                raise GentoolError(f"{arg}: {path}: tensor {k} has shape {tuple(sl.get_shape())}, model needs {tuple(ref.shape)}")
            tensors[k] = f.get_tensor(f"model.{k}")
        other = {k: f.get_tensor(k) for k in keys if not k.startswith("model.")}
    model.load_state_dict(tensors)
    optim = _optimizer_state(meta.get("optimizers", {}), other)
    rng = {k[4:]: v for k, v in other.items() if k.startswith("rng.")}
    ema = {k[len(EMA_PREFIX):]: v for k, v in other.items() if k.startswith(EMA_PREFIX)}
    ckpt = Checkpoint(model, meta, meta["state"], meta["data"], optim, rng, ema)
    _choose_weights(ckpt, weights, path, arg)
    model.to(device)
    return ckpt


def _choose_weights(ckpt: Checkpoint, weights: str, path: Path, arg: str) -> None:
    if weights == "raw" or (weights == "auto" and ckpt.ema_meta is None):
        return
    if ckpt.ema_meta is None:
        raise UsageError(f"--weights: got 'ema', but {path} was trained without --ema; expected raw or auto")
    try:
        ema = EMA(ckpt.model, ckpt.ema_meta["decay"], ckpt.ema_tensors, ckpt.ema_meta["updates"])
    except UsageError as exc:
        raise GentoolError(f"{arg}: {path}: {exc}") from None
    with torch.no_grad():
        for key, value in ema.shadow.items():
            net, name = key.split(".", 1)
            getattr(ckpt.model, net).state_dict()[name].copy_(value)
    ckpt.weights = "ema"


def _optimizer_state(optim_meta: dict, tensors: dict) -> dict:
    out = {}
    for name, info in optim_meta.items():
        state: dict = {}
        for idx, entries in info.get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(entries)
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                idx, sub = key[len(prefix):].split(".", 1)
                state.setdefault(int(idx), {})[sub] = value
        out[name] = {"state": state, "param_groups": info["param_groups"]}
    return out


def restore_rng(rng: dict) -> None:
    """Put the saved RNG states back so a resumed run draws the same noise as an uninterrupted one."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def checkpoint_size_hint(model: GenerativeModel) -> int:
    """Bytes a checkpoint of `model` needs, roughly (weights plus two Adam moments)."""
    return 3 * sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (1 << 16)


__all__ = ["Checkpoint", "load_checkpoint", "read_metadata", "restore_rng", "save_checkpoint", "checkpoint_size_hint"]
