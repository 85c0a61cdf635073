"""The peer baseline of benchmarks/time_to_quality.py: a plain-PyTorch MLP WGAN-GP in the image of the popular
PyTorch-GAN script (implementations/wgan_gp/wgan_gp.py), with wall-clock snapshots added and nothing of gentool.

    python3 benchmarks/peer_wgan_gp.py --data-dir DIR --marks 2,5,7.5,10,15 --out DIR [--threads N]
        [--start EPOCH_SECONDS] [--n 5000] [--seed 0]

As the original: generator 100→128→256→512→1024→784 (BatchNorm1d(eps=0.8) and LeakyReLU(0.2) after every hidden
layer but the first, tanh out), critic 784→512→256→1 with LeakyReLU(0.2), Adam(2e-4, β=(0.5, 0.999)) for both,
λ = 10, a generator step every 5 critic steps (on the same noise as that critic step), batch 64, a shuffling
DataLoader (no workers) over torchvision's MNIST with ToTensor and Normalize(0.5, 0.5), noise from numpy, and the
critic step's fake images not detached (as the original; the generator gradients this computes are zeroed).
Differences: the images are read from DIR, never downloaded; the original's Resize(28), a no-op on MNIST's 28×28
images, is left out (the issue's specification); the loop runs until the last mark instead of 200 epochs.

At each mark (minutes since --start, the launch time the caller measured; default: this process's start) it finishes
the current step and writes OUT/peer_<mark>.npz (key `images`: N uint8 28×28×1 images, as `gentool sample` writes
them, for `gentool evaluate`) and OUT/peer_<mark>.png (the first 64 as an 8×8 grid). Snapshots are drawn as the
original draws its sample images: with the generator in training mode (batch statistics, 64 at a time), from noise
of a separate seeded generator so that taking them changes nothing in training. Drawing and writing them counts in
the wall clock, as gentool's checkpoint writes do. Prints one JSON line per snapshot (minute, step, images/s).
"""

from __future__ import annotations

import time

LAUNCH = time.time()  # before the imports, which a user waits for too

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.autograd as autograd  # noqa: E402
import torch.nn as nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

LATENT, IMG_SHAPE = 100, (1, 28, 28)
LAMBDA_GP, N_CRITIC, BATCH = 10, 5, 64


class Generator(nn.Module):
    def __init__(self):
        super().__init__()

        def block(in_feat, out_feat, normalize=True):
            layers = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat, 0.8))  # the original's positional 0.8 is eps
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(*block(LATENT, 128, normalize=False), *block(128, 256), *block(256, 512),
                                   *block(512, 1024), nn.Linear(1024, int(np.prod(IMG_SHAPE))), nn.Tanh())

    def forward(self, z):
        return self.model(z).view(z.shape[0], *IMG_SHAPE)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(int(np.prod(IMG_SHAPE)), 512), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True), nn.Linear(256, 1))

    def forward(self, img):
        return self.model(img.view(img.shape[0], -1))


def gradient_penalty(critic, real, fake):
    alpha = torch.tensor(np.random.random((real.size(0), 1, 1, 1)), dtype=torch.float32)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    d_interpolates = critic(interpolates)
    ones = torch.ones(real.shape[0], 1)
    gradients = autograd.grad(outputs=d_interpolates, inputs=interpolates, grad_outputs=ones, create_graph=True,
                              retain_graph=True, only_inputs=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


@torch.no_grad()
def snapshot(generator: Generator, n: int, seed: int, out: Path, name: str) -> None:
    """N images drawn in training mode, 64 at a time (as the original draws its samples), as uint8 N×28×28×1."""
    noise = torch.Generator().manual_seed(seed)
    chunks = [generator(torch.randn(min(BATCH, n - i), LATENT, generator=noise)) for i in range(0, n, BATCH)]
    images = torch.cat(chunks)
    save_image(images[:64], out / f"{name}.png", nrow=8, normalize=True)
    pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(out / f"{name}.npz", images=pixels)


def mark_name(minute: float) -> str:
    return f"peer_{minute:g}".replace(".", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw (torchvision's layout)")
    parser.add_argument("--marks", default="2,5,7.5,10,15", help="minutes since --start at which to snapshot")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--start", type=float, default=LAUNCH, help="launch time (seconds since the epoch)")
    parser.add_argument("--n", type=int, default=5000, help="images per snapshot")
    parser.add_argument("--seed", type=int, default=0, help="seed of the snapshots' noise")
    args = parser.parse_args()
    marks = sorted(float(m) for m in args.marks.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)

    generator, discriminator = Generator(), Discriminator()
    optimizer_G = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    dataloader = torch.utils.data.DataLoader(datasets.MNIST(args.data_dir, train=True, download=False,
                                                            transform=transform), batch_size=BATCH, shuffle=True)
    steps = images_seen = 0
    began, snapshots = time.perf_counter(), 0.0  # images/s: over the loop (data loading in), snapshots left out
    while marks:
        for i, (imgs, _) in enumerate(dataloader):
            real_imgs = imgs.float()
            # ---- critic ----
            optimizer_D.zero_grad()
            z = torch.tensor(np.random.normal(0, 1, (imgs.shape[0], LATENT)), dtype=torch.float32)
            fake_imgs = generator(z)
            real_validity = discriminator(real_imgs)
            fake_validity = discriminator(fake_imgs)
            gp = gradient_penalty(discriminator, real_imgs.data, fake_imgs.data)
            d_loss = -torch.mean(real_validity) + torch.mean(fake_validity) + LAMBDA_GP * gp
            d_loss.backward()
            optimizer_D.step()
            optimizer_G.zero_grad()
            # ---- generator, every N_CRITIC steps ----
            if i % N_CRITIC == 0:
                fake_imgs = generator(z)
                g_loss = -torch.mean(discriminator(fake_imgs))
                g_loss.backward()
                optimizer_G.step()
            steps, images_seen = steps + 1, images_seen + imgs.shape[0]
            if marks and time.time() - args.start >= 60 * marks[0]:
                mark, tick = marks.pop(0), time.perf_counter()
                rate = images_seen / (tick - began - snapshots)
                snapshot(generator, args.n, args.seed, out, mark_name(mark))
                snapshots += time.perf_counter() - tick
                print(json.dumps({"mark": mark, "minute": round((time.time() - args.start) / 60, 3), "step": steps,
                                  "images_seen": images_seen, "images_per_second": round(rate, 1),
                                  "npz": str(out / f"{mark_name(mark)}.npz")}), flush=True)
            if not marks:
                break


if __name__ == "__main__":
    main()
