"""Why the study's GAN went black (MNIST) or white (CIFAR-10): the GAN's training step with one knob changed at a
time, a few hundred steps, on one CPU thread. Every `--every` steps it prints the fixed-noise samples' pixel mean
and spread, the share of saturated pixels (< 0.01 or > 0.99), the share of pixels whose output activation has an
exactly zero gradient in float32 ("dead": no step can bring them back), the discriminator's accuracies, and writes
the 8×8 grid to OUT/step_NNNNN.png.

    python3 benchmarks/gan_causes.py --data mnist --data-dir DIR --steps 300 --out /tmp/g-tanh output=tanh
    python3 benchmarks/gan_causes.py --data mnist --data-dir DIR --steps 300 --out /tmp/g-sig output=sigmoid
    python3 benchmarks/gan_causes.py --data mnist --data-dir DIR --out /tmp/g-keras output=sigmoid init=keras \
        adam=keras eps=1e-7 clip=1 dstep=mixed batch=128 gbatch=256 ddrop=0.4   # the Keras recipe, emulated
    python3 benchmarks/gan_causes.py --data CIFAR_FOLDER/train --limit 10000 --steps 400 --every 25 --out /tmp/c-tanh \
        output=tanh
    python3 benchmarks/gan_causes.py --data CIFAR_FOLDER/train --limit 10000 --steps 250 --every 25 --out /tmp/c-keras \
        output=tanh init=keras adam=keras eps=1e-7 clip=1 dstep=two gbatch=128   # its CIFAR-10 sibling
    python3 benchmarks/gan_causes.py --data CIFAR_FOLDER/train --stats gan.npz vae.npz noise.npz   # sample files

Each record also holds the samples' per-channel means and deviations (ch_mean, ch_std), the mean RMS distance
between two samples (pairwise: 0 when the generator ignores its code) and the 1st, 50th and 99th percentiles of the
last layer's pre-activations (pre_q).

Knobs (name=value): output (auto|tanh|sigmoid: the GAN's config field), init (torch|keras: Glorot-uniform weights
and zero biases|kaiming: He-uniform for LeakyReLU 0.2, zero biases), adam (torch|keras: ε added to the uncorrected √v, as Keras/TF do), eps, clip (BCE on
probabilities clipped to [1e-7, 1-1e-7], as Keras computes it), dstep (joint: gentool's BCE(real)+BCE(fake) in one
step; mixed: one concatenated batch; two: a step on the real half then one on the fake half), batch (real and fake
images per discriminator step), gbatch (codes per generator step), ddrop (dropout after each LeakyReLU of the MNIST
discriminator), dropout (the CIFAR discriminator's), gdrop (0: the generator's step sees the discriminator in eval
mode, without dropout; Keras keeps dropout on, as gentool does), lr, dlr (the discriminator's lr), smooth (real label 1 −
smooth), seed. Results are in benchmarks/RESULTS.md ("The study's GAN").
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gentool.data import load_dataset
from gentool.images import write_grid
from gentool.models.gan import GAN, GANConfig

KNOBS = dict(init="torch", output="auto", dstep="joint", batch=64, gbatch=None, eps=1e-8, clip=False, seed=0,
             smooth=0.0, lr=2e-4, dlr=None, dropout=None, adam="torch", ddrop=0.0, gdrop=True)


def kaiming_init(net: nn.Module) -> None:
    """He-uniform weights for LeakyReLU(0.2) and zero biases: keeps the code's variation alive through the layers."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


