"""An MLP WGAN-GP: fully connected generator and critic in the shape of the popular PyTorch-GAN script (generator
latent→128→256→512→1024→pixels, critic pixels→512→256→1), trained by gentool's WGAN-GP step. Not one of the
study's families: a much cheaper network per image (about 3 MFLOP forward against the study's conv networks' tens),
so a CPU sees many more images per minute (`benchmarks/time_to_quality.py` measures what that buys)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from gentool.errors import bad_setting
from gentool.models import adversarial as adv
from gentool.models.base import MAX_LATENT, MAX_LOSS_WEIGHT, AdamConfig, scaled
from gentool.models.wgan import CriticSteps
from gentool.models.wgan_gp import WGANGP
from gentool.registry import register_model


@dataclass
class MLPWGANGPConfig(CriticSteps, AdamConfig):
    """The script's settings: latent 100, Adam 2e-4 β (0.5, 0.999), penalty weight 10, five critic steps per
    generator step, batch 64, BatchNorm eps 0.8 in the generator (its `BatchNorm1d(n, 0.8)`); --width scales every
    hidden layer."""

    latent_dim: int = 100
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    gp_weight: float = 10.0
    n_critic: int = 5
    batchnorm_eps: float = 0.8

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.latent_dim, int) or not 1 <= self.latent_dim <= MAX_LATENT:
            raise bad_setting("latent_dim", self.latent_dim, f"an integer between 1 and {MAX_LATENT}")
        if not 0 <= self.gp_weight <= MAX_LOSS_WEIGHT:
            raise bad_setting("gp_weight", self.gp_weight, f"a number in [0, {MAX_LOSS_WEIGHT:g}]")
        if not (math.isfinite(self.batchnorm_eps) and 0 < self.batchnorm_eps <= 1):
            raise bad_setting("batchnorm_eps", self.batchnorm_eps, "a number in (0, 1]")


def mlp_generator(c: MLPWGANGPConfig) -> nn.Sequential:
    """latent → 128 → 256 → 512 → 1024 (BatchNorm after all but the first, LeakyReLU 0.2) → pixels, tanh."""
    sizes = [c.latent_dim] + [scaled(n, c.width) for n in (128, 256, 512, 1024)]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(n_in, n_out)] + ([nn.BatchNorm1d(n_out, c.batchnorm_eps)] if i else []) + [adv.lrelu()]
    shape = (c.channels, c.image_height, c.image_width)
    return nn.Sequential(*layers, nn.Linear(sizes[-1], math.prod(shape)), nn.Tanh(), nn.Unflatten(1, shape))


def mlp_critic(c: MLPWGANGPConfig) -> nn.Sequential:
    """pixels → 512 → 256 (LeakyReLU 0.2) → one score; no normalisation (the penalty is per sample)."""
    h1, h2 = scaled(512, c.width), scaled(256, c.width)
    return nn.Sequential(nn.Flatten(), nn.Linear(c.channels * c.image_height * c.image_width, h1), adv.lrelu(),
                         nn.Linear(h1, h2), adv.lrelu(), nn.Linear(h2, 1))


@register_model("mlp-wgan-gp")
class MLPWGANGP(WGANGP):
    """MLP WGAN-GP (the PyTorch-GAN script's networks and settings) on gentool's WGAN-GP step: cheap per image."""

    config_class = MLPWGANGPConfig

    def build_networks(self, config: MLPWGANGPConfig) -> None:
        # Not the study's conv networks of WGAN's presets: these take any geometry.
        self.generator = mlp_generator(config)
        self.critic = mlp_critic(config)
