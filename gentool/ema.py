"""An exponential moving average of the networks a model samples with (`--ema DECAY`).

The average covers every floating-point parameter and buffer of `model.sampling_networks` (the generator, or the
VAE's decoder), BatchNorm running statistics included, so the averaged network is used as it is. It is saved in
the checkpoint beside the raw weights (tensors `ema.<network>.<name>`) and is what `sample`, `evaluate` and the
epoch grids use by default.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from gentool.errors import UsageError, bad_value

PREFIX = "ema."


def check_decay(decay, arg: str = "--ema") -> float:
    """A decay must lie in (0, 1); returns it as a float."""
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 < decay < 1:
        raise bad_value(arg, decay, "a number in (0, 1) such as 0.999")
    return float(decay)


class EMA:
    """The averaged copies; `update` after every optimisation step, `applied` to sample with them."""

    def __init__(self, model, decay: float, tensors: dict[str, torch.Tensor] | None = None, updates: int = 0):
        self.decay = check_decay(decay)
        self.updates = updates
        if not model.sampling_networks:
            raise UsageError(f"--ema: {model.name} names no sampling networks to average")
        live = _live_tensors(model)
        if tensors is None:
            tensors = {k: v.detach().clone() for k, v in live.items()}
        elif tensors.keys() != live.keys() or any(tensors[k].shape != v.shape for k, v in live.items()):
            raise UsageError(f"checkpoint: its EMA tensors do not match {model.name}'s sampling networks")
        self.shadow = {k: v.to(live[k].device) for k, v in tensors.items()}

    def restart(self, model) -> None:
        """Start the average again from the model's weights now (a student given its teacher's weights)."""
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in _live_tensors(model).items()}

    @torch.no_grad()
    def update(self, model) -> None:
        """shadow ← d·shadow + (1 − d)·live, with d warmed up as min(decay, (1 + n)/(10 + n)) so the early average
        is not dominated by the random initial weights."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        floats, live_floats = [], []
        for key, live in _live_tensors(model).items():
            if live.is_floating_point():
                floats.append(self.shadow[key])
                live_floats.append(live.detach())
            else:
                self.shadow[key].copy_(live)
        if floats:
            torch._foreach_lerp_(floats, live_floats, 1.0 - d)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averaged tensors under their checkpoint names."""
        return {PREFIX + k: v for k, v in self.shadow.items()}

    def meta(self) -> dict:
        return {"decay": self.decay, "updates": self.updates}

    @contextmanager
    def applied(self, model):
        """Within the block the model's sampling networks hold the averaged weights; the raw ones come back after."""
        live = _live_tensors(model)
        saved = {k: v.detach().clone() for k, v in live.items()}
        try:
            with torch.no_grad():
                for k, v in live.items():
                    v.copy_(self.shadow[k])
            yield model
        finally:
            with torch.no_grad():
                for k, v in live.items():
                    v.copy_(saved[k])


def _live_tensors(model) -> dict[str, torch.Tensor]:
    """The sampling networks' parameters and buffers, by "<network>.<name>" (the tensors themselves, not copies)."""
    out = {}
    for net_name in model.sampling_networks:
        net = getattr(model, net_name)
        for key, value in net.state_dict(keep_vars=True).items():
            out[f"{net_name}.{key}"] = value.data if isinstance(value, torch.nn.Parameter) else value
    return out
