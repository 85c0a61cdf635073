"""Architecture tables counted like the study's (Keras) tables.

trainable = parameters that require gradients; non-trainable = frozen parameters plus floating-point buffers such
as BatchNorm running statistics (integer counters such as num_batches_tracked are not weights and are not counted).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from gentool.errors import UsageError
from gentool.meta import shapes_only
from gentool.models.base import GenerativeModel

# Beyond this a model is refused before its weights are allocated: 2 GB of fp32 weights, and training needs about
# four times that (gradients and the optimizer's two moments). The study's networks have at most a few million.
MAX_PARAMETERS = 500_000_000


def _counts(module: nn.Module, recurse: bool) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters(recurse=recurse) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse=recurse) if not p.requires_grad)
    buffers = sum(b.numel() for b in module.buffers(recurse=recurse) if b.is_floating_point())
    return trainable, frozen + buffers


def _layers(net: nn.Module):
    """(name, module) of each layer: modules without children, and parametrized modules as one layer each."""
    for name, module in net.named_modules():
        if ".parametrizations" in f".{name}":
            continue
        if parametrize.is_parametrized(module) or next(module.children(), None) is None:
            yield name, module


def shape_text(shape: list) -> str:
    """An output shape as the tables print it: (-, 128, 7, 7), the batch dimension as a dash."""
    return str(tuple(shape)).replace("None", "-")


def _shape(output) -> list:
    if isinstance(output, torch.Tensor):
        return [None, *output.shape[1:]]
    if isinstance(output, (tuple, list)):
        return [_shape(o) for o in output]
    return []


@torch.no_grad()
def network_table(net: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> dict:
    """One row per leaf layer (name, type, output shape, parameters) and the network's totals."""
    rows: list[dict] = []
    hooks = []
    for name, module in _layers(net):
        def hook(mod, inputs, output, name=name):
            # A parametrized layer (spectral norm) keeps its weight and state in its `parametrizations` child.
            trainable, non_trainable = _counts(mod, recurse=parametrize.is_parametrized(mod))
            rows.append({"name": name, "type": type(mod).__name__, "output_shape": _shape(output),
                         "params": trainable + non_trainable})
        hooks.append(module.register_forward_hook(hook))
    was_training = net.training
    try:
        net.eval()
        device = next(net.parameters()).device
        inputs = example if isinstance(example, tuple) else (example,)
        net(*(t.to(device) for t in inputs))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    trainable, non_trainable = _counts(net, recurse=True)
    size = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    return {"layers": rows, "trainable_params": trainable, "non_trainable_params": non_trainable,
            "total_params": trainable + non_trainable, "size_mb": round(size / 2**20, 3)}


def count_parameters(cls: type, config, model=None) -> int:
    """The parameters and floating-point buffers of `cls(config)`, counted on the meta device: nothing is allocated
    (`model`: that model already built there)."""
    if model is None:
        with shapes_only():
            model = cls(config)
    return sum(t.numel() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def check_size(cls: type, config, batch_size: int | None = None, options: str = "--width/--latent-dim/--param") -> int:
    """Refuse, before any weight is allocated, a model whose settings make it larger than MAX_PARAMETERS and, given
    the batch size it trains with, one whose layer outputs for a batch would not fit in the memory bound; returns
    its parameter count. `options` names the command's options that set the size (summary has no --param)."""
    with shapes_only():  # one model on the meta device, for both counts
        model = cls(config)
    count = count_parameters(cls, config, model)
    if count > MAX_PARAMETERS:
        raise UsageError(f"{options}: {cls.name} with these settings has {count:,} parameters "
                         f"({count * 4 / 2**30:.1f} GiB of fp32 weights); expected settings giving at most "
                         f"{MAX_PARAMETERS:,}")
    per_image = activation_elements(model) if batch_size else None
    if per_image:
        from gentool.folders import MEMORY_SHARE, gib, memory_bound

        need, bound = per_image * 4 * batch_size, memory_bound()
        if need > bound:  # a training step keeps these (and as much again for their gradients)
            shape = "x".join(str(getattr(config, k)) for k in ("channels", "image_height", "image_width"))
            raise UsageError(f"--batch-size/--image-size: {cls.name} on {shape} images keeps {gib(need)} of layer "
                             f"outputs for a batch of {batch_size:,}; at most {gib(bound)} ({MEMORY_SHARE:.0%} of this "
                             f"machine's memory) are used: pass --batch-size {max(1, bound // (per_image * 4)):,} or "
                             f"less, or a smaller --image-size")
    return count


def activation_elements(model) -> int | None:
    """The elements of every layer's output when each network of `model` (built on the meta device: nothing is
    allocated) runs once on one image; None where a network cannot run there (a step that reads values)."""
    total = 0

    def add(module, inputs, output) -> None:
        nonlocal total
        total += sum(t.numel() for t in (output if isinstance(output, (tuple, list)) else (output,))
                     if isinstance(t, torch.Tensor))

    try:
        with torch.device("meta"):
            inputs = model.summary_inputs()
        handles = [m.register_forward_hook(add) for net in model.networks().values() for _, m in _layers(net)]
        try:
            with torch.no_grad():
                for name, net in model.networks().items():
                    example = inputs[name]
                    net(*(example if isinstance(example, tuple) else (example,)))
        finally:
            for handle in handles:
                handle.remove()
    except Exception:  # noqa: BLE001 (the estimate is a courtesy: a network it cannot run is trained unestimated)
        return None
    return total


def summarize(model: GenerativeModel) -> dict:
    """The JSON summary of a model: config, each network's table and the grand totals."""
    inputs = model.summary_inputs()
    networks = {name: network_table(net, inputs[name]) for name, net in model.networks().items()}
    totals = {key: sum(n[key] for n in networks.values())
              for key in ("trainable_params", "non_trainable_params", "total_params")}
    return {"model": model.name, "preset": model.config.preset, "config": model.config.to_dict(),
            "networks": networks, **totals,
            "size_mb": round(sum(n["size_mb"] for n in networks.values()), 3)}
