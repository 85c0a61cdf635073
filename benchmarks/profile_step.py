"""Where a training step's time goes: the top operators by self CPU time over a few steps (torch.profiler), and
the achieved GFLOP/s of the convolution kernels alone against the matmul peak.

    python3 benchmarks/profile_step.py [--model gan] [--precision fp32] [--no-channels-last] [--steps 20]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from flops import build, matmul_peak, run_steps

GROUPS = {"convolution": ("conv", "mkldnn_convolution", "convolution_backward"),
          "optimizer": ("adam", "_foreach", "rmsprop", "lerp", "addcdiv", "sqrt"),
          "elementwise": ("leaky_relu", "tanh", "batch_norm", "native_batch_norm", "add", "mul", "sigmoid", "relu",
                          "threshold", "where", "copy_", "to", "fill_", "clamp", "div", "sub", "neg")}


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS.items():
        if any(k in low for k in keys):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gan")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    model = build(args.model, "mnist", args.precision, not args.no_channels_last, False)
    optimizers = model.build_optimizers()
    b = model.config.batch_size
    batch = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(b) % 10
    run_steps(model, optimizers, batch, labels, 0, 5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_steps(model, optimizers, batch, labels, 5, args.steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0) + e.self_cpu_time_total
    print(f"{args.model} mnist {args.precision} {'contiguous' if args.no_channels_last else 'channels-last'}: "
          f"{total / args.steps / 1000:.1f} ms per step")
    for group, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:12} {t / total:6.1%}")
    print("top operators by self time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {e.key[:48]:48} {e.self_cpu_time_total / total:6.1%}  calls {e.count}")
    print(f"matmul fp32 peak in this run: {matmul_peak(torch.float32, 3):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
