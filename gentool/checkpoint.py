"""Checkpoints: one safetensors file with every network's weights, the optimizer state and RNG state as tensors,
and string metadata (format version, gentool version, model name and source, config JSON, data geometry, run state).

Nothing is ever unpickled: the file is read with safetensors and its metadata with json. Loading checks the
metadata field by field (`checkpoint_meta`), rebuilds the model from its config on the `meta` device (no memory)
and compares every tensor's name, dtype and shape in the file's header with it before reading any weight; weights
must be finite. Optimizer and RNG state are read only when a run resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

import gentool
from gentool.checkpoint_meta import (
    EXPECTED,
    FORMAT,
    FORMAT_VERSION,
    check_geometry,
    optimizer_meta,
    read_metadata,
    refuse,
)
from gentool.ema import EMA
from gentool.ema import PREFIX as EMA_PREFIX
from gentool.errors import ConfigError, GentoolError, UsageError, dims, listed
from gentool.fileio import atomic_write_bytes, regular_path
from gentool.meta import shapes_only
from gentool.models.base import GenerativeModel
from gentool.registry import get_entry

IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable")  # optimizer settings that pick a kernel, not a result
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}
_STATE_NAME = re.compile(r"([0-9]{1,7})\.([A-Za-z_][A-Za-z0-9_]{0,63})")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model, its metadata and run state; optimizer and RNG state are read from
    `path` on demand (a resumed run needs them, sampling does not)."""

    model: GenerativeModel
    meta: dict
    state: dict
    data: dict
    path: Path
    arg: str = "CKPT"
    ema_tensors: dict = field(default_factory=dict)  # the averaged sampling networks (--ema), by "<net>.<name>"
    weights: str = "raw"  # which weights the model holds: "raw" or "ema"

    @property
    def ema_meta(self) -> dict | None:
        """{"decay", "updates"} of the run's EMA, or None when it was trained without --ema."""
        return self.meta.get("ema")

    @property
    def rng(self) -> dict:
        """The saved RNG states ("torch", "cuda"), checked to be states this torch can restore."""
        out = {}
        with regular_path(self.path) as pinned, safe_open(pinned, framework="pt") as f:
            for name, ref in (("torch", torch.get_rng_state()),
                              ("cuda", torch.cuda.get_rng_state() if torch.cuda.is_available() else None)):
                key = f"rng.{name}"
                if key not in f.keys() or ref is None:
                    continue
                sl = f.get_slice(key)
                if sl.get_dtype() != "U8" or tuple(sl.get_shape()) != tuple(ref.shape):
                    raise refuse(self.arg, self.path, f"tensor {key} is {sl.get_dtype()} {dims(sl.get_shape())}; "
                                                      f"expected an RNG state, U8 {dims(ref.shape)}")
                out[name] = f.get_tensor(key)
        return out

    def load_optimizers(self, optimizers: dict) -> None:
        """Restore the saved per-parameter optimizer state into freshly built optimizers, after checking every
        name, index, shape and value. Hyperparameters come from the model's config (the optimizers as built)."""
        info = optimizer_meta(self.meta, self.path, self.arg)
        with regular_path(self.path) as pinned, safe_open(pinned, framework="pt") as f:
            keys = [k for k in f.keys() if k.startswith("optim.")]
            stray = [k for k in keys if k.split(".")[1] not in optimizers]
            if stray:
                raise refuse(self.arg, self.path, f"tensor {stray[0]} belongs to no optimizer of {self.model.name} "
                                                  f"(it has {', '.join(optimizers)})")
            for name, opt in optimizers.items():
                state = self._optimizer_state(f, name, opt, info, [k for k in keys if k.split(".")[1] == name])
                try:
                    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
                except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                    raise refuse(self.arg, self.path, f"the state of optimizer {name} cannot be loaded ({exc})") from None
                _match_layouts(opt)

    def _optimizer_state(self, f, name: str, opt, info: dict, keys: list[str]) -> dict:
        if name not in info:
            raise refuse(self.arg, self.path, f"metadata field optimizers has no entry for optimizer {name}")
        groups = [g["params"] for g in info[name]["param_groups"]]
        if groups != [g["params"] for g in opt.state_dict()["param_groups"]]:
            raise refuse(self.arg, self.path, f"metadata field optimizers.{name}.param_groups does not match the "
                                              f"parameters of {self.model.name}'s {name} optimizer")
        params = [p for g in opt.param_groups for p in g["params"]]
        state: dict = {}
        for idx, entries in info[name].get("scalars", {}).items():
            if int(idx) >= len(params):
                raise refuse(self.arg, self.path, f"metadata field optimizers.{name}.scalars.{idx} names no parameter")
            state.setdefault(int(idx), {}).update(entries)
        prefix = f"optim.{name}."
        for key in keys:
            match = _STATE_NAME.fullmatch(key[len(prefix):])
            if not match or int(match.group(1)) >= len(params):
                raise refuse(self.arg, self.path, f"tensor {key} is not optim.{name}.<parameter index>.<state name> "
                                                  f"for one of its {len(params)} parameters")
            idx, sub = int(match.group(1)), match.group(2)
            shape = tuple(f.get_slice(key).get_shape())
            if shape not in ((), tuple(params[idx].shape)):
                raise refuse(self.arg, self.path, f"tensor {key} has shape {dims(shape)}; its parameter has "
                                                  f"{dims(params[idx].shape)}")
            state.setdefault(idx, {})[sub] = _finite(f.get_tensor(key), key, self.path, self.arg)
        expected = _state_keys(opt)
        for idx, entries in state.items():
            if expected and set(entries) != expected:
                raise refuse(self.arg, self.path, f"optimizer {name}'s state for parameter {idx} holds "
                                                  f"{listed(sorted(entries))}; expected {listed(sorted(expected))}")
        return state


