"""Class-conditional VAE (Sohn et al., 2015): the study's VAE networks with the one-hot class appended to the
encoder's features and to the latent code the decoder reads, so samples can be asked for by class."""

from __future__ import annotations

from gentool.models.vae import VAE, VAEConfig
from gentool.registry import register_model


@register_model("cvae")
class CVAE(VAE):
    """Conditional VAE: the study's VAE with the class given to encoder heads and decoder; sample by class."""

    config_class = VAEConfig
    class_conditional = True
