"""Models built on the meta device: their layers and shapes with no memory, as checkpoint loading (before a file's
tensors are read), `summary`, `report` and the size checks build them.

Built there plainly, a model's initialisers still run: nn.init's fills, and a spectral normalization's random
vectors, its 15 power iterations and the normalized weight its registration computes once (torch.mv, F.normalize,
torch.vdot, a division). On the meta device those are Python decompositions, and the first one imports
torch._dynamo: 1.3–1.7 s on the 2-core test host (as long again as `import torch`) added to every `sample`,
`evaluate` and `export` of a model with a class embedding (cflow, cddpm, cgan) or spectral normalization (sngan,
cgan, a distilled student's critic), for values that are never used: the file's tensors replace every one.
`shapes_only()` skips them. (A forward pass on the meta device, as the activation-size check runs, still imports
it: its output shapes are the point.)"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Calls that only compute values; each returns a meta tensor of the right shape without running.
_IN_PLACE = (torch.Tensor.normal_, torch.Tensor.uniform_, F.normalize)  # same shape as their first argument


class _ValuesSkipped(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, torch.Tensor) and first.is_meta:
            if func in _IN_PLACE or getattr(func, "__module__", None) == "torch.nn.init":
                return first
            if func is torch.mv:  # a matrix times a vector: one value per row
                return first.new_empty(first.shape[0])
            if func is torch.vdot:  # σ, when registering the normalization checks its output
                return first.new_empty(())
            if func in (torch.Tensor.__truediv__, torch.Tensor.div) and len(args) == 2 and _scalar(args[1]):
                return first.new_empty(first.shape)  # the weight divided by σ
        return func(*args, **kwargs)


def _scalar(value) -> bool:
    return isinstance(value, (int, float)) or isinstance(value, torch.Tensor) and value.dim() == 0


@contextmanager
def shapes_only():
    """Build models on the meta device, their initialisers skipped (see the module's docstring)."""
    with torch.device("meta"), _ValuesSkipped():
        yield
