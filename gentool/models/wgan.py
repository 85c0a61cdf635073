"""The study's WGAN: a critic with weight clipping, RMSprop 5e-5, five critic steps per generator step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from gentool.errors import bad_value
from gentool.models import adversarial as adv
from gentool.models.base import ModelConfig, scaled
from gentool.registry import register_model


@dataclass
class WGANConfig(ModelConfig):
    """WGAN settings (study defaults)."""

    lr: float = 5e-5
    clip: float = 0.01
    n_critic: int = 5

    default_latent: ClassVar[dict[str, int]] = {"mnist": 50, "cifar10": 100}

    def validate(self) -> None:
        super().validate()
        if self.clip <= 0:
            raise bad_value("--param clip", self.clip, "a positive number")
        if self.n_critic < 1:
            raise bad_value("--param n_critic", self.n_critic, "a positive integer")


def cifar_critic(channels: int, width: float) -> nn.Sequential:
    """k4 s2 convs 32→16→8→4 (BatchNorm after the 2nd and 3rd), a k4 conv to 1×1, then Linear 1→1."""
    c1, c2, c3 = scaled(64, width), scaled(128, width), scaled(256, width)
    return nn.Sequential(
        nn.Conv2d(channels, c1, 4, 2, 1), adv.lrelu(),
        nn.Conv2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2), adv.lrelu(),
        nn.Conv2d(c2, c3, 4, 2, 1), nn.BatchNorm2d(c3), adv.lrelu(),
        nn.Conv2d(c3, 1, 4), nn.Flatten(), nn.Linear(1, 1),
    )


def cifar_dcgan_generator(latent_dim: int, channels: int, width: float) -> nn.Sequential:
    """DCGAN generator: 1×1 → 4×4 → 8 → 16 → 32 with channels 256→128→64→3, BatchNorm + ReLU, tanh."""
    c1, c2, c3 = scaled(256, width), scaled(128, width), scaled(64, width)
    return nn.Sequential(
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, c1, 4, 1, 0), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.ConvTranspose2d(c1, c2, 4, 2, 1), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.ConvTranspose2d(c2, c3, 4, 2, 1), nn.BatchNorm2d(c3), nn.ReLU(),
        nn.ConvTranspose2d(c3, channels, 4, 2, 1), nn.Tanh(),
    )


@register_model("wgan")
class WGAN(adv.AdversarialModel):
    """Wasserstein GAN with weight clipping (study: RMSprop 5e-5, clip ±0.01, 5 critic steps; diverged late)."""

    config_class = WGANConfig
    critic_name = "critic"

    def __init__(self, config: WGANConfig):
        super().__init__(config)
        c = config
        if c.preset == "mnist":
            self.generator = adv.mnist_generator(c.latent_dim, c.channels, c.width, batchnorm=True)
            self.critic = adv.mnist_discriminator(c.channels, c.width, batchnorm=True)
        else:
            self.generator = cifar_dcgan_generator(c.latent_dim, c.channels, c.width)
            self.critic = cifar_critic(c.channels, c.width)

    def build_optimizers(self):
        return {name: torch.optim.RMSprop(net.parameters(), lr=self.config.lr)
                for name, net in self.networks().items()}

    @torch.no_grad()
    def clip_critic(self) -> None:
        """Weight clipping keeps the critic (roughly) Lipschitz; done in the parameters' own dtype (fp32)."""
        for p in self.critic.parameters():
            p.clamp_(-self.config.clip, self.config.clip)

    def train_step(self, real, labels, optimizers, step):
        with torch.no_grad():
            fake = self.fake(real.shape[0])
        real_score = self.critic(real).float().mean()
        fake_score = self.critic(fake).float().mean()
        c_loss = fake_score - real_score
        optimizers["critic"].zero_grad(set_to_none=True)
        c_loss.backward()
        optimizers["critic"].step()
        self.clip_critic()
        out = {"critic_loss": c_loss.detach(), "emd": (real_score - fake_score).detach()}
        if (step + 1) % self.config.n_critic == 0:
            g_loss = -self.critic(self.fake(real.shape[0])).float().mean()
            optimizers["generator"].zero_grad(set_to_none=True)
            g_loss.backward()
            optimizers["generator"].step()
            out["g_loss"] = g_loss.detach()
        return out
