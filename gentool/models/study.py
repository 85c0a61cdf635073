"""What the course study's families share: a latent code of `latent_dim` values and the study's two architecture
presets, picked by the data geometry (1×28×28 the MNIST networks, 3×32×32 the CIFAR10 ones). Families outside the
study (flow, ddpm, plugins) need neither."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gentool.errors import GEOMETRY, OPTION, ConfigError, bad_setting
from gentool.models.base import MAX_LATENT, ModelConfig

PRESETS = {(1, 28, 28): "mnist", (3, 32, 32): "cifar10"}


def preset_for(channels: int, height: int, width: int) -> str:
    """The study's preset for a geometry, or a ConfigError about the geometry naming the accepted ones."""
    shape = (channels, height, width)
    if shape not in PRESETS:
        accepted = " or ".join(f"{c}x{h}x{w}" for c, h, w in PRESETS)
        raise ConfigError(GEOMETRY, f"image geometry {shape[0]}x{shape[1]}x{shape[2]} has no architecture; accepted: "
                                    f"{accepted}; resize the images with ", listed=[(OPTION, "image_size")])
    return PRESETS[shape]


@dataclass
class StudyConfig(ModelConfig):
    """A study family's settings: the shared ones plus the latent size (default per preset and family)."""

    latent_dim: int = 0

    default_latent: ClassVar[dict[str, int]] = {"mnist": 100, "cifar10": 100}

    @property
    def preset(self) -> str:
        """The study's architecture preset this geometry selects ("mnist" or "cifar10")."""
        return preset_for(self.channels, self.image_height, self.image_width)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    @classmethod
    def geometry_defaults(cls, geometry) -> dict:
        return {"latent_dim": cls.default_latent[preset_for(geometry.channels, geometry.height, geometry.width)]}

    def validate(self) -> None:
        super().validate()
        self.preset  # noqa: B018 (refuses a geometry the study has no networks for)
        if not isinstance(self.latent_dim, int) or not 1 <= self.latent_dim <= MAX_LATENT:
            raise bad_setting("latent_dim", self.latent_dim, f"an integer between 1 and {MAX_LATENT}")
