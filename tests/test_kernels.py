"""gentool.kernels computes what the layer it replaces computes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gentool.kernels import ChannelsFirstGroupNorm, SingleOutputConv2d, qualifies, use_fast_kernels

CPU = torch.device("cpu")


@pytest.mark.parametrize("kernel,padding,bias", [(7, 3, True), (3, 1, False), ((5, 3), (2, 1), True), (1, 0, True)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_single_output_conv_matches_conv2d_forward_and_backward(kernel, padding, bias, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 1, kernel, padding=padding, bias=bias).double()
    fast = nn.Conv2d(6, 1, kernel, padding=padding, bias=bias).double()
    fast.load_state_dict(conv.state_dict())
    assert use_fast_kernels(fast, CPU) == 1 and type(fast) is SingleOutputConv2d
    x = torch.randn(3, 6, 9, 11, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = conv(xa), fast(xb)
    assert ya.shape == yb.shape
    torch.testing.assert_close(yb, ya)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad)
    for pa, pb in zip(conv.parameters(), fast.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad)


def test_single_output_conv_is_twice_differentiable_and_takes_unbatched_images():
    """WGAN-GP differentiates the critic's gradient once more; an unbatched image falls back to the library."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 1, 3, padding=1).double()
    use_fast_kernels(conv, CPU)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    # gradgradcheck perturbs the inputs in place, and conv's own parameters are among them
    assert torch.autograd.gradgradcheck(lambda x, w, b: conv(x), (x, conv.weight, conv.bias))
    single = torch.randn(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(conv(single), F.conv2d(single, conv.weight, conv.bias, padding=1))


def test_single_output_conv_under_bf16_autocast_rounds_like_the_library():
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 1, 7, padding=3)
    x = torch.randn(4, 128, 14, 14)
    exact = conv(x)
    use_fast_kernels(conv, CPU)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    # bf16 inputs and one final rounding: within a few bf16 ulps of the fp32 result, not the taps' summed errors
    assert ((y.float() - exact).abs().max() / exact.abs().max()) < 2e-2


def test_only_exact_cases_qualify_and_the_state_dict_is_unchanged():
    assert qualifies(nn.Conv2d(8, 1, 3, padding=1))
    assert not qualifies(nn.Conv2d(8, 2, 3, padding=1))  # more than one output channel
    assert not qualifies(nn.Conv2d(8, 1, 3, stride=2))
    assert not qualifies(nn.Conv2d(8, 1, 3, dilation=2))
    assert not qualifies(nn.Conv2d(8, 1, 3, padding=1, padding_mode="reflect"))
    assert not qualifies(nn.Conv2d(8, 1, 3, padding="same"))
    assert not qualifies(nn.Conv2d(8, 1, 3, padding=3))  # padding beyond the kernel's reach
    assert not qualifies(nn.Conv2d(8, 1, 3))  # "valid" padding: most taps would fall outside the output
    assert not qualifies(nn.Conv2d(256, 1, 4))  # the CIFAR critics' 4×4 → 1×1 head
    assert not qualifies(nn.utils.parametrizations.spectral_norm(nn.Conv2d(8, 1, 3)))
    net = nn.Sequential(nn.Conv2d(8, 4, 3), nn.Conv2d(4, 1, 3, padding=1))
    keys = list(net.state_dict())
    assert use_fast_kernels(net, torch.device("cuda")) == 0  # GPUs keep the library convolution
    assert use_fast_kernels(net, CPU) == 1
    assert list(net.state_dict()) == keys and type(net[0]) is nn.Conv2d


def test_fused_optimizer_state_from_a_checkpoint_takes_the_channels_last_layout(tmp_path):
    """Checkpoints store optimizer moments contiguous; a fused Adam step on a channels-last model must still pair
    each moment with its own weight, so a resumed step equals the uninterrupted one."""
    from gentool.checkpoint import load_checkpoint, save_checkpoint
    from gentool.device import prepare
    from gentool.models.gan import GAN
    from gentool.data import Geometry

    torch.manual_seed(0)
    model = GAN(GAN.config_class.create(Geometry(1, 28, 28, 10)))
    prepare(model, CPU)
    optimizers = model.build_optimizers()
    assert optimizers["generator"].param_groups[0]["fused"]
    x, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)
    for step in range(2):
        model.train_step(x, y, optimizers, step)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, optimizers, {"epoch": 1, "step": 2, "seed": 0},
                    {"name": "mnist", "geometry": {"channels": 1, "height": 28, "width": 28}}, "built-in")
    ckpt = load_checkpoint(path, weights="raw")
    prepare(ckpt.model, CPU)
    resumed = ckpt.model.build_optimizers()
    ckpt.load_optimizers(resumed)
    for m, opts in ((model, optimizers), (ckpt.model, resumed)):
        torch.manual_seed(1)
        m.train_step(x, y, opts, 2)
    for (k, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_of_a_channels_last_map_matches_and_keeps_the_layout(channels_last):
    """GroupNorm runs on a channels-first copy of a channels-last map (2-4x faster on CPU): the same values and
    gradients, the output in the input's layout, the same state dict."""
    torch.manual_seed(0)
    norm, fast = nn.GroupNorm(4, 16).double(), nn.GroupNorm(4, 16).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    fast.load_state_dict(norm.state_dict())
    keys = list(fast.state_dict())
    assert use_fast_kernels(fast, CPU) == 1 and type(fast) is ChannelsFirstGroupNorm and list(fast.state_dict()) == keys
    x = torch.randn(3, 16, 5, 7, dtype=torch.float64) * 3 + 1
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = norm(xa), fast(xb)
    torch.testing.assert_close(yb, ya)
    assert yb.is_contiguous(memory_format=torch.channels_last) == channels_last
    g = torch.randn_like(ya)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad)
    for pa, pb in zip(norm.parameters(), fast.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad)
    assert use_fast_kernels(nn.GroupNorm(4, 16), torch.device("cuda")) == 0


def test_group_norm_of_a_bf16_channels_last_map_is_computed_channels_first(monkeypatch):
    """The copy is made for low-precision maps only (fp32 ones are as fast in torch's layout), and matches."""
    norm, fast = nn.GroupNorm(2, 8), nn.GroupNorm(2, 8)
    use_fast_kernels(fast, CPU)
    seen = []
    real = F.group_norm
    monkeypatch.setattr(F, "group_norm", lambda x, *a, **k: seen.append(x.is_contiguous()) or real(x, *a, **k))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 8, 4, 4).to(dtype).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(x), norm(x))
    assert seen == [False, False, True, False]  # fast, then plain: fp32 in the given layout; bf16 fast on a copy
