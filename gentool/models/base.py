"""The interface every model family implements, built-in or plugin.

A model is a config dataclass plus an `nn.Module` that owns its networks, builds its optimizers and performs one
training step on a batch. The trainer, the checkpoint code, `sample` and `summary` use only this interface, so they
never need to know which family they hold.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from gentool.device import FP32, Amp
from gentool.errors import SAMPLER, ConfigError, UsageError, bad_setting, dims, listed
from gentool.models.fields import GEOMETRY_FIELDS, MAX_LATENT  # noqa: F401 (MAX_LATENT: the families check it)
MAX_CLASSES = 1000
MAX_INT = 10**9  # any other integer setting
MAX_LR = 1e6  # as --lr's own check: far above any learning rate that trains (a typo such as 1e30 is refused)
MAX_LOSS_WEIGHT = 1e4  # a loss term's weight (gradient penalty, class loss): far above any useful one
MAX_CRITIC_STEPS = 100  # critic steps per generator step (WGAN's 5): more would stall a step for minutes



def _coerce(key: str, value, default):
    """Give an override the type of the field's default (an int where a float is expected is fine)."""
    kind = type(default)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise bad_setting(key, value, KINDS.get(kind, f"a value of type {kind.__name__}"))


# what each type of setting takes, in the user's words (nan and inf reach here as text: no setting takes them)
KINDS = {bool: "true or false", int: "an integer written with the digits 0-9",
         float: "a finite number written with the digits 0-9", str: "text"}


FUSED_DEVICES = ("cpu", "cuda")  # fused Adam/AdamW/SGD kernels in every torch ≥ 2.4 (MPS: not relied on)


def fast_optimizer(cls: type[torch.optim.Optimizer], params, **hyper) -> torch.optim.Optimizer:
    """`cls(params, **hyper)` using torch's fused kernel when it has one for the parameters' device (Adam, AdamW,
    SGD on CPU and CUDA). PyTorch's default on CPU is a Python loop of several kernels per parameter
    tensor: for the MNIST VAE that loop was a quarter of the training step, the fused kernel a twentieth. Same
    update rule; results differ from the loop only by floating-point rounding."""
    params = list(params)
    # torch checks device and dtype only at the first step, so ask for fused where it has the kernels.
    fusable = params and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    if fusable and "fused" in inspect.signature(cls).parameters:
        try:
            return cls(params, fused=True, **hyper)
        except (RuntimeError, TypeError, ValueError):  # an optimizer whose fused variant this torch lacks
            pass
    return cls(params, **hyper)


def scaled(channels: int, width: float) -> int:
    """A hidden width/channel count scaled by the width multiplier (never below 1)."""
    return max(1, int(round(channels * width)))


