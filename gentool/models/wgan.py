"""The study's WGAN: a critic with weight clipping, RMSprop 5e-5, five critic steps per generator step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from gentool.errors import bad_setting
from gentool.models import adversarial as adv
from gentool.models.base import MAX_CRITIC_STEPS, scaled
from gentool.models.study import StudyConfig
from gentool.registry import register_model


class CriticSteps:
    """A config whose critic takes `n_critic` steps per generator step (WGAN and its variants): the check, once.
    (A mixin without fields: each config declares `n_critic` where its fields are in order.)"""

    n_critic: int

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.n_critic, int) or not 1 <= self.n_critic <= MAX_CRITIC_STEPS:
            raise bad_setting("n_critic", self.n_critic, f"an integer between 1 and {MAX_CRITIC_STEPS}")


@dataclass
class WGANConfig(CriticSteps, StudyConfig):
    """WGAN settings (study defaults)."""

    lr: float = 5e-5
    clip: float = 0.01
    n_critic: int = 5

    default_latent: ClassVar[dict[str, int]] = {"mnist": 50, "cifar10": 100}

    def validate(self) -> None:
        super().validate()
        if not 0 < self.clip <= 100:
            raise bad_setting("clip", self.clip, "a number in (0, 100]")


def cifar_critic(channels: int, width: float, batchnorm: bool = True) -> nn.Sequential:
    """k4 s2 convs 32→16→8→4 (BatchNorm after the 2nd and 3rd unless turned off), a k4 conv to 1×1, then Linear 1→1."""
    c1, c2, c3 = scaled(64, width), scaled(128, width), scaled(256, width)
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])
    return nn.Sequential(
        nn.Conv2d(channels, c1, 4, 2, 1), adv.lrelu(),
        nn.Conv2d(c1, c2, 4, 2, 1), *norm(c2), adv.lrelu(),
        nn.Conv2d(c2, c3, 4, 2, 1), *norm(c3), adv.lrelu(),
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
    critic_batchnorm: ClassVar[bool] = True

    def build_networks(self, config: WGANConfig) -> None:
        c = config
        if c.preset == "mnist":
            self.generator = adv.mnist_generator(c.latent_dim, c.channels, c.width, batchnorm=True)
            self.critic = adv.mnist_discriminator(c.channels, c.width, batchnorm=self.critic_batchnorm)
        else:
            self.generator = cifar_dcgan_generator(c.latent_dim, c.channels, c.width)
            self.critic = cifar_critic(c.channels, c.width, batchnorm=self.critic_batchnorm)

    def build_optimizers(self):
        return {name: torch.optim.RMSprop(net.parameters(), lr=self.config.lr)
                for name, net in self.networks().items()}

    @torch.no_grad()
    def clip_critic(self) -> None:
        """Weight clipping keeps the critic (roughly) Lipschitz; done in the parameters' own dtype (fp32)."""
        for p in self.critic.parameters():
            p.clamp_(-self.config.clip, self.config.clip)

    def critic_objective(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The critic's loss (to minimise) and what to report: here E[critic(fake)] − E[critic(real)]."""
        real_score = self.score(real).float().mean()
        fake_score = self.score(fake).float().mean()
        c_loss = fake_score - real_score
        return c_loss, {"critic_loss": c_loss.detach(), "emd": (real_score - fake_score).detach()}

    def after_critic_step(self) -> None:
        """What keeps the critic Lipschitz after its update: the study's weight clipping."""
        self.clip_critic()

    def train_step(self, real, labels, optimizers, step):
        with torch.no_grad():
            fake = self.fake(real.shape[0])
        c_loss, out = self.critic_objective(real, fake)
        self.optimize(c_loss, optimizers["critic"])
        self.after_critic_step()
        if (step + 1) % self.config.n_critic == 0:
            g_loss = -self.score(self.fake(real.shape[0])).float().mean()
            self.optimize(g_loss, optimizers["generator"])
            out["g_loss"] = g_loss.detach()
        return out
