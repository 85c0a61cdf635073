"""Class-conditional GAN: SNGAN's networks and hinge loss, with the class given to the generator as a one-hot
vector beside the latent code and to the discriminator through a projection (Miyato & Koyama, 2018): the logit is
ψ(h) + ⟨embed(y), h⟩ for the discriminator's features h. An auxiliary classifier on h (Odena et al., 2017), trained
on real images only, adds a cross-entropy term to the generator's loss so that its samples show the class asked
for early in training, not only after long runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gentool.errors import bad_setting
from gentool.models.base import MAX_LOSS_WEIGHT
from gentool.models.sngan import (
    SNGAN,
    SNGANConfig,
    discriminator_body,
    generator_for,
    spectrally_normalized,
)
from gentool.registry import register_model


class OneHotConditioned(nn.Module):
    """A network whose input is [z, one_hot(y)]."""

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.net = net

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """Features h from the body, then logit = head(h) + ⟨embed(y), h⟩, and class logits from an auxiliary head."""

    def __init__(self, body: nn.Sequential, num_classes: int):
        super().__init__()
        head = body[-1]
        self.body = body[:-1]
        self.head = head
        self.embed = spectrally_normalized(nn.Embedding(num_classes, head.in_features))
        self.classifier = spectrally_normalized(nn.Linear(head.in_features, num_classes))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, with_classes: bool = False):
        h = self.body(images)
        logit = self.head(h) + (self.embed(labels) * h).sum(dim=1, keepdim=True)
        return (logit, self.classifier(h)) if with_classes else logit


@dataclass
class CGANConfig(SNGANConfig):
    """cgan settings: SNGAN's, plus the weight of the auxiliary classification terms."""

    class_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.class_weight <= MAX_LOSS_WEIGHT:
            raise bad_setting("class_weight", self.class_weight, f"a number in [0, {MAX_LOSS_WEIGHT:g}]")


@register_model("cgan")
class CGAN(SNGAN):
    """Class-conditional SNGAN (one-hot class input to G, projection discriminator, hinge loss); sample by class."""

    config_class = CGANConfig
    class_conditional = True

    def build_networks(self, config: CGANConfig) -> None:
        k = config.num_classes
        self.generator = OneHotConditioned(generator_for(config, extra_inputs=k), k)
        self.discriminator = ProjectionDiscriminator(discriminator_body(config), k)

    def train_step(self, real, labels, optimizers, step):
        w = self.config.class_weight
        fake = self.fake(real.shape[0], labels)
        real_logits, real_classes = self.discriminator(real, labels, with_classes=True)
        fake_logits = self.discriminator(fake.detach(), labels).float()
        real_logits, real_classes = real_logits.float(), real_classes.float()
        d_loss = self.discriminator_loss(real_logits, fake_logits) + w * F.cross_entropy(real_classes, labels)
        self.optimize(d_loss, optimizers["discriminator"])

        g_logits, g_classes = self.discriminator(fake, labels, with_classes=True)
        g_class_loss = F.cross_entropy(g_classes.float(), labels)
        g_loss = self.generator_loss(g_logits.float()) + w * g_class_loss
        self.optimize(g_loss, optimizers["generator"])
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_acc_real": (real_logits.detach() > 0).float().mean(),
            "d_acc_fake": (fake_logits.detach() < 0).float().mean(),
            "class_acc_real": (real_classes.detach().argmax(1) == labels).float().mean(),
            "class_acc_fake": (g_classes.detach().argmax(1) == labels).float().mean(),
        }