def keras_init(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            w = m.weight
            if isinstance(m, nn.Linear):
                fan_in, fan_out = w.shape[1], w.shape[0]
            else:
                rf = w[0, 0].numel()
                # Keras kernel (kh, kw, in, out) for Conv2D; Conv2DTranspose (kh, kw, out, in): same fans as torch's
                fan_in, fan_out = w.shape[1] * rf, w.shape[0] * rf
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(w, -bound, bound)
            nn.init.zeros_(m.bias)


class KerasAdam(torch.optim.Optimizer):
    """Keras/TF Adam: epsilon added to the *uncorrected* sqrt(v) (the paper's epsilon-hat), eps 1e-7."""

    def __init__(self, params, lr, betas, eps=1e-7):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                t = st["t"]
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                lr_t = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.addcdiv_(st["m"], st["v"].sqrt().add_(group["eps"]), value=-lr_t)


def bce(logits, target, clip):
    if not clip:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
    p = torch.sigmoid(logits).clamp(1e-7, 1 - 1e-7)
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()


def channel_stats(x01: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of images in [0, 1] (N×C×H×W)."""
    flat = x01.transpose(0, 1).reshape(x01.shape[1], -1)
    return [round(v, 3) for v in flat.mean(1).tolist()], [round(v, 3) for v in flat.std(1).tolist()]


def pairwise(x01: torch.Tensor) -> float:
    """Mean RMS pixel distance between two different samples: 0 when every sample is the same image."""
    d = torch.cdist(x01.flatten(1), x01.flatten(1)) / math.sqrt(x01[0].numel())
    n = len(x01)
    return round((d.sum() / (n * (n - 1))).item(), 3)


def run(k: dict, data, steps: int, every: int, out: Path) -> list[dict]:
    torch.manual_seed(k["seed"])
    config = GANConfig.create(data.geometry, lr=k["lr"], batch_size=k["batch"], output=k["output"])
    if k["dropout"] is not None:
        config.dropout = k["dropout"]
    model = GAN(config)
    if k["init"] != "torch":
        {"keras": keras_init, "kaiming": kaiming_init}[k["init"]](model)
    lo = model.pixel_range[0]
    dlr = k["dlr"] or k["lr"]
    if k["ddrop"] and data.geometry.channels == 1:
        D0 = model.discriminator
        layers = []
        for m in D0:
            layers.append(m)
            if isinstance(m, nn.LeakyReLU):
                layers.append(nn.Dropout(k["ddrop"]))
        model.discriminator = nn.Sequential(*layers)
    Opt = KerasAdam if k["adam"] == "keras" else torch.optim.Adam
    opt_g = Opt(model.generator.parameters(), lr=k["lr"], betas=(0.5, 0.999), eps=k["eps"])
    opt_d = Opt(model.discriminator.parameters(), lr=dlr, betas=(0.5, 0.999), eps=k["eps"])
    imgs = data.images
    g = torch.Generator().manual_seed(k["seed"])
    fixed = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(123))
    b, gb = k["batch"], k["gbatch"] or k["batch"]
    D, G = model.discriminator, model.generator
    real_t = 1.0 - k["smooth"]
    hist, acc = [], []
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(imgs), (b,), generator=g)
        real = imgs[idx].float() * ((1 - lo) / 255) + lo
        z = torch.randn(b, config.latent_dim)
        fake = G(z).detach()
        if k["dstep"] == "joint":      # gentool: BCE(real) + BCE(fake), one step
            rl, fl = D(real), D(fake)
            loss = bce(rl, real_t, k["clip"]) + bce(fl, 0.0, k["clip"])
            opt_d.zero_grad(); loss.backward(); opt_d.step()
        elif k["dstep"] == "mixed":    # one concatenated batch, mean BCE, one step
            logits = D(torch.cat([real, fake]))
            rl, fl = logits[:b], logits[b:]
            loss = 0.5 * (bce(rl, real_t, k["clip"]) + bce(fl, 0.0, k["clip"]))
            opt_d.zero_grad(); loss.backward(); opt_d.step()
        else:                          # "two": Brownlee's CIFAR: a step on the real half, a step on the fake half
            rl = D(real)
            loss = bce(rl, real_t, k["clip"])
            opt_d.zero_grad(); loss.backward(); opt_d.step()
            fl = D(fake)
            loss = bce(fl, 0.0, k["clip"])
            opt_d.zero_grad(); loss.backward(); opt_d.step()
        if not k["gdrop"]:            # the generator's step through an eval-mode discriminator (no dropout)
            D.eval()
        gl = bce(D(G(torch.randn(gb, config.latent_dim))), 1.0, k["clip"])
        opt_g.zero_grad(); gl.backward(); opt_g.step()
        D.train()
        acc.append(((rl.detach() > 0).float().mean().item(), (fl.detach() < 0).float().mean().item(), gl.item()))
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                pre = G[:-1](fixed)
                x = G[-1](pre)
                # the activation's derivative as autograd computes it from the output: y(1-y) or 1-y²
                slope = x * (1 - x) if lo == 0 else 1 - x * x
            model.train()
            x01 = (x - lo) / (1 - lo)
            a = torch.tensor(acc[-every:]).mean(0).tolist()
            rec = {"step": step, **image_stats(x01),
                   "dead": round((slope == 0).float().mean().item(), 3),
                   "pre_q": [round(v, 1) for v in pre.flatten().quantile(torch.tensor([0.01, 0.5, 0.99])).tolist()],
                   "d_acc_real": round(a[0], 2), "d_acc_fake": round(a[1], 2), "g_loss": round(a[2], 2),
                   "sec": round(time.time() - t0)}
            hist.append(rec)
            print(json.dumps(rec), flush=True)
            write_grid(out / f"step_{step:05d}.png", x01.clamp(0, 1), 8, 8)
    return hist


def image_stats(x01: torch.Tensor) -> dict:
    """What the table in RESULTS.md shows for a set of images in [0, 1] (N×C×H×W); spread is the pixels' standard
    deviation across samples (0: every sample the same image); sat the share of pixels below 0.01 or above 0.99."""
    mean, std = channel_stats(x01)
    return {"mean": round(x01.mean().item(), 3), "std": round(x01.std().item(), 3),
            "spread": round(x01.std(0).mean().item(), 3), "pairwise": pairwise(x01[:64]),
            "sat": round(((x01 < 0.01) | (x01 > 0.99)).float().mean().item(), 3), "ch_mean": mean, "ch_std": std}


def stats(paths: list[str], data) -> None:
    """The same measures for `gentool sample --format npz` files (or any npz with uint8 `images`, N×H×W×C)."""
    print(json.dumps({"real": image_stats(data.images[:2000].float() / 255)}))
    for path in paths:
        with np.load(path, allow_pickle=False) as f:
            images = torch.from_numpy(f["images"]).permute(0, 3, 1, 2).float() / 255
        print(json.dumps({path: image_stats(images)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stats", nargs="+", metavar="NPZ", help="only print the measures for these sample files")
    p.add_argument("--data", default="mnist")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out")
    p.add_argument("knobs", nargs="*", help="name=value")
    a = p.parse_args()
    torch.set_num_threads(1)
    k = dict(KNOBS)
    for kv in a.knobs:
        name, v = kv.split("=")
        k[name] = (v in ("1", "true")) if isinstance(KNOBS[name], bool) else type(KNOBS[name])(v) if KNOBS[name] is not None else (float(v) if "." in v or "e" in v else int(v))
    data = load_dataset(a.data, a.data_dir, limit=a.limit)
    if a.stats:
        return stats(a.stats, data)
    real01 = data.images[:2000].float() / 255
    print(json.dumps({"knobs": k, "real": image_stats(real01)}), flush=True)
    if not a.out:
        p.error("--out is required for a training run")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    hist = run(k, data, a.steps, a.every, out)
    (out / "result.json").write_text(json.dumps({"knobs": k, "hist": hist}))


if __name__ == "__main__":
    main()
