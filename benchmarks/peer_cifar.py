"""The CIFAR-10 peers of benchmarks/time_to_quality.py: the field's own implementations, installed from PyPI
(benchmark-only: `pip install torchcfm denoising-diffusion-pytorch`), in a harness of ours with wall-clock snapshots.

    python3 benchmarks/peer_cifar.py train --peer torchcfm|ddpm --data NPY --marks 5,15 --out DIR [--threads N]
        [--width budget|smallest] [--recipe cpu|example] [--precision fp32|bf16] [--start EPOCH_SECONDS]
    python3 benchmarks/peer_cifar.py sample --peer torchcfm|ddpm --weights FILE --out FILE.npz [--n 10000]
        [--steps S] [--seed 0] [--threads N] [--precision fp32|bf16]

NPY: the training images as one uint8 N×32×32×3 array (time_to_quality.py decodes the JPEG folder into it before
any clock starts, so neither peer pays a per-image JPEG decode; gentool reads its own decoded cache the same way).

torchcfm (atong01/conditional-flow-matching, examples/images/cifar10/train_cifar10.py): OT-CFM
(`ExactOptimalTransportConditionalFlowMatcher`, σ = 0) on its `UNetModelWrapper`, Adam 2e-4, linear warmup,
batch 128, gradient clipping at 1.0, EMA of the weights, random horizontal flips, images in [-1, 1]; samples by
integrating the EMA network's velocity from noise (t = 0) to data (t = 1).
  - example recipe: warmup 5,000 steps, EMA 0.9999 (the example's); CPU recipe: warmup 200 steps, EMA 0.99
    (it spans 100 steps: at about 60 img/s here a 30-minute run makes about 900, and 0.999 left the 15-minute
    weights mostly at their initial state).
  - width `budget`: num_channels 32, channel_mult (1, 1), one res block, attention at 16×16 (285,667 parameters,
    the nearest its code builds to gentool's 207,651-parameter CIFAR-10 U-Net); `smallest`: the example's layout
    (channel_mult (1, 2, 2, 2), 2 res blocks, attention at 16×16, 4 heads of 64... as the example) at the smallest
    width its GroupNorm(32) allows, num_channels 32 (2,245,763 parameters).
  - changed from the example: no torchdyn (we integrate with Euler in --steps, the example's non-adaptive
    option), no DataLoader (batches drawn from the in-memory array), no dropout-free variants, and the loop runs to
    the last mark instead of 400,001 steps.
denoising-diffusion-pytorch (lucidrains): its `Unet` and `GaussianDiffusion` (1,000 steps, pred_v, sigmoid schedule,
its defaults) with the README's trainer recipe: Adam 8e-5 β (0.9, 0.99), batch 32 × 2 accumulated, clipping at 1.0,
EMA 0.995 updated every 10 steps; samples with its DDIM sampler in --steps.
  - CPU recipe: one batch of 64 per step (the same effective batch), Adam 2e-4, EMA 0.995 every step (the README's
    EMA spans about 2,000 steps, this one 200).
  - width `budget`: dim 8, dim_mults (1, 2, 4) (218,419 parameters); `smallest`: dim 8 with the README's dim_mults
    (1, 2, 4, 8) (682,819 parameters; its GroupNorm(8) needs dim ≥ 8).
  - changed from the README: no Accelerate/Trainer (our loop does its optimizer, EMA and clipping steps), no FID
    during training, the loop runs to the last mark.

--precision bf16 runs the forward passes under torch.autocast(cpu, bfloat16), as gentool does where the CPU has fast
bf16: a CPU-sized variant neither example has. With --mark-steps the snapshots are taken at step counts instead (a
recipe that costs the same per step, compared at the steps another recipe's timed run reached by each minute: for
each peer here, the example and the CPU recipe differ only in the learning-rate warmup and the EMA, which cost the
same per step). At each mark (minutes since --start, the launch time the caller
measured) the EMA weights go to OUT/<peer>_<mark>.safetensors and the raw ones to
OUT/<peer>_<mark>_raw.safetensors; one JSON line per snapshot (minute, step, img/s) on stdout and in
OUT/snapshots.jsonl.
"""

from __future__ import annotations

import time

LAUNCH = time.time()  # before the imports, which a user waits for too

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

WIDTHS = {
    "torchcfm": {"budget": dict(num_channels=32, num_res_blocks=1, channel_mult=[1, 1], num_heads=1,
                                num_head_channels=-1, attention_resolutions="16"),
                 "smallest": dict(num_channels=32, num_res_blocks=2, channel_mult=[1, 2, 2, 2], num_heads=4,
                                  num_head_channels=64, attention_resolutions="16")},
    "ddpm": {"budget": dict(dim=8, dim_mults=(1, 2, 4)), "smallest": dict(dim=8, dim_mults=(1, 2, 4, 8))},
}
RECIPES = {  # batch, lr, warmup steps, EMA decay, EMA every k steps
    ("torchcfm", "example"): dict(batch=128, lr=2e-4, warmup=5000, ema=0.9999, ema_every=1),
    ("torchcfm", "cpu"): dict(batch=128, lr=2e-4, warmup=200, ema=0.99, ema_every=1),
    ("ddpm", "example"): dict(batch=64, lr=8e-5, warmup=0, ema=0.995, ema_every=10),
    ("ddpm", "cpu"): dict(batch=64, lr=2e-4, warmup=0, ema=0.995, ema_every=1),
}


