"""The probe behind `gentool distill --adversarial` (issue 28): the critic's loss on a few-step student, outside the
training loop so that variants run side by side. The student's K-step Euler sampler is trained end to end: mean
squared error to the teacher's coupling target plus an adaptive-weight hinge-GAN term from a small spectrally
normalized critic, whose "real" images are the teacher's samples (--real teacher) or real MNIST (--real mnist).
The generator's EMA weights are saved every --save-every minutes as a bare state dict (OUT/g_STEP.safetensors);
`--to-checkpoint G STUDENT OUT` writes them into a copy of a reflow checkpoint that `gentool evaluate` scores.

    python3 benchmarks/distill_critic_probe.py --student CKPT --couplings DIR --out DIR [--disc-weight 0.5]
        [--real teacher|mnist] [--minutes 24] [--save-every 4] [--batch 64] [--lr-g 5e-5] [--threads 1]

CKPT: a flow teacher or a reflow student (the network is the same U-Net); DIR: the teacher's couplings folder.
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

from gentool.checkpoint import load_checkpoint
from gentool.couplings import load_couplings

if len(sys.argv) == 5 and sys.argv[1] == "--to-checkpoint":
    from safetensors.torch import load_file

    from gentool.checkpoint import save_checkpoint

    ck = load_checkpoint(sys.argv[3], weights="raw")
    ck.model.unet.load_state_dict(load_file(sys.argv[2]))
    save_checkpoint(sys.argv[4], ck.model, {}, ck.state, ck.data, ck.meta.get("model_source", "built-in"))
    sys.exit(0)
p = argparse.ArgumentParser()
p.add_argument("--student", required=True)
p.add_argument("--couplings", required=True)
p.add_argument("--out", required=True)
p.add_argument("--minutes", type=float, default=20)
p.add_argument("--save-every", type=float, default=4)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--lr-g", type=float, default=5e-5)
p.add_argument("--lr-d", type=float, default=2e-4)
p.add_argument("--disc-weight", type=float, default=0.5)
p.add_argument("--fixed-weight", type=float, default=0.0, help="if >0, a fixed adversarial weight instead")
p.add_argument("--rec", default="e2e", choices=("e2e", "grid", "none"))
p.add_argument("--steps", type=int, default=2)
p.add_argument("--ema", type=float, default=0.99)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--max-steps", type=int, default=0)
p.add_argument("--real", default="teacher", choices=("teacher", "mnist"))
p.add_argument("--d-steps", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)

ck = load_checkpoint(a.student)
G = ck.model.unet
G.train()
data = load_couplings(Path(a.couplings), limit=20000)
x1_all = data.images.float().div(255).mul(2).sub(1)  # N×1×28×28 in [-1, 1]
z_all = data.latents.float()
N = len(x1_all)
if a.real == "mnist":
    from gentool.data import load_dataset
    real_all = load_dataset("mnist", "/work/shared/data", train=True).images.float().div(255).mul(2).sub(1)
else:
    real_all = x1_all


class D(nn.Module):
    """Stride-2 3x3 convs (64, 128, 256 channels) until at most 4 px, flatten, one score; spectral norm."""
    def __init__(self, c=64, size=28):
        super().__init__()
        layers, cin = [], 1
        while size > 4:
            layers += [sn(nn.Conv2d(cin, c, 3, 2, 1)), nn.LeakyReLU(0.2)]
            cin, c, size = c, min(2 * c, 256), (size + 1) // 2
        self.net = nn.Sequential(*layers, nn.Flatten(), sn(nn.Linear(cin * size * size, 1)))

    def forward(self, x):
        return self.net(x).squeeze(1)


disc = D()
opt_g = torch.optim.Adam(G.parameters(), lr=a.lr_g, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(disc.parameters(), lr=a.lr_d, betas=(0.5, 0.999))
ema = copy.deepcopy(G).eval()
for q in ema.parameters():
    q.requires_grad_(False)
head_w = G.head[-1].weight  # the U-Net's last conv: the adaptive weight compares the two gradients there


def sample(net, z, steps):
    x = z
    for i in range(steps):
        t = torch.full((len(z),), i / steps)
        x = x + net(x, t).float() / steps
    return x


ac = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
start = time.monotonic()
next_save, step, log = a.save_every, 0, []
while True:
    minutes = (time.monotonic() - start) / 60
    if minutes >= next_save or minutes >= a.minutes or (a.max_steps and step >= a.max_steps):
        name = f"g_{step:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(out / name))
        print(json.dumps({"saved": name, "minute": round(minutes, 2), "step": step}), flush=True)
        next_save += a.save_every
        if minutes >= a.minutes or (a.max_steps and step >= a.max_steps):
            break
    idx = torch.randint(0, N, (a.batch,))
    z, x1 = z_all[idx], x1_all[idx]
    # discriminator
    with torch.no_grad(), ac():
        fake = sample(G, z, a.steps).clamp(-1, 1)
    ridx = torch.randint(0, len(real_all), (a.batch,))
    real = real_all[ridx]
    with ac():
        ld = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake.float())).mean()
    opt_d.zero_grad(set_to_none=True)
    ld.backward()
    opt_d.step()
    # generator
    with ac():
        if a.rec == "grid":
            k = torch.randint(0, a.steps, (a.batch,)).float() / a.steps
            xt = torch.lerp(z, x1, k[:, None, None, None])
            lrec = F.mse_loss(G(xt, k).float(), x1 - z)
            fake = sample(G, z, a.steps)
        else:
            fake = sample(G, z, a.steps)
            lrec = F.mse_loss(fake.float(), x1) if a.rec == "e2e" else torch.zeros(())
        lg = -disc(fake.float().clamp(-1, 1)).mean()
    if a.fixed_weight > 0:
        w = torch.tensor(a.fixed_weight)
    elif a.rec == "none":
        w = torch.tensor(1.0)
    else:
        gr = torch.autograd.grad(lrec, head_w, retain_graph=True)[0]
        gg = torch.autograd.grad(lg, head_w, retain_graph=True)[0]
        w = (gr.norm() / (gg.norm() + 1e-4)).clamp(0, 1e4).detach() * a.disc_weight
    loss = lrec + w * lg
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    with torch.no_grad():
        for pe, pg in zip(ema.parameters(), G.parameters()):
            pe.lerp_(pg, 1 - a.ema)
    step += 1
    if step % 25 == 0:
        r = {"step": step, "minute": round(minutes, 2), "ld": round(ld.item(), 4), "lrec": round(lrec.item(), 5),
             "lg": round(lg.item(), 4), "w": round(w.item(), 4),
             "img_s": round(step * a.batch / (time.monotonic() - start), 1)}
        print(json.dumps(r), flush=True)
