"""The study's GAN: binary cross-entropy on the discriminator's logit, Adam 2e-4, β1 0.5."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from gentool.errors import bad_setting
from gentool.models import adversarial as adv
from gentool.models.base import AdamConfig
from gentool.models.study import StudyConfig
from gentool.registry import register_model

LOG2 = math.log(2.0)
INITS = ("torch", "keras")


@dataclass
class GANConfig(StudyConfig, AdamConfig):
    """GAN settings (study defaults)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    dropout: float = 0.4
    # The generator's last activation: sigmoid on [0, 1] pixels or tanh on [-1, 1]. "auto" is sigmoid on both data
    # sets: the Keras recipe the study's MNIST networks follow, and on CIFAR-10 (whose recipe ends in tanh) the only
    # one of the two that did not saturate for good in the first epoch (docs/guides/models.md, "The study's
    # families").
    output: str = "auto"
    # The networks' starting weights: "torch" (PyTorch's default layer init) or "keras" (Glorot-uniform, zero
    # biases: the Keras default the study's networks were written for; see glorot_init). "auto" is keras on
    # CIFAR-10, where torch's init drew one image for every code (docs/guides/models.md, "The study's families"),
    # and torch on MNIST, where it reproduces the study's collapse to one digit.
    init: str = "auto"

    default_latent: ClassVar[dict[str, int]] = {"mnist": 100, "cifar10": 100}
    auto_output: ClassVar[dict[str, str]] = {"mnist": "sigmoid", "cifar10": "sigmoid"}
    auto_init: ClassVar[dict[str, str]] = {"mnist": "torch", "cifar10": "keras"}

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.dropout < 1:
            raise bad_setting("dropout", self.dropout, "a number in [0, 1)")
        if self.init not in ("auto", *INITS):
            raise bad_setting("init", self.init, "auto, " + " or ".join(INITS))
        if self.output not in ("auto", *adv.OUTPUTS):
            raise bad_setting("output", self.output, "auto, " + " or ".join(adv.OUTPUTS))

    @classmethod
    def create(cls, geometry, latent_dim=None, width=None, **overrides):
        config = super().create(geometry, latent_dim, width, **overrides)
        # stored resolved: what "auto" picks may change, a checkpoint not
        config.output, config.init = config.output_activation, config.init_scheme
        return config

    @classmethod
    def from_dict(cls, data: dict):
        # A checkpoint written before `output` existed has a generator that ends in tanh; one that stored "auto"
        # was written while auto meant tanh on CIFAR-10 (and sigmoid on MNIST, as now).
        # (Its `init` does not matter: the weights are the checkpoint's. Older ones have none: torch's was used.)
        config = super().from_dict({"output": "tanh", "init": "torch", **data})
        if config.output == "auto":
            config.output = {"mnist": "sigmoid", "cifar10": "tanh"}[config.preset]
        return config

    @property
    def output_activation(self) -> str:
        """The generator's last activation ("auto" resolved for the geometry)."""
        return self.auto_output[self.preset] if self.output == "auto" else self.output

    @property
    def init_scheme(self) -> str:
        """The networks' starting weights ("auto" resolved for the geometry)."""
        return self.auto_init[self.preset] if self.init == "auto" else self.init


@register_model("gan")
class GAN(adv.AdversarialModel):
    """Deep convolutional GAN (study: BCE loss, Adam 2e-4 β1 0.5; collapsed to one digit on MNIST)."""

    config_class = GANConfig

    def build_networks(self, config: GANConfig) -> None:
        c = config
        output = c.output_activation
        self.pixel_range = adv.OUTPUTS[output][1]
        if c.preset == "mnist":
            self.generator = adv.mnist_generator(c.latent_dim, c.channels, c.width, batchnorm=False, output=output)
            self.discriminator = adv.mnist_discriminator(c.channels, c.width, batchnorm=False)
        else:
            self.generator = adv.cifar_generator(c.latent_dim, c.channels, c.width, output=output)
            self.discriminator = adv.cifar_discriminator(c.channels, c.width, c.dropout)
        if c.init_scheme == "keras":
            adv.glorot_init(self)

    def build_optimizers(self):
        return adv.adam_per_network(self)

    def discriminator_loss(self, real_logits, fake_logits):
        """BCE on real (target 1) plus BCE on fake (target 0)."""
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))

    def generator_loss(self, fake_logits):
        """Non-saturating generator loss: BCE of fakes against the real label."""
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def train_step(self, real, labels, optimizers, step):
        # A conditional family draws its fakes for the batch's own labels, so both sides see the same classes.
        y = labels if self.conditional else None
        fake = self.fake(real.shape[0], y)
        real_logits = self.score(real, y).float()
        fake_logits = self.score(fake.detach(), y).float()
        d_loss = self.discriminator_loss(real_logits, fake_logits)
        self.optimize(d_loss, optimizers["discriminator"])

        g_loss = self.generator_loss(self.score(fake, y).float())
        self.optimize(g_loss, optimizers["generator"])
        d_loss = d_loss.detach()
        return {
            "d_loss": d_loss,
            "g_loss": g_loss.detach(),
            "d_acc_real": (real_logits.detach() > 0).float().mean(),
            "d_acc_fake": (fake_logits.detach() < 0).float().mean(),
            **self.divergence_estimates(d_loss),
        }

    def divergence_estimates(self, d_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """The study's Jensen–Shannon estimate: with d_loss = BCE_real + BCE_fake, the optimal discriminator gives
        d_loss = 2·log 2 − 2·JSD, so JSD ≈ log 2 − ½·d_loss (floored at 0)."""
        return {"jsd": (LOG2 - 0.5 * d_loss).clamp(min=0.0)}
