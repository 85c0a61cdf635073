"""Rectified flow distilled from a teacher (reflow; Liu et al., 2023): a flow trained on couplings — the teacher's own
(noise, sample) pairs, drawn by `gentool distill` with the teacher's deterministic sampler — instead of independent
noise and images. Each noise then has one image to go to, so the paths the network learns are nearly straight and a
few Euler steps follow them: the sampler defaults to the step count it was distilled for. The network, training
step and sampler are flow's; on a plain image data set it trains as flow does.

With `adversarial` > 0 the few-step sampler is trained end to end instead: its output from each coupling's noise
is pulled towards the teacher's sample by mean squared error, plus a hinge-GAN term from a small spectrally
normalized critic that tells the student's samples from the teacher's (the adaptive weight of Esser et al., 2021,
balances the two at the network's last layer). An L2-trained few-step student draws the right digit in the right
place with thick, lumpy strokes (the average of what it cannot resolve); the critic penalises
exactly that. Measured in docs/guides/models.md, "Distillation"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gentool.errors import bad_setting
from gentool.models.base import SampleOption, fast_optimizer
from gentool.models.flow import Flow, FlowConfig
from gentool.models.sngan import hinge_loss, spectrally_normalized
from gentool.registry import register_model

MAX_STEPS = 1000  # as flow's --steps


@dataclass
class ReflowConfig(FlowConfig):
    """reflow settings: the sampler's default step count (what it was distilled for) and where training times go.
    `time_sampling` "grid" draws them from the sampler's own step times 0, 1/k, …, (k−1)/k only. `adversarial`:
    the critic's weight relative to the adaptive balance (0: no critic; the sampler's steps are then trained one
    by one, as flow's). `slim`: the network leaves out the teacher's first full-resolution residual block (its
    input goes straight to the next level and to the matching up block), so each evaluation costs less."""

    sample_steps: int = 2
    time_sampling: str = "grid"
    adversarial: float = 0.0
    slim: bool = False

    time_samplings: ClassVar[tuple[str, ...]] = (*FlowConfig.time_samplings, "grid")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.sample_steps, int) or not 1 <= self.sample_steps <= MAX_STEPS:
            raise bad_setting("sample_steps", self.sample_steps, f"an integer between 1 and {MAX_STEPS}")
        if not 0 <= self.adversarial <= 100:
            raise bad_setting("adversarial", self.adversarial, "a number in [0, 100] (0: no critic)")
        if not isinstance(self.slim, bool):
            raise bad_setting("slim", self.slim, "true or false")


class PassThrough(nn.Module):
    """A residual block left out: its input, unchanged (the block's own input and embedding, as a ResBlock takes
    them; residual blocks of equal width start as the identity, so a student without one stays close)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x


def critic(channels: int, height: int, width: int) -> nn.Sequential:
    """Stride-2 3×3 convolutions (64, 128, 256, 256, … channels) until the image is at most 4 pixels on a side,
    then one score; spectral normalization is its only regulariser (no normalization layers, no dropout)."""
    layers: list[nn.Module] = []
    c_in, c = channels, 64
    while max(height, width) > 4:
        layers += [nn.Conv2d(c_in, c, 3, 2, 1), nn.LeakyReLU(0.2)]
        c_in, c, height, width = c, min(2 * c, 256), (height + 1) // 2, (width + 1) // 2
    return spectrally_normalized(nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * height * width, 1)))


@register_model("reflow")
class Reflow(Flow):
    """Rectified flow distilled from a flow or ddpm (`gentool distill`): samples in the few steps it was made for."""

    config_class = ReflowConfig
    # Written out (not derived from Flow's) so that `--help` and `gentool models` read them from this source.
    sample_options = (
        SampleOption("steps", 2, "solver steps from noise to image (network evaluations: steps with euler, "
                                 "2·steps with heun)", low=1, high=1000),
        SampleOption("solver", "euler", "fixed-step ODE solver", choices=("euler", "heun")),
    )

    def __init__(self, config: ReflowConfig):
        super().__init__(config)
        # The sampler's default is this model's own step count, not the class's.
        steps = Reflow.sample_options[0]
        self.sample_options = (SampleOption(steps.name, config.sample_steps, steps.help, low=steps.low,
                                            high=steps.high), *Reflow.sample_options[1:])
        if config.adversarial:
            self.critic = critic(config.channels, config.image_height, config.image_width)
        if config.slim:
            self.unet.down[0] = PassThrough()

    def build_optimizers(self):
        optimizers = super().build_optimizers()
        if self.config.adversarial:  # a GAN critic's usual Adam: 2e-4, β 0.5/0.999
            optimizers["critic"] = fast_optimizer(torch.optim.Adam, self.critic.parameters(), lr=2e-4,
                                                  betas=(0.5, 0.999))
        return optimizers

    def training_times(self, n: int, device: torch.device) -> torch.Tensor:
        if self.config.time_sampling != "grid":
            return super().training_times(n, device)
        k = self.config.sample_steps
        return torch.randint(0, k, (n,), device=device).float() / k

    def summary_inputs(self):
        inputs = super().summary_inputs()
        if self.config.adversarial:
            c = self.config
            inputs["critic"] = (torch.zeros(1, c.channels, c.image_height, c.image_width),)
        return inputs

    def train_step(self, real, labels, optimizers, step, latents=None):
        c = self.config
        if not c.adversarial or latents is None:
            return super().train_step(real, labels, optimizers, step, latents)
        sampler = {"steps": c.sample_steps, "solver": "euler"}
        with torch.no_grad():
            fake = self.integrate(latents, None, sampler)
        # The critic sees the student's images as they are drawn: clamped to the pixel range. Unclamped, it told
        # them from the teacher's by the out-of-range pixels alone, a feature the clamped generator term cannot
        # move (its gradient is zero there); the balanced weight then grew 2–10× and FID lagged (measured).
        critic_loss = hinge_loss(self.critic(real), self.critic(fake.clamp(-1, 1)))
        self.optimize(critic_loss, optimizers["critic"])
        fake = self.integrate(latents, None, sampler)
        loss = F.mse_loss(fake.float(), real.float())
        adversarial = -self.critic(fake.float().clamp(-1, 1)).mean()
        weight = c.adversarial * self.balance(loss, adversarial)
        self.optimize(loss + weight * adversarial, optimizers["unet"])
        return {"loss": loss.detach(), "critic_loss": critic_loss.detach(), "adversarial": adversarial.detach(),
                "adversarial_weight": weight}

    def balance(self, loss: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        """The adversarial term's weight that gives its gradient at the network's last layer the norm of the
        regression loss's (Esser et al., 2021): the two losses' scales differ by orders of magnitude and drift."""
        last = self.unet.head[-1].weight
        g_loss = torch.autograd.grad(loss, last, retain_graph=True)[0]
        g_adv = torch.autograd.grad(adversarial, last, retain_graph=True)[0]
        return (g_loss.norm() / (g_adv.norm() + 1e-4)).clamp(max=1e4).detach()