@dataclass
class ModelConfig:
    """Settings shared by every family: image geometry, width multiplier and optimizer settings. A family adds its
    own fields (a latent size, a noise schedule, ...) in a subclass, refuses in `validate` a value or a geometry
    its networks cannot take (a ConfigError naming the field, or errors.GEOMETRY), and may set defaults per geometry
    (`geometry_defaults`)."""

    channels: int = 1
    image_height: int = 28
    image_width: int = 28
    num_classes: int = 0
    width: float = 1.0
    lr: float = 1e-3
    batch_size: int = 64

    default_batch_size: ClassVar[int] = 64

    @property
    def preset(self) -> str:
        """The name of the architecture this config builds (here its geometry, CxHxW; the study's families name
        their two presets)."""
        return f"{self.channels}x{self.image_height}x{self.image_width}"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one sample's latent code: what `sample_latent` draws, and what a latent walk moves through.
        (0,) for a family without one (its samples come from the generator alone)."""
        return (0,)

    @classmethod
    def geometry_defaults(cls, geometry) -> dict:
        """Defaults that depend on the data geometry (e.g. the study's latent size per preset), applied before the
        user's overrides; may refuse a geometry the family has no networks for."""
        return {}

    @classmethod
    def create(cls, geometry, latent_dim: int | None = None, width: float | None = None, **overrides):
        """Config for a data geometry, with the family's defaults for whatever is not overridden (None = default).
        `latent_dim` is accepted only by families that have a latent size."""
        base = dict(channels=geometry.channels, image_height=geometry.height, image_width=geometry.width,
                    num_classes=geometry.num_classes, batch_size=cls.default_batch_size)
        config = cls(**base)
        settable = {f.name for f in fields(cls)} - GEOMETRY_FIELDS
        given = {"latent_dim": latent_dim, "width": width, **overrides}
        for key, value in [*cls.geometry_defaults(geometry).items(), *given.items()]:
            if value is None:
                continue
            if key == "latent_dim" and key not in settable:
                raise ConfigError(key, "this model has no latent size; leave it out")
            if key not in settable:
                raise ConfigError(key, f"not a setting of {cls.__name__}; expected one of "
                                       + ", ".join(sorted(settable)))
            setattr(config, key, _coerce(key, value, getattr(config, key)))
        config.validate()
        return config

    def validate(self) -> None:
        """Reject values no network can be built from (a ConfigError naming the field)."""
        if not isinstance(self.num_classes, int) or not 0 <= self.num_classes <= MAX_CLASSES:
            raise bad_setting("num_classes", self.num_classes, f"a data set with at most {MAX_CLASSES} classes")
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and 0 < self.width <= 64):
            raise bad_setting("width", self.width, "a number in (0, 64]")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise bad_setting("lr", self.lr, f"a number above 0 up to {MAX_LR:,.0f}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 65536:
            raise bad_setting("batch_size", self.batch_size, "an integer between 1 and 65536")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise bad_setting(f.name, value, "a finite number")
            if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
                raise bad_setting(f.name, value, f"an integer between {-MAX_INT:,} and {MAX_INT:,}")

    def batch_size_for(self, n_images: int) -> int:
        """The batch size for training on `n_images` images when none is given: the study's, whatever the size."""
        return self.batch_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Rebuild a config from its JSON form, ignoring nothing silently: unknown keys are an error."""
        valid = {f.name for f in fields(cls)}
        unknown = set(data) - valid
        if unknown:
            raise UsageError(f"checkpoint: config has unknown fields {listed(sorted(unknown))} for {cls.__name__}")
        defaults = cls()
        return cls(**{k: _coerce(k, v, getattr(defaults, k)) for k, v in data.items()})


@dataclass
class AdamConfig(ModelConfig):
    """Settings of a family trained with Adam: its learning rate (`lr`, as for every family) and both betas,
    checked here once for every family that uses them (`adam` builds the optimizer from them)."""

    beta1: float = 0.9
    beta2: float = 0.999

    def validate(self) -> None:
        super().validate()
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise bad_setting(name, value, "a number in [0, 1)")


def adam(config: AdamConfig, params) -> torch.optim.Optimizer:
    """Adam with the config's lr, beta1 and beta2 (torch's fused kernel where it has one)."""
    return fast_optimizer(torch.optim.Adam, params, lr=config.lr, betas=(config.beta1, config.beta2))


@dataclass(frozen=True)
class SampleOption:
    """A sampler setting a family declares (e.g. the number of solver steps), its type given by its default: `sample`,
    `evaluate`, `train` (for its epoch grids and --eval-every) and sweeps take it as --sampler NAME=VALUE (the
    built-in ones also as --steps, --solver, --guidance), and `gentool models --check` lists it. A str setting
    takes one of `choices`; a number lies in [low, high]."""

    name: str
    default: int | float | str
    help: str
    choices: tuple[str, ...] = ()
    low: float = -math.inf
    high: float = math.inf

    def check(self, value, family: str):
        """`value` converted to the setting's type, or a ConfigError naming the setting and what it accepts."""
        if isinstance(self.default, str):
            if value not in self.choices:
                raise bad_setting(self.name, value, f"one of {', '.join(self.choices)} for {family}", SAMPLER)
            return value
        kind = type(self.default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (kind is int and value != int(value)) or not self.low <= value <= self.high:
            accepted = "an integer" if kind is int else "a number"
            raise bad_setting(self.name, value, f"{accepted} between {self.low:g} and {self.high:g} for {family}",
                              SAMPLER)
        return kind(value)


class GenerativeModel(nn.Module):
    """Base class: subclasses set `config_class` and `pixel_range`, build networks in __init__, and implement
    `build_optimizers`, `train_step`, `summary_inputs` and either `decode` (a one-pass decoder from latent codes)
    or `sample_batch` (any other sampler). What a family can do beyond that is declared below, never guessed."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    # The range the networks see real images in; data are mapped from uint8 into it.
    pixel_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    # The networks sampling runs: what an exponential moving average (--ema) of the weights covers.
    sampling_networks: ClassVar[tuple[str, ...]] = ()
    # The --ema decay a new run uses when --ema is not given (None: no average unless asked for).
    default_ema: ClassVar[float | None] = None
    # A class-conditional family takes the images' labels in training and a label per sample when sampling.
    class_conditional: ClassVar[bool] = False
    # Networks differentiated twice (a gradient penalty): torch.compile cannot compile those.
    double_backward_networks: ClassVar[tuple[str, ...]] = ()
    # The family implements `losses(x, labels)` returning per-image means of "reconstruction" and "kl", the terms
    # of its negative ELBO: `evaluate --metrics vae` and held-out losses use them.
    likelihood_terms: ClassVar[bool] = False
    # The family's `train_step` takes `latents=` (N × latent_shape), the code each image of the batch was drawn
    # from: it can train on couplings, the (noise, sample) pairs of a teacher (`gentool distill`).
    takes_couplings: ClassVar[bool] = False
    # The sampler's settings, each declared with its type, default, help and accepted values (see SampleOption);
    # a family without any has none.
    sample_options: ClassVar[tuple[SampleOption, ...]] = ()

    def __init__(self, config: ModelConfig):
        super().__init__()
        if self.class_conditional and config.num_classes < 2:
            raise ConfigError("num_classes", f"{self.name} is class-conditional and needs labelled data (images in "
                              f"one subfolder per class, or mnist/cifar10); this data set has {config.num_classes} "
                              f"classes")
        self.config = config
        self.amp: Amp = FP32  # set by whoever runs the model (--precision); not part of the saved state

    @property
    def conditional(self) -> bool:
        """Whether samples are drawn for given class labels."""
        return self.class_conditional

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one sample's latent code ((0,) when the family has none)."""
        return tuple(self.config.latent_shape)

    @property
    def has_latent(self) -> bool:
        """Whether samples are a function of a latent code that can be given (a latent walk moves through it)."""
        return math.prod(self.latent_shape) > 0

    def networks(self) -> dict[str, nn.Module]:
        """The named networks (generator, discriminator, critic, encoder, decoder, ...)."""
        return dict(self.named_children())

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, real: torch.Tensor, labels: torch.Tensor, optimizers: dict, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch of real images (already in `pixel_range`); returns detached scalars.
        The trainer runs it inside `self.amp.autocast()`; update weights through `optimize`. A family that
        `takes_couplings` also accepts `latents=`, given when the data are couplings."""
        raise NotImplementedError

    def optimize(self, loss: torch.Tensor, optimizer) -> None:
        """zero_grad → backward → step for one network's `loss`: the backward pass runs outside autocast, and in
        fp16 on CUDA through the gradient scaler (which skips a step whose scaled gradients overflowed)."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.amp.scaler
        with self.amp.fp32():
            if scaler is None:
                loss.backward()
                optimizer.step()
                return
            scaler.scale(loss).backward()
            average = getattr(optimizer, "average_gradients", None)  # a GuardedOptimizer's, in data-parallel runs
            if average is not None:
                average()  # on every rank, before the scaler's skip decision (see GuardedOptimizer.average_gradients)
            scaler.step(optimizer)
            scaler.update()

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Latent codes for `n` samples (N × latent_shape, standard normal), drawn on the CPU so a seed gives the
        same codes on any device."""
        return torch.randn(n, *self.latent_shape, generator=generator)

    def sample_labels(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """Uniformly drawn class labels for `n` samples of a conditional model (on the CPU); None otherwise."""
        if not self.conditional:
            return None
        return torch.randint(0, self.config.num_classes, (n,), generator=generator)

    def spread_labels(self, n: int) -> torch.Tensor | None:
        """Labels 0, 1, …, K−1, 0, 1, … for `n` samples of a conditional model (every class shown); None otherwise."""
        return torch.arange(n) % self.config.num_classes if self.conditional else None

    def sample_settings(self, given: dict | None = None) -> dict:
        """The sampler's settings: the family's defaults with `given` ({name: value}) checked and applied. A
        setting the family does not declare is a ConfigError naming it."""
        declared = {o.name: o for o in self.sample_options}
        settings = {name: o.default for name, o in declared.items()}
        for name, value in (given or {}).items():
            if value is None:
                continue
            if name not in declared:
                has = "its sampling settings are " if declared else "it has no sampling settings"
                raise ConfigError(name, f"not a setting of {self.name}'s sampler; {has}", section=SAMPLER,
                                  listed=tuple(declared))
            settings[name] = declared[name].check(value, self.name)
        return settings

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] (N×C×H×W) for latent codes `z` (and, for a conditional model, class `labels`): the
        sampler of a one-pass decoder (GAN generator, VAE decoder)."""
        raise NotImplementedError

    def sample_batch(self, z: torch.Tensor, labels: torch.Tensor | None, settings: dict,
                     generator: torch.Generator) -> torch.Tensor:
        """Images in [0, 1] for one batch of latent codes `z` (on the model's device), with the sampler's
        `settings`. Any randomness beyond `z` (an ancestral sampler's noise) is drawn from `generator`, on the
        CPU. The default runs `decode`."""
        return self.decode(z, labels)

    def summary_inputs(self) -> dict[str, torch.Tensor | tuple[torch.Tensor, ...]]:
        """One example input (batch of 1) per network, for the layer tables; a tuple for a network that takes
        several inputs (a conditional network's labels)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → floats in `pixel_range`."""
        lo, hi = self.pixel_range
        return images.float().mul_((hi - lo) / 255.0).add_(lo)

    def _checked_images(self, images, n: int) -> torch.Tensor:
        """The sampler's images for `n` codes, refused unless float N×C×H×W of the config's geometry and finite.
        Every consumer (sample, export, train's grids) draws through `generate`, so a plugin's wrong sampler is caught
        once, here (export traced a wrong shape into its file and passed parity; uint8 made NaN silent zeros)."""
        c = self.config
        want = (n, c.channels, c.image_height, c.image_width)
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            what = f"a {images.dtype} tensor" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{self.name}'s sampler returned {what}, not float images {dims(want)}")
        if tuple(images.shape) != want:
            raise ValueError(f"{self.name}'s sampler returned images of shape {dims(images.shape)}, not "
                             f"{dims(want)} (the config's channels × image_height × image_width for {n} codes)")
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{self.name}'s sampler returned non-finite images (NaN or inf); nothing is written "
                             f"from them")
        return images

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None, *,
                 latents: torch.Tensor | None = None, settings: dict | None = None,
                 batch_size: int = 500, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """The one sampling entry point: `n` images in [0, 1] on the CPU, drawn in eval mode under the model's
        precision. Everything random comes from `generator` (the latent codes, then the labels of a conditional
        model, then whatever the sampler draws), so a seed repeats the images exactly. `labels` asks a conditional
        model for classes, `latents` gives the codes (a latent walk), `settings` the sampler's settings (see
        `sample_settings`); `progress` is told each batch's count once it is drawn."""
        if labels is not None and not self.conditional:
            raise ConfigError("labels", f"{self.name} is not class-conditional; its samples cannot be asked for by "
                                        f"class", section=SAMPLER)
        settings = self.sample_settings(settings)
        if latents is not None and tuple(latents.shape) != (n, *self.latent_shape):
            raise ValueError(f"latents of shape {dims(latents.shape)} for {n} samples of {self.name}, whose latent "
                             f"shape is {dims(self.latent_shape)}")
        z = self.sample_latent(n, generator) if latents is None else latents
        if labels is None:
            labels = self.sample_labels(n, generator)
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, n, batch_size):
                chunk = z[start:start + batch_size].to(self.device)
                y = None if labels is None else labels[start:start + batch_size].to(self.device)
                with self.amp.autocast():
                    images = self.sample_batch(chunk, y, settings, generator)
                out.append(self._checked_images(images, len(chunk)).float().cpu())
                if progress is not None:
                    progress(len(chunk))
            return torch.cat(out)
        finally:
            self.train(was_training)
