"""Denoising diffusion (Ho et al., 2020) with ε-prediction and the cosine noise schedule (Nichol & Dhariwal, 2021):
images are noised as x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε over T steps, and a U-Net learns to predict ε. Samplers run on
`steps` of the T times, evenly spaced: DDIM (Song et al., 2021; deterministic, η = 0, so the initial noise is a
latent code) and the ancestral DDPM sampler on the respaced schedule (fresh noise every step, drawn from the
seeded generator)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gentool.errors import bad_setting
from gentool.models.base import SampleOption
from gentool.models.unet import GUIDANCE, UNetConfig, UNetModel
from gentool.registry import register_model


@dataclass
class DDPMConfig(UNetConfig):
    """ddpm settings: the number of diffusion times T and the cosine schedule's offset s."""

    timesteps: int = 1000
    schedule_offset: float = 0.008

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.timesteps, int) or not 2 <= self.timesteps <= 100_000:
            raise bad_setting("timesteps", self.timesteps, "an integer between 2 and 100,000")
        if not 0 < self.schedule_offset <= 1:
            raise bad_setting("schedule_offset", self.schedule_offset, "a number in (0, 1]")


def cosine_alpha_bars(timesteps: int, offset: float) -> torch.Tensor:
    """ᾱ_t for t = 0 … T−1 (float64): cos²(((t+1)/T + s)/(1 + s)·π/2) over its value at 0, with each step's
    β = 1 − ᾱ_t/ᾱ_{t−1} capped at 0.999 so the last steps stay invertible."""
    f = lambda t: torch.cos((t / timesteps + offset) / (1 + offset) * math.pi / 2) ** 2  # noqa: E731
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    betas = (1 - f(steps[1:]) / f(steps[:-1])).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


@register_model("ddpm")
class DDPM(UNetModel):
    """Denoising diffusion (ε-prediction, cosine schedule) on a small U-Net; ancestral or DDIM sampling in --steps."""

    config_class = DDPMConfig
    sample_options = (
        SampleOption("steps", 20, "denoising steps, evenly spaced over the T training times (one network "
                                  "evaluation each)", low=1, high=100_000),
        # Ancestral by default: on MNIST it scored FID 6.1 at 20 steps against DDIM's 11.3 (10.3 against 16.6 at
        # 10) at the same speed, after 15 minutes of training (benchmarks/RESULTS.md, "FID against sampler steps").
        SampleOption("solver", "ddpm", "sampler: ddpm (ancestral, fresh noise each step) or ddim (deterministic)",
                     choices=("ddpm", "ddim")),
    )

    def __init__(self, config: DDPMConfig):
        super().__init__(config)
        # A fixed function of the config: kept out of the state dict (and checkpoints), and made on the CPU even when
        # the model is built on the meta device (a checkpoint's model is, until its weights are read).
        with torch.device("cpu"):
            self.alpha_bars = cosine_alpha_bars(config.timesteps, config.schedule_offset)
        # The samplers' copy, as Python floats: constants to an export's tracer (`gentool export`), which turns
        # values read from a tensor into symbols.
        self.alpha_bar_values = self.alpha_bars.tolist()

    def train_step(self, real, labels, optimizers, step):
        T = self.config.timesteps
        t = torch.randint(0, T, (len(real),), device=real.device)
        a = self.alpha_bars.to(real.device)[t].float()[:, None, None, None]
        noise = torch.randn(real.shape, device=real.device)  # filled in logical order, whatever the layout
        x_t = a.sqrt() * real + (1 - a).sqrt() * noise
        predicted = self.unet(x_t, t.float() / T, self.training_labels(labels))
        loss = F.mse_loss(predicted.float(), noise)
        self.optimize(loss, optimizers["unet"])
        return {"loss": loss.detach()}

    def sampling_times(self, steps: int) -> list[int]:
        """`steps` training times from T−1 down to 0, evenly spaced (fewer when T has fewer distinct ones): the
        points of torch.linspace(T − 1, 0, n) in float64, rounded half to even, computed in Python as its CPU kernel
        does (from both ends towards the middle), so an export's tracer sees constants."""
        T, n = self.config.timesteps, min(steps, self.config.timesteps)
        if n == 1:
            return [T - 1]
        step = -(T - 1) / (n - 1)
        points = [T - 1 + step * i if i < n // 2 else -step * (n - 1 - i) for i in range(n)]
        return sorted({round(p) for p in points}, reverse=True)

    def sample_batch(self, z, labels, settings, generator):
        """From the noise z at time T−1 down to an image: at each time, the network's ε gives an estimate of the
        clean image x̂0 (clipped to the pixel range); DDIM moves to the previous time along that estimate, DDPM
        draws from the posterior q(x_prev | x_t, x̂0) of the respaced schedule."""
        x, ancestral = z.float(), settings["solver"] == "ddpm"
        times = self.sampling_times(settings["steps"])
        bars = self.alpha_bar_values
        for i, t in enumerate(times):
            a, a_prev = bars[t], bars[times[i + 1]] if i + 1 < len(times) else 1.0
            tt = torch.full((x.shape[0],), t / self.config.timesteps, device=x.device)
            eps = self.predict(x, tt, labels, settings)
            x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
            if not ancestral:
                eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)  # the ε consistent with the clipped x̂0
                x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
                continue
            beta = 1 - a / a_prev
            x = (math.sqrt(a_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - a_prev) * x) / (1 - a)
            if i + 1 < len(times):
                noise = torch.randn(x.shape, generator=generator).to(x.device)
                x = x + math.sqrt(beta * (1 - a_prev) / (1 - a)) * noise
        return self.to_images(x)


@register_model("cddpm")
class ClassDDPM(DDPM):
    """Class-conditional diffusion with classifier-free guidance (--guidance); sample by class."""

    class_conditional = True
    sample_options = DDPM.sample_options + (GUIDANCE,)
