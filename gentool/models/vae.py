"""Variational autoencoder: the study's MLP (MNIST) and convolutional (CIFAR10) networks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gentool.errors import bad_setting
from gentool.models.base import AdamConfig, GenerativeModel, adam, scaled
from gentool.models.study import StudyConfig
from gentool.registry import register_model

INITS = ("kaiming", "torch")
MIN_BATCH = 16


@dataclass
class VAEConfig(StudyConfig, AdamConfig):
    """VAE settings; the loss is reconstruction BCE (summed over pixels) plus KL, averaged over the batch."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    kl_weight: float = 1.0
    # Not the study's: He-uniform weights and zero biases ("torch": PyTorch's default layer init); see kaiming_init.
    init: str = "kaiming"
    # Not the study's: on small data without --batch-size, the batch halves until an epoch has this many steps.
    min_epoch_steps: int = 50

    default_latent: ClassVar[dict[str, int]] = {"mnist": 5, "cifar10": 5}
    default_batch_size: ClassVar[int] = 128

    def validate(self) -> None:
        super().validate()
        if self.init not in INITS:
            raise bad_setting("init", self.init, " or ".join(INITS))
        if not (isinstance(self.kl_weight, (int, float)) and 0 <= self.kl_weight <= 10_000):
            raise bad_setting("kl_weight", self.kl_weight, "a number in [0, 10,000] (0: a plain autoencoder)")
        if not isinstance(self.min_epoch_steps, int) or not 0 <= self.min_epoch_steps <= 100_000:
            raise bad_setting("min_epoch_steps", self.min_epoch_steps,
                              "an integer between 0 and 100,000 (0 keeps the batch size)")

    def batch_size_for(self, n_images: int) -> int:
        """The study's batch of 128, halved (down to 16) while an epoch of `n_images` would have fewer than
        `min_epoch_steps` steps: 2,000 images train with 32 (63 steps an epoch, not 16), 5,000 with 64, and 6,400
        or more with 128. A VAE needs a few hundred steps to draw digits; five epochs of 16 steps never got there."""
        batch = self.batch_size
        while batch // 2 >= MIN_BATCH and math.ceil(n_images / batch) < self.min_epoch_steps:
            batch //= 2
        return batch


class Encoder(nn.Module):
    """A body followed by two heads: the posterior mean and log-variance. With `num_classes` > 0 the heads also see
    the one-hot class (a conditional VAE)."""

    def __init__(self, body: nn.Module, features: int, latent_dim: int, num_classes: int = 0):
        super().__init__()
        self.body = body
        self.num_classes = num_classes
        self.mean = nn.Linear(features + num_classes, latent_dim)
        self.log_var = nn.Linear(features + num_classes, latent_dim)

    def forward(self, x, labels=None):
        h = with_one_hot(self.body(x), labels, self.num_classes)
        return self.mean(h), self.log_var(h)


class Decoder(nn.Module):
    """A conditional VAE's decoder: [latent code, one-hot class] → image in [0, 1]."""

    def __init__(self, net: nn.Module, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.net = net

    def forward(self, z, labels=None):
        return self.net(with_one_hot(z, labels, self.num_classes))


def with_one_hot(h: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """`h` with the one-hot labels appended as features (unchanged for an unconditional network)."""
    if not num_classes:
        return h
    return torch.cat([h, F.one_hot(labels, num_classes).to(h.dtype)], dim=1)


def mlp_networks(c: VAEConfig, k: int = 0) -> tuple[Encoder, nn.Module]:
    """MNIST: 784→1024→512→256 encoder, mirrored decoder with a sigmoid output (k: classes conditioned on)."""
    pixels = c.channels * c.image_height * c.image_width
    h = [scaled(n, c.width) for n in (1024, 512, 256)]
    body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, h[0]), nn.ReLU(), nn.Linear(h[0], h[1]), nn.ReLU(),
                         nn.Linear(h[1], h[2]), nn.ReLU())
    decoder = nn.Sequential(
        nn.Linear(c.latent_dim + k, h[2]), nn.ReLU(), nn.Linear(h[2], h[1]), nn.ReLU(), nn.Linear(h[1], h[0]),
        nn.ReLU(), nn.Linear(h[0], pixels), nn.Sigmoid(), nn.Unflatten(1, (c.channels, c.image_height, c.image_width)),
    )
    return Encoder(body, h[2], c.latent_dim, k), Decoder(decoder, k) if k else decoder


