"""SNGAN (Miyato et al., 2018): spectral normalization on every layer of the discriminator and the hinge loss.

The networks are the study's GAN networks, with two changes the method needs: the discriminator has no dropout or
BatchNorm (spectral normalization is its only regulariser) and the generator has BatchNorm (the study's MNIST GAN
generator without it saturates within an epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gentool.models import adversarial as adv
from gentool.models.base import AdamConfig
from gentool.models.study import StudyConfig
from gentool.models.gan import GAN
from gentool.models.wgan import cifar_dcgan_generator
from gentool.registry import register_model


@dataclass
class SNGANConfig(StudyConfig, AdamConfig):
    """SNGAN settings: Adam 2e-4, β 0.5/0.999, one discriminator step per generator step."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    default_latent: ClassVar[dict[str, int]] = {"mnist": 100, "cifar10": 100}


def spectrally_normalized(net: nn.Module) -> nn.Module:
    """`net` with spectral normalization on the weight of every convolution and linear layer (in place)."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
            spectral_norm(module)
    return net


def hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """A critic's hinge loss: mean relu(1 − D(real)) + mean relu(1 + D(fake))."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def discriminator_body(c: StudyConfig) -> nn.Sequential:
    """The study's discriminator for the geometry, without dropout or BatchNorm and with spectral normalization."""
    if c.preset == "mnist":
        net = adv.mnist_discriminator(c.channels, c.width, batchnorm=False)
    else:
        net = adv.cifar_discriminator(c.channels, c.width, dropout=0.0)
        net = nn.Sequential(*(m for m in net if not isinstance(m, nn.Dropout)))
    return spectrally_normalized(net)


def generator_for(c: StudyConfig, extra_inputs: int = 0) -> nn.Sequential:
    """The study's generator for the geometry with BatchNorm (MNIST: the WGAN's; CIFAR10: the DCGAN one), taking
    `extra_inputs` more values after the latent code."""
    if c.preset == "mnist":
        return adv.mnist_generator(c.latent_dim + extra_inputs, c.channels, c.width, batchnorm=True)
    return cifar_dcgan_generator(c.latent_dim + extra_inputs, c.channels, c.width)


@register_model("sngan")
class SNGAN(GAN):
    """Spectrally normalized GAN with hinge loss (discriminator: the study's, SN on every layer; generator with BN)."""

    config_class = SNGANConfig

    def build_networks(self, config: SNGANConfig) -> None:
        self.generator = generator_for(config)
        self.discriminator = discriminator_body(config)

    def discriminator_loss(self, real_logits, fake_logits):
        return hinge_loss(real_logits, fake_logits)

    def generator_loss(self, fake_logits):
        """−mean D(fake)."""
        return -fake_logits.mean()

    def divergence_estimates(self, d_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        # The Jensen–Shannon identity holds for the BCE loss only; the hinge loss estimates no named divergence.
        return {}
