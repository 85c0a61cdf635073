"""Faster formulations of layers whose shape or memory layout CPU kernels handle poorly, swapped in at run time.

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
    layer's forward 3.4× and forward+backward 3.1× faster there (benchmarks/RESULTS.md). The taps are added in
    fp32 so that low-precision autocast rounds the result once, as the library convolution does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # an unbatched image: rare, and the library handles it
            return super().forward(x)
        n, c, h, w = x.shape
        kh, kw = self.kernel_size
        ph, pw = self.padding
        weight = self.weight.flip(-1, -2).reshape(c, kh * kw).t()
        taps = torch.matmul(weight, x.reshape(n, c, h * w))  # (n, kh·kw, h·w); a view of channels-last input
        wide = torch.promote_types(taps.dtype, torch.float32)
        out = _FoldTaps.apply(taps.to(wide), (h, w), (kh, kw), (ph, pw))
        if self.bias is not None:
            out = out + self.bias.to(wide).view(1, -1, 1, 1)
        return out.to(taps.dtype)


class _FoldTaps(torch.autograd.Function):
    """`F.fold` of (n, k·k, h·w) taps into (n, 1, h, w), whose backward gathers the k·k shifted windows of the
    gradient with one strided copy. Autograd's own backward of fold is `unfold` (im2col), which for a one-channel map
    runs as many tiny parallel regions: 3 ms on an idle 2-core machine, 0.5 s per call once another process kept
    the cores busy. The backward is made of differentiable ops, so a second backward works too."""

    @staticmethod
    def forward(ctx, taps, size, kernel, padding):
        ctx.kernel, ctx.padding = kernel, padding
        return F.fold(taps, size, kernel, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        return _windows(grad, ctx.kernel, ctx.padding), None, None, None


def _windows(grad: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """unfold(grad, kernel, padding) for a one-channel, "same"-padded map: (n, 1, h, w) → (n, kh·kw, h·w)."""
    n, _, h, w = grad.shape
    (kh, kw), (ph, pw) = kernel, padding
    padded = F.pad(grad, (pw, pw, ph, ph)).contiguous()
    hp, wp = h + 2 * ph, w + 2 * pw
    # window (a, b) at output pixel (y, x) reads padded[y + a, x + b]
    view = padded.as_strided((n, kh, kw, h, w), (hp * wp, wp, 1, wp, 1), padded.storage_offset())
    return view.reshape(n, kh * kw, h * w)


class ChannelsFirstGroupNorm(nn.GroupNorm):
    """GroupNorm of a low-precision channels-last map computed on a channels-first copy, and the result put back in
    channels-last.

    CPU convolutions are faster on channels-last maps (why `prepare` uses that layout), but torch's CPU GroupNorm of a
    bf16 channels-last map ran 2–4× slower than of the same values channels-first: under bf16 autocast it took 42 %
    of a U-Net family's sampling step (flow, ddpm and their conditional and distilled kin) on the AMD test host.
    With the two copies a flow training step took 1.5–1.9× less time there, a sampling evaluation 1.8–2.4× less.
    An fp32 map is left to torch: there the copies cost about what they save (0.8–1.1×). Measured side by side in
    benchmarks/RESULTS.md, "GroupNorm on channels-last maps". Same function, same parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() != 4 or x.dtype not in (torch.bfloat16, torch.float16) or x.is_contiguous()
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)


def qualifies(module: nn.Module) -> bool:
    """Whether `module` is a plain Conv2d that `SingleOutputConv2d` computes exactly and cheaply: one output channel,
    one group, stride and dilation 1, odd kernel with "same" zero padding (2p = k − 1). Other paddings are exact too
    but would compute taps that fall outside the output (16× the work for a 4×4 kernel on a 4×4 map)."""
    if type(module) is not nn.Conv2d:  # subclasses and parametrized (e.g. spectral-norm) layers keep their own
        return False
    m = module
    return (m.out_channels == 1 and m.groups == 1 and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and all(2 * p == k - 1 for p, k in zip(m.padding, m.kernel_size)))


def use_fast_kernels(model: nn.Module, device: torch.device) -> int:
    """Give every qualifying layer of `model` its faster formulation; returns how many were changed. CPU only:
    GPU convolution libraries handle these shapes well."""
    if device.type != "cpu":
        return 0
    changed = 0
    for module in model.modules():
        # Same parameters and buffers, same state_dict keys: only `forward` differs.
        if qualifies(module):
            module.__class__ = SingleOutputConv2d
            changed += 1
        elif type(module) is nn.GroupNorm:
            module.__class__ = ChannelsFirstGroupNorm
            changed += 1
    return changed
