"""GroupNorm on channels-last maps: the U-Net families' training step and sampling evaluation with torch's GroupNorm
(as before) and with gentool.kernels.ChannelsFirstGroupNorm (what `prepare` now applies on a CPU), side by side.

    python3 benchmarks/groupnorm_layout.py [--models flow:mnist,cflow:cifar10] [--precisions bf16,fp32]
        [--rounds 5] [--threads 2] [--sample-batch 500]

For each model, geometry and precision: one model built and prepared as `gentool train` prepares it (channels-last,
gentool.kernels); its GroupNorm layers are switched between the two classes in alternating rounds (so that a change
of the machine's load hits both alike), and each keeps its fastest round:
- a training step: `model.train_step` on a batch of the family's default size, optimizer included;
- a sampling evaluation: the network once on --sample-batch images (one Euler step of `gentool sample`).
Prints a markdown table with the host.
"""

from __future__ import annotations

import argparse
import time

import torch
from flops import build
from time_to_quality import host
from torch import nn

from gentool.kernels import ChannelsFirstGroupNorm


def switch(model, cls) -> None:
    for module in model.modules():
        if isinstance(module, nn.GroupNorm):
            module.__class__ = cls


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, geometry: str, precision: str, args) -> dict:
    model = build(name, geometry, precision, True, False)
    optimizers = model.build_optimizers()
    c, b = model.config, model.config.batch_size
    batch = torch.randint(0, 256, (b, c.channels, c.image_height, c.image_width), dtype=torch.uint8)
    labels = torch.arange(b) % 10
    x = torch.randn(args.sample_batch, c.channels, c.image_height, c.image_width)
    t, y = torch.full((args.sample_batch,), 0.5), torch.arange(args.sample_batch) % 10

    def step():
        with model.amp.autocast():
            model.train_step(model.normalize(batch), labels if model.conditional else None, optimizers, 0)

    @torch.no_grad()
    def evaluation():
        with model.amp.autocast():
            model.unet(x.contiguous(memory_format=torch.channels_last), t, y if model.conditional else None)

    best = {}
    for _ in range(args.rounds):
        for label, cls in (("torch", nn.GroupNorm), ("channels-first", ChannelsFirstGroupNorm)):
            switch(model, cls)
            step(), evaluation()  # warm: the first call of a layout builds its kernels
            row = best.setdefault(label, {"step": float("inf"), "eval": float("inf")})
            row["step"] = min(row["step"], timed(step))
            row["eval"] = min(row["eval"], timed(evaluation))
    return {"batch": b, **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="flow:mnist,cflow:cifar10")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample-batch", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Host: {host()}; {args.threads} threads; fastest of {args.rounds} alternating rounds.\n")
    print("| model | precision | train step, torch GroupNorm (s) | channels-first (s) | faster | sampling evaluation "
          f"of {args.sample_batch}, torch (s) | channels-first (s) | faster |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        name, geometry = spec.split(":")
        for precision in args.precisions.split(","):
            r = measure(name, geometry, precision, args)
            a, f = r["torch"], r["channels-first"]
            print(f"| {name} ({geometry}, batch {r['batch']}) | {precision} | {a['step']:.3f} | {f['step']:.3f} | "
                  f"{a['step'] / f['step']:.2f}× | {a['eval']:.3f} | {f['eval']:.3f} | {a['eval'] / f['eval']:.2f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