def build(peer: str, width: str) -> torch.nn.Module:
    """The peer's network (torchcfm: the velocity U-Net; ddpm: GaussianDiffusion around its Unet)."""
    if peer == "torchcfm":
        from torchcfm.models.unet.unet import UNetModelWrapper

        return UNetModelWrapper(dim=(3, 32, 32), dropout=0.1, **WIDTHS[peer][width])
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    return GaussianDiffusion(Unet(**WIDTHS[peer][width]), image_size=32, timesteps=1000)


def autocast(precision: str):
    return torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def batches(images: torch.Tensor, batch: int, gen: torch.Generator):
    """Endless shuffled epochs of uint8 batches, each image flipped left-right with probability 1/2."""
    while True:
        for idx in torch.randperm(len(images), generator=gen).split(batch):
            if len(idx) < batch:
                break
            x = images[idx]
            flip = torch.rand(len(x), generator=gen) < 0.5
            yield torch.where(flip[:, None, None, None], x.flip(3), x)


def loss_fn(peer: str, net, matcher, x: torch.Tensor) -> torch.Tensor:
    if peer == "torchcfm":
        x1 = x.float() / 127.5 - 1
        t, xt, ut = matcher.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
        return ((net(t, xt).float() - ut) ** 2).mean()
    return net(x.float() / 255)  # GaussianDiffusion normalizes [0, 1] to [-1, 1] itself


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    recipe = RECIPES[(args.peer, args.recipe)]
    images = torch.from_numpy(np.load(args.data)).permute(0, 3, 1, 2).contiguous()
    net = build(args.peer, args.width)
    ema = copy.deepcopy(net).requires_grad_(False)
    matcher = None
    if args.peer == "torchcfm":
        from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

        matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"], betas=(0.9, 0.99))
    warm = recipe["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s, warm) / warm if warm else 1.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    marks, step, seen = sorted(args.marks), 0, 0
    train_start = time.time()
    for x in batches(images, recipe["batch"], torch.Generator().manual_seed(args.seed)):
        with autocast(args.precision):
            loss = loss_fn(args.peer, net, matcher, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        step, seen = step + 1, seen + len(x)
        if step % recipe["ema_every"] == 0:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), net.parameters()):
                    e.lerp_(p, 1 - recipe["ema"])
        minute = (time.time() - args.start) / 60
        while marks and (step >= args.mark_steps[0] if args.mark_steps else minute >= marks[0]):
            mark = marks.pop(0)
            args.mark_steps = args.mark_steps[1:]
            path = out / f"{args.peer}_{mark:g}.safetensors"
            save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(path))
            raw = out / f"{args.peer}_{mark:g}_raw.safetensors"  # the raw weights too: early on EMA lags them
            save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(raw))
            row = json.dumps({"mark": mark, "weights": str(path), "raw_weights": str(raw), "minute": round(minute, 3),
                              "step": step, "loss": round(float(loss.detach()), 4),
                              "images_per_second": round(seen / (time.time() - train_start), 1)})
            with (out / "snapshots.jsonl").open("a") as f:  # kept as it happens: a stopped harness loses no row
                f.write(row + "\n")
            print(row, flush=True)
        if not marks:
            return


@torch.no_grad()
def sample(args) -> None:
    """N images from a snapshot's EMA weights, as gentool sample writes them (.npz, key images, uint8 N×H×W×C)."""
    torch.set_num_threads(args.threads)
    net = build(args.peer, args.width).eval()
    net.load_state_dict(load_file(args.weights))
    torch.manual_seed(args.seed)
    chunks = []
    for start in range(0, args.n, args.batch):
        b = min(args.batch, args.n - start)
        with autocast(args.precision):
            if args.peer == "torchcfm":
                x = torch.randn(b, 3, 32, 32)
                for i in range(args.steps):  # Euler from noise (t = 0) to data (t = 1)
                    t = torch.full((b,), i / args.steps)
                    x = x + net(t, x).float() / args.steps
                x = (x.clamp(-1, 1) + 1) / 2
            else:
                net.sampling_timesteps, net.is_ddim_sampling = args.steps, args.steps < net.num_timesteps
                x = net.sample(batch_size=b).float()
        chunks.append((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    np.savez(args.out, images=np.concatenate(chunks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("train", "sample"))
    parser.add_argument("--peer", choices=tuple(WIDTHS), required=True)
    parser.add_argument("--width", choices=("budget", "smallest"), default="budget")
    parser.add_argument("--recipe", choices=("cpu", "example"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="train: uint8 N×32×32×3 .npy")
    parser.add_argument("--marks", default="5,15")
    parser.add_argument("--start", type=float, default=LAUNCH)
    parser.add_argument("--mark-steps", default="", help="snapshot at these step counts instead of the minutes, "
                        "named by --marks in order (a recipe compared at the steps another reached by each minute)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--weights", help="sample: a snapshot written by train")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    args.marks = [float(m) for m in args.marks.split(",")]
    args.mark_steps = [int(k) for k in args.mark_steps.split(",")] if args.mark_steps else []
    if args.mark_steps and len(args.mark_steps) != len(args.marks):
        parser.error("--mark-steps: one step count per --marks entry")
    (train if args.mode == "train" else sample)(args)


if __name__ == "__main__":
    main()
