"""What every adversarial family shares: a generator mapping noise to images in the family's pixel range ([-1, 1]
after a tanh unless the family says otherwise) and a second network (discriminator or critic) that scores images.
Families differ only in their optimizers and their training step."""

from __future__ import annotations

import torch
from torch import nn

from gentool.models.base import GenerativeModel, adam, scaled


def lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


OUTPUTS = {"tanh": (nn.Tanh, (-1.0, 1.0)), "sigmoid": (nn.Sigmoid, (0.0, 1.0))}  # a generator's last activation and
# the pixel range it draws in


def mnist_generator(latent_dim: int, channels: int, width: float, batchnorm: bool,
                    output: str = "tanh") -> nn.Sequential:
    """Linear → 128×7×7 → two k4 s2 transposed convs (7→14→28) → k7 conv → tanh (or `output`)."""
    c = scaled(128, width)
    layers: list[nn.Module] = [nn.Linear(latent_dim, c * 7 * 7), lrelu(), nn.Unflatten(1, (c, 7, 7))]
    for _ in range(2):
        layers.append(nn.ConvTranspose2d(c, c, 4, 2, 1))
        layers += [nn.BatchNorm2d(c)] if batchnorm else []
        layers.append(lrelu())
    layers += [nn.Conv2d(c, channels, 7, padding=3), OUTPUTS[output][0]()]
    return nn.Sequential(*layers)


def mnist_discriminator(channels: int, width: float, batchnorm: bool) -> nn.Sequential:
    """Two k4 s2 convs (28→14→7) with LeakyReLU 0.2 → flatten → one logit/score."""
    c = scaled(64, width)
    layers: list[nn.Module] = []
    for cin in (channels, c):
        layers.append(nn.Conv2d(cin, c, 4, 2, 1))
        layers += [nn.BatchNorm2d(c)] if batchnorm else []
        layers.append(lrelu())
    layers += [nn.Flatten(), nn.Linear(c * 7 * 7, 1)]
    return nn.Sequential(*layers)


def cifar_generator(latent_dim: int, channels: int, width: float, output: str = "tanh") -> nn.Sequential:
    """Linear → 256×4×4 → three k4 s2 transposed convs (4→8→16→32) → k3 conv → tanh (or `output`)."""
    c1, c2 = scaled(256, width), scaled(128, width)
    return nn.Sequential(
        nn.Linear(latent_dim, c1 * 4 * 4), lrelu(), nn.Unflatten(1, (c1, 4, 4)),
        nn.ConvTranspose2d(c1, c2, 4, 2, 1), lrelu(), nn.ConvTranspose2d(c2, c2, 4, 2, 1), lrelu(),
        nn.ConvTranspose2d(c2, c2, 4, 2, 1), lrelu(), nn.Conv2d(c2, channels, 3, padding=1), OUTPUTS[output][0](),
    )


def cifar_discriminator(channels: int, width: float, dropout: float = 0.4) -> nn.Sequential:
    """k3 conv, then three k3 s2 convs (32→16→8→4), LeakyReLU 0.2 → flatten → dropout → one logit."""
    c1, c2, c3 = scaled(64, width), scaled(128, width), scaled(256, width)
    return nn.Sequential(
        nn.Conv2d(channels, c1, 3, 1, 1), lrelu(), nn.Conv2d(c1, c2, 3, 2, 1), lrelu(),
        nn.Conv2d(c2, c2, 3, 2, 1), lrelu(), nn.Conv2d(c2, c3, 3, 2, 1), lrelu(),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * 4 * 4, 1),
    )


def glorot_init(module: nn.Module) -> None:
    """Keras's default layer init (Glorot-uniform weights, zero biases), which the study's networks were written for.
    PyTorch's default gives every layer a random bias as well: in the CIFAR-10 generator at the start, the image
    common to all codes is then 9× larger than what varies with the code (0.016 against 0.0017, mean absolute
    pre-activation), while with zero biases the varying part is the larger (0.0066 against 0.0045)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            # torch's fans for a kernel (out, in, kh, kw) (ConvTranspose: (in, out, ...)) equal Keras's for its layout
            fan_out, fan_in = layer.weight.shape[0], layer.weight.shape[1]
            field = layer.weight[0, 0].numel()
            bound = (6.0 / ((fan_in + fan_out) * field)) ** 0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)


def adam_per_network(model: GenerativeModel) -> dict[str, torch.optim.Optimizer]:
    """One Adam optimizer per network, with the config's lr, beta1 and beta2."""
    return {name: adam(model.config, net.parameters()) for name, net in model.networks().items()}


class AdversarialModel(GenerativeModel):
    """Generator plus a scoring network held in `self.generator` and `self.<critic_name>`. A conditional family's
    networks take the class labels as a second argument."""

    pixel_range = (-1.0, 1.0)
    critic_name = "discriminator"
    sampling_networks = ("generator",)

    def __init__(self, config):
        super().__init__(config)
        self.build_networks(config)

    def build_networks(self, config) -> None:
        """Create `self.generator` and the scoring network for `config`: what a family changes to have other
        networks (its subclasses then construct through it, whatever networks their parent builds)."""
        raise NotImplementedError

    def decode(self, z, labels=None):
        lo, hi = self.pixel_range
        return self.generate_images(z, labels).sub(lo).div(hi - lo).clamp(0, 1)

    def generate_images(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's output (in the networks' pixel range) for codes `z` (and labels, if conditional)."""
        return self.generator(z, labels) if self.conditional else self.generator(z)

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's logits or the critic's scores (N×1) for `images` (and labels, if conditional)."""
        net = getattr(self, self.critic_name)
        return net(images, labels) if self.conditional else net(images)

    def summary_inputs(self):
        c = self.config
        z, x = torch.zeros(1, c.latent_dim), torch.zeros(1, c.channels, c.image_height, c.image_width)
        if self.conditional:
            y = torch.zeros(1, dtype=torch.long)
            return {"generator": (z, y), self.critic_name: (x, y)}
        return {"generator": z, self.critic_name: x}

    def fake(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A batch of generated images in the networks' pixel range, with gradients to the generator."""
        return self.generate_images(torch.randn(n, self.config.latent_dim, device=self.device), labels)
