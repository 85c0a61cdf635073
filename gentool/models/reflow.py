"""Rectified flow distilled from a teacher (reflow; Liu et al., 2023): a flow trained on couplings — the teacher's own
(noise, sample) pairs, drawn by `gentool distill` with the teacher's deterministic sampler — instead of independent
noise and images. Each noise then has one image to go to, so the paths the network learns are nearly straight and a
few Euler steps follow them: the sampler defaults to the step count it was distilled for. The network, training
step and sampler are flow's; on a plain image data set it trains as flow does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from gentool.errors import bad_setting
from gentool.models.base import SampleOption
from gentool.models.flow import Flow, FlowConfig
from gentool.registry import register_model

MAX_STEPS = 1000  # as flow's --steps


@dataclass
class ReflowConfig(FlowConfig):
    """reflow settings: the sampler's default step count (what it was distilled for) and where training times go.
    `time_sampling` "grid" draws them from the sampler's own step times 0, 1/k, …, (k−1)/k only."""

    sample_steps: int = 2
    time_sampling: str = "grid"

    time_samplings: ClassVar[tuple[str, ...]] = (*FlowConfig.time_samplings, "grid")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.sample_steps, int) or not 1 <= self.sample_steps <= MAX_STEPS:
            raise bad_setting("sample_steps", self.sample_steps, f"an integer between 1 and {MAX_STEPS}")


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

    def training_times(self, n: int, device: torch.device) -> torch.Tensor:
        if self.config.time_sampling != "grid":
            return super().training_times(n, device)
        k = self.config.sample_steps
        return torch.randint(0, k, (n,), device=device).float() / k