def conv_networks(c: VAEConfig, k: int = 0) -> tuple[Encoder, nn.Module]:
    """CIFAR10: two strided convs and a max-pool; the decoder upsamples to 128×128 and max-pools back to 32×32."""
    c1, c2, c3 = scaled(64, c.width), scaled(128, c.width), scaled(8, c.width)
    body = nn.Sequential(
        nn.Conv2d(c.channels, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
    )
    features = c2 * (c.image_height // 8) * (c.image_width // 8)
    s = c.image_height // 2
    decoder = nn.Sequential(
        nn.Linear(c.latent_dim + k, c3 * s * s), nn.ReLU(), nn.Unflatten(1, (c3, s, s)),
        nn.ConvTranspose2d(c3, c1, 4, 4), nn.ReLU(), nn.ConvTranspose2d(c1, c.channels, 4, 2, 1),
        nn.MaxPool2d(4), nn.Sigmoid(),
    )
    return Encoder(body, features, c.latent_dim, k), Decoder(decoder, k) if k else decoder


def kaiming_init(module: nn.Module) -> None:
    """He-uniform weights (gain √2, for ReLU) and zero biases in every linear layer. PyTorch's default (variance
    1/(3·fan_in)) shrinks the signal about 3× per ReLU layer: in the MNIST networks at the start, the decoder's
    logits varied with z by 0.025 and the encoder's means across digits by 0.007 (He: 0.9 and 0.24). The VAE then
    fits the mean image first and needs hundreds of steps to leave it; with He it draws digits within 80 steps."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)


@register_model("vae")
class VAE(GenerativeModel):
    """Variational autoencoder (study: MLP on MNIST, conv on CIFAR10; BCE + KL, Adam 1e-3)."""

    config_class = VAEConfig
    pixel_range = (0.0, 1.0)
    sampling_networks = ("decoder",)
    likelihood_terms = True

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        build = mlp_networks if config.preset == "mnist" else conv_networks
        self.encoder, self.decoder = build(config, config.num_classes if self.conditional else 0)
        if config.init == "kaiming":
            kaiming_init(self)

    def build_optimizers(self):
        return {"vae": adam(self.config, self.parameters())}

    def losses(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-batch mean reconstruction BCE, KL and their weighted sum (the negative ELBO when kl_weight = 1);
        a conditional VAE needs the images' `labels`."""
        y = labels if self.conditional else None
        mean, log_var = self.encoder(x, y)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        recon = self.decode(z, y)
        n = x.shape[0]
        # BCE in fp32: it is the numerically sensitive part and sums many small terms.
        rec = F.binary_cross_entropy(recon.float(), x.float(), reduction="sum") / n
        mean, log_var = mean.float(), log_var.float()
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp()) / n
        return {"loss": rec + self.config.kl_weight * kl, "reconstruction": rec, "kl": kl}

    def train_step(self, real, labels, optimizers, step):
        out = self.losses(real, labels)
        self.optimize(out["loss"], optimizers["vae"])
        return {k: v.detach() for k, v in out.items()}

    def decode(self, z, labels=None):
        return self.decoder(z, labels) if self.conditional else self.decoder(z)

    def summary_inputs(self):
        c = self.config
        x, z = torch.zeros(1, c.channels, c.image_height, c.image_width), torch.zeros(1, c.latent_dim)
        if self.conditional:
            y = torch.zeros(1, dtype=torch.long)
            return {"encoder": (x, y), "decoder": (z, y)}
        return {"encoder": x, "decoder": z}
