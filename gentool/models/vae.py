"""Variational autoencoder: the study's MLP (MNIST) and convolutional (CIFAR10) networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gentool.models.base import GenerativeModel, ModelConfig, scaled
from gentool.registry import register_model


@dataclass
class VAEConfig(ModelConfig):
    """VAE settings; the loss is reconstruction BCE (summed over pixels) plus KL, averaged over the batch."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    kl_weight: float = 1.0

    default_latent: ClassVar[dict[str, int]] = {"mnist": 5, "cifar10": 5}
    default_batch_size: ClassVar[int] = 128


class Encoder(nn.Module):
    """A body followed by two heads: the posterior mean and log-variance."""

    def __init__(self, body: nn.Module, features: int, latent_dim: int):
        super().__init__()
        self.body = body
        self.mean = nn.Linear(features, latent_dim)
        self.log_var = nn.Linear(features, latent_dim)

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.log_var(h)


def mlp_networks(c: VAEConfig) -> tuple[Encoder, nn.Module]:
    """MNIST: 784→1024→512→256 encoder, mirrored decoder with a sigmoid output."""
    pixels = c.channels * c.image_height * c.image_width
    h = [scaled(n, c.width) for n in (1024, 512, 256)]
    body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, h[0]), nn.ReLU(), nn.Linear(h[0], h[1]), nn.ReLU(),
                         nn.Linear(h[1], h[2]), nn.ReLU())
    decoder = nn.Sequential(
        nn.Linear(c.latent_dim, h[2]), nn.ReLU(), nn.Linear(h[2], h[1]), nn.ReLU(), nn.Linear(h[1], h[0]), nn.ReLU(),
        nn.Linear(h[0], pixels), nn.Sigmoid(), nn.Unflatten(1, (c.channels, c.image_height, c.image_width)),
    )
    return Encoder(body, h[2], c.latent_dim), decoder


def conv_networks(c: VAEConfig) -> tuple[Encoder, nn.Module]:
    """CIFAR10: two strided convs and a max-pool; the decoder upsamples to 128×128 and max-pools back to 32×32."""
    c1, c2, c3 = scaled(64, c.width), scaled(128, c.width), scaled(8, c.width)
    body = nn.Sequential(
        nn.Conv2d(c.channels, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
    )
    features = c2 * (c.image_height // 8) * (c.image_width // 8)
    s = c.image_height // 2
    decoder = nn.Sequential(
        nn.Linear(c.latent_dim, c3 * s * s), nn.ReLU(), nn.Unflatten(1, (c3, s, s)),
        nn.ConvTranspose2d(c3, c1, 4, 4), nn.ReLU(), nn.ConvTranspose2d(c1, c.channels, 4, 2, 1),
        nn.MaxPool2d(4), nn.Sigmoid(),
    )
    return Encoder(body, features, c.latent_dim), decoder


@register_model("vae")
class VAE(GenerativeModel):
    """Variational autoencoder (study: MLP on MNIST, conv on CIFAR10; BCE + KL, Adam 1e-3)."""

    config_class = VAEConfig
    pixel_range = (0.0, 1.0)

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        build = mlp_networks if config.preset == "mnist" else conv_networks
        self.encoder, self.decoder = build(config)

    def build_optimizers(self):
        c = self.config
        return {"vae": torch.optim.Adam(self.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))}

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch mean reconstruction BCE, KL and their weighted sum (the negative ELBO when kl_weight = 1)."""
        mean, log_var = self.encoder(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        recon = self.decoder(z)
        n = x.shape[0]
        # BCE in fp32: it is the numerically sensitive part and sums many small terms.
        rec = F.binary_cross_entropy(recon.float(), x.float(), reduction="sum") / n
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp()).float() / n
        return {"loss": rec + self.config.kl_weight * kl, "reconstruction": rec, "kl": kl}

    def train_step(self, real, labels, optimizers, step):
        opt = optimizers["vae"]
        out = self.losses(real)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return {k: v.detach() for k, v in out.items()}

    def decode(self, z):
        return self.decoder(z)

    def summary_inputs(self):
        c = self.config
        return {"encoder": torch.zeros(1, c.channels, c.image_height, c.image_width),
                "decoder": torch.zeros(1, c.latent_dim)}
