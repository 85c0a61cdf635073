"""Achieved FLOP/s of training steps as a fraction of this machine's matmul peak, measured in the same run, for fp32
and bf16, plain PyTorch against channels-last and gentool's kernels (and torch.compile with --compile).

    python3 benchmarks/flops.py [--models gan,wgan] [--geometries mnist] [--seconds 8] [--compile]

Peak: a 2048×2048 matmul repeated for --seconds, in fp32 and in bf16. Step FLOPs: counted once per step
configuration by torch.utils.flop_counter over a whole cycle of steps (WGANs update the generator every fifth
step), forward and backward. Throughput: synthetic uint8 batches already in memory (so this is the model's compute
alone; benchmarks/throughput.py measures the whole loop), timed after two warm-up cycles.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gentool.checkpoint import IMPLEMENTATION_KEYS
from gentool.data import Geometry
from gentool.device import prepare
from gentool.registry import get_entry

GEOMETRIES = {"mnist": Geometry(1, 28, 28, 10), "cifar10": Geometry(3, 32, 32, 10)}
# (precision, channels-last, gentool's kernels: gentool.kernels and fused optimizers): the first is a plain PyTorch
# step, the last two gentool's defaults.
CONFIGS = [("fp32", False, False), ("fp32", True, False), ("fp32", True, True), ("bf16", False, False),
           ("bf16", True, True)]


def matmul_peak(dtype: torch.dtype, seconds: float, n: int = 2048) -> float:
    """GFLOP/s of an n×n matmul in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def build(name: str, geometry: str, precision: str, channels_last: bool, compile: bool, fast_kernels: bool = True):
    cls = get_entry(name).cls
    torch.manual_seed(0)
    model = cls(cls.config_class.create(GEOMETRIES[geometry]))
    prepare(model, torch.device("cpu"), precision, channels_last, compile, fast_kernels)
    return model


def plain_optimizers(optimizers: dict) -> dict:
    """The same optimizers and hyperparameters as a hand-written loop gets them: `torch.optim.Adam(params, lr=...)`
    with PyTorch's default kernel choice (on CPU, a loop over the parameters rather than gentool's fused kernel)."""
    plain = {}
    for name, opt in optimizers.items():
        hyper = {k: v for k, v in opt.param_groups[0].items() if k != "params" and k not in IMPLEMENTATION_KEYS}
        plain[name] = type(opt)([p for g in opt.param_groups for p in g["params"]], **hyper)
    return plain


def cycle_length(model) -> int:
    return int(getattr(model.config, "n_critic", 1))


def run_steps(model, optimizers, batch, labels, start: int, count: int) -> None:
    for step in range(start, start + count):
        with model.amp.autocast():
            model.train_step(model.normalize(batch), labels, optimizers, step)


def measure(name: str, geometry: str, config: tuple, compile: bool, seconds: float) -> dict:
    """FLOPs per image and images per second of training steps in one configuration."""
    precision, channels_last, fast_kernels = config
    model = build(name, geometry, precision, channels_last, compile, fast_kernels)
    optimizers = model.build_optimizers() if fast_kernels else plain_optimizers(model.build_optimizers())
    c, b = model.config, model.config.batch_size
    batch = torch.randint(0, 256, (b, c.channels, c.image_height, c.image_width), dtype=torch.uint8)
    labels = torch.arange(b) % 10
    cycle = cycle_length(model)
    # FLOPs are counted on a plain fp32 copy: the count is the same, and counting must not disturb compilation.
    flops_model = build(name, geometry, "fp32", False, False, False)
    try:
        with FlopCounterMode(display=False) as counter:
            run_steps(flops_model, flops_model.build_optimizers(), batch, labels, 0, cycle)
        flops_per_image = counter.get_total_flops() / (cycle * b)
    except RuntimeError:  # the flop counter cannot follow autograd.grad (WGAN-GP's double backward)
        flops_per_image = float("nan")
    run_steps(model, optimizers, batch, labels, 0, 2 * cycle)  # warm-up (and compilation)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps % cycle:
        run_steps(model, optimizers, batch, labels, steps, 1)
        steps += 1
    rate = steps * b / (time.perf_counter() - start)
    return {"images_per_second": rate, "gflop_per_image": flops_per_image / 1e9,
            "gflops": rate * flops_per_image / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gan,wgan,wgan-gp,sngan,vae")
    parser.add_argument("--geometries", default="mnist")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--compile", action="store_true", help="also measure each configuration compiled")
    args = parser.parse_args()
    peak = {"fp32": matmul_peak(torch.float32, args.seconds), "bf16": matmul_peak(torch.bfloat16, args.seconds)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one = matmul_peak(torch.float32, args.seconds / 2)
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} threads; matmul 2048² peak: fp32 {peak['fp32']:.1f} GFLOP/s, "
          f"bf16 {peak['bf16']:.1f} GFLOP/s (fp32 on one thread: {one:.1f})")
    print(f"{'model':8} {'data':8} {'precision':9} {'layout':13} {'kernels':8} {'compiled':8} {'GFLOP/img':>9} "
          f"{'img/s':>8} {'GFLOP/s':>8} {'of peak':>7} {'vs plain':>8}")
    for geometry in args.geometries.split(","):
        for name in args.models.split(","):
            base = None
            for compile in ([False, True] if args.compile else [False]):
                for config in CONFIGS:
                    r = measure(name, geometry, config, compile, args.seconds)
                    base = base or r["images_per_second"]
                    precision, channels_last, fast = config
                    layout = "channels-last" if channels_last else "contiguous"
                    print(f"{name:8} {geometry:8} {precision:9} {layout:13} {'gentool' if fast else 'torch':8} "
                          f"{str(compile):8} {r['gflop_per_image']:9.3f} {r['images_per_second']:8.1f} "
                          f"{r['gflops']:8.1f} {r['gflops'] / peak[precision]:7.0%} "
                          f"{r['images_per_second'] / base:7.2f}×", flush=True)


if __name__ == "__main__":
    main()
