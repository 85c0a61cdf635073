"""Least-squares GAN (Mao et al., 2017) as a gentool plugin.

It reuses the study's GAN networks and training step and changes only the two losses, which is all a new
adversarial family usually needs to do. It also declares a sampler setting of its own, `temperature`, which
`gentool sample/evaluate/train --sampler temperature=0.7` set and `gentool models --check` lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gentool import register_model
from gentool.models.base import SampleOption
from gentool.models.gan import GAN, GANConfig


@dataclass
class LSGANConfig(GANConfig):
    """LSGAN settings: the GAN's, plus the least-squares targets for real and fake."""

    real_target: float = 1.0
    fake_target: float = 0.0
    output: str = "tanh"  # the generator's last activation: this example keeps tanh on [-1, 1] for both data sets


@register_model("lsgan")
class LSGAN(GAN):
    """Least-squares GAN: the study's GAN networks with squared-error losses (example plugin)."""

    config_class = LSGANConfig
    # A sampler setting: declared once here, with its default, help and accepted range; gentool checks the value
    # given and passes it to sample_batch in `settings`.
    sample_options = (
        SampleOption("temperature", 1.0, "scale of the latent codes: below 1 draws more typical, less varied images",
                     low=0.0, high=2.0),
    )

    def discriminator_loss(self, real_logits, fake_logits):
        c = self.config
        return 0.5 * ((real_logits - c.real_target) ** 2).mean() + 0.5 * ((fake_logits - c.fake_target) ** 2).mean()

    def generator_loss(self, fake_logits):
        return 0.5 * ((fake_logits - self.config.real_target) ** 2).mean()

    def sample_batch(self, z, labels, settings, generator):
        return self.decode(z * settings["temperature"], labels)

    def divergence_estimates(self, d_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        # The Jensen–Shannon identity holds for the BCE loss only.
        return {}
