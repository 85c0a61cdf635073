"""Faster formulations of layers whose shape the CPU convolution library handles poorly, swapped in at run time.

Models keep plain torch layers (their files, state dicts and checkpoints do not change); `use_fast_kernels` gives
qualifying layers a different `forward` that computes the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SingleOutputConv2d(nn.Conv2d):
    """A stride-1 Conv2d with one output channel, computed as one matrix product — every kernel tap of every pixel —
    followed by a fold that adds the taps into place.

    oneDNN vectorises a convolution over its output channels; with a single one (the MNIST generators' 128→1 7×7
    image layer) it ran at about 16 GFLOP/s on a 2-core AVX-512 CPU whose matmul peak is ~180. This form ran that
    layer's forward 3.4× and forward+backward 2.9× faster there (benchmarks/RESULTS.md). The taps are added in
    fp32 so that low-precision autocast rounds the result once, as the library convolution does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        kh, kw = self.kernel_size
        ph, pw = self.padding
        weight = self.weight.flip(-1, -2).reshape(c, kh * kw).t()
        taps = torch.matmul(weight, x.reshape(n, c, h * w))  # (n, kh·kw, h·w); a view of channels-last input
        out_size = (h + 2 * ph - kh + 1, w + 2 * pw - kw + 1)
        wide = torch.promote_types(taps.dtype, torch.float32)
        out = F.fold(taps.to(wide), out_size, (kh, kw), padding=(kh - 1 - ph, kw - 1 - pw))
        if self.bias is not None:
            out = out + self.bias.to(wide).view(1, -1, 1, 1)
        return out.to(taps.dtype)


def qualifies(module: nn.Module) -> bool:
    """Whether `module` is a plain Conv2d that `SingleOutputConv2d` computes exactly: one output channel, one
    group, stride and dilation 1, zero padding given as numbers no larger than the kernel's reach."""
    if type(module) is not nn.Conv2d:  # subclasses and parametrized (e.g. spectral-norm) layers keep their own
        return False
    m = module
    return (m.out_channels == 1 and m.groups == 1 and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and all(0 <= p <= k - 1 for p, k in zip(m.padding, m.kernel_size)))


def use_fast_kernels(model: nn.Module, device: torch.device) -> int:
    """Give every qualifying layer of `model` its faster formulation; returns how many were changed. CPU only:
    GPU convolution libraries handle these shapes well."""
    if device.type != "cpu":
        return 0
    changed = 0
    for module in model.modules():
        if qualifies(module):
            # Same parameters and buffers, same state_dict keys: only `forward` differs.
            module.__class__ = SingleOutputConv2d
            changed += 1
    return changed