def _state_keys(opt: torch.optim.Optimizer) -> set[str]:
    """The per-parameter state names one step of this optimizer creates (e.g. Adam: step, exp_avg, exp_avg_sq),
    found by stepping a copy on a one-element parameter; empty when that cannot be done."""
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    try:
        probe = type(opt)([p], **group)
        probe.step()
    except (TypeError, ValueError, RuntimeError):
        return set()
    return set(probe.state[p])


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


def _rebuild(path: Path, meta: dict, arg: str) -> GenerativeModel:
    """The model the config describes, built on the `meta` device: shapes without memory."""
    try:
        entry = get_entry(meta["model"])
    except UsageError:
        source = meta.get("model_source", "")
        hint = f"; install the plugin package {source!r} that provides it" if source and source != "built-in" else ""
        raise GentoolError(f"{arg}: {path} holds model {meta['model']!r}, which is not registered{hint}") from None
    try:
        config = entry.cls.config_class.from_dict(meta["config"])
        config.validate()
        with shapes_only():
            model = entry.cls(config)
    except ConfigError as exc:
        if exc.accepted is not None and exc.field in meta["config"]:  # a value the model refuses, named by its field
            raise refuse(arg, path, f"metadata field config.{exc.field} is {exc.value!r}; expected {exc.accepted}") \
                from None
        raise GentoolError(f"{arg}: {path} has a config that cannot rebuild {meta['model']!r}: {exc}") from None
    except UsageError as exc:
        raise GentoolError(f"{arg}: {path} has a config that cannot rebuild {meta['model']!r}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, GentoolError) as exc:
        raise GentoolError(f"{arg}: {path} has a config that cannot rebuild {meta['model']!r}: {exc}") from None
    check_geometry(meta, config, path, arg)
    return model


def _expected_tensors(model: GenerativeModel, with_ema: bool) -> dict[str, torch.Tensor]:
    """Every tensor the file must hold for `model` (meta tensors: name, dtype and shape)."""
    expected = {f"model.{k}": v for k, v in model.state_dict().items()}
    if with_ema:
        for net in model.sampling_networks:
            expected.update({f"{EMA_PREFIX}{net}.{k}": v for k, v in getattr(model, net).state_dict().items()})
    return expected


def _check_header(f, expected: dict, path: Path, arg: str, model_name: str) -> None:
    """Names, dtypes and shapes in the file's header against the rebuilt model, before any tensor is read."""
    held = {k for k in f.keys() if k.startswith(("model.", EMA_PREFIX))}
    missing, unexpected = sorted(expected.keys() - held), sorted(held - expected.keys())
    if missing or unexpected:
        raise GentoolError(f"{arg}: {path} does not match model {model_name!r}: missing "
                           f"{listed(missing, 3) or 'none'}, unexpected {listed(unexpected, 3) or 'none'}")
    for key, ref in expected.items():
        sl = f.get_slice(key)
        shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
        if shape != tuple(ref.shape):
            raise GentoolError(f"{arg}: {path}: tensor {key.split('.', 1)[1]} has shape {dims(shape)}, model needs "
                               f"{dims(ref.shape)}")
        if dtype != DTYPES.get(ref.dtype):
            raise refuse(arg, path, f"tensor {key} is {dtype}; the model needs {DTYPES.get(ref.dtype, ref.dtype)}")


def _finite(tensor: torch.Tensor, key: str, path: Path, arg: str) -> torch.Tensor:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise refuse(arg, path, f"tensor {key} holds NaN or infinite values; gentool never saves non-finite "
                                f"weights, so the file is damaged or was not written by gentool")
    return tensor


WEIGHTS = ("auto", "ema", "raw")


def load_checkpoint(path, device: torch.device | str = "cpu", arg: str = "CKPT", weights: str = "auto",
                    expected: str = EXPECTED) -> Checkpoint:
    """Rebuild the model from the checkpoint's metadata alone and load its weights (shapes checked first). `arg`
    and `expected` name the argument and what it accepts, in the one line refusing a file that is no checkpoint.

    weights: "auto" gives the model the EMA weights of its sampling networks when the run kept them (--ema) and
    the raw ones otherwise; "ema" insists on them; "raw" always loads the weights the optimizer trained."""
    if weights not in WEIGHTS:
        raise UsageError(f"--weights: got {weights!r}; expected one of {', '.join(WEIGHTS)}")
    path = Path(path)
    meta = read_metadata(path, arg, expected)
    model = _rebuild(path, meta, arg)
    expected = _expected_tensors(model, meta.get("ema") is not None)
    with regular_path(path) as pinned, safe_open(pinned, framework="pt") as f:
        _check_header(f, expected, path, arg, meta["model"])
        # copied out of the file's buffer one at a time: its tensors sit at the file's offsets, not at the 64-byte
        # alignment an allocation has, and vectorised kernels then sum in another order (last bits differ on an
        # AVX-512 CPU: a resumed run was not bit-exact with a straight one)
        tensors = {k: _finite(f.get_tensor(k), k, path, arg).clone() for k in expected}
    model = _with_weights(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    ema = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    ckpt = Checkpoint(model, meta, meta["state"], meta["data"], path, arg, ema)
    _choose_weights(ckpt, weights, path, arg)
    model.to(device)
    return ckpt


def _with_weights(model: GenerativeModel, tensors: dict) -> GenerativeModel:
    """The meta-device model with the file's tensors as its weights (no second copy). A model holding state
    outside its state_dict (left on the meta device) is built for real instead and the weights copied in."""
    model.load_state_dict(tensors, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = type(model)(model.config)
        model.load_state_dict(tensors)
    return model


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
