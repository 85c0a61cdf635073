"""A sampler's images are checked where every consumer draws them (`generate`): a plugin whose sampler returns the
wrong shape, a non-float tensor or NaN is refused in one line instead of being exported with a false description
(issue 26) or written to an .npz as silent zeros."""

import pytest
import torch

from gentool.data import Geometry
from gentool.errors import UsageError
from gentool.export import _deterministic
from gentool.models.gan import GAN


class _Broken(GAN):
    make = staticmethod(lambda x: x)

    def decode(self, z, labels=None):
        return self.make(super().decode(z, labels))


def broken(make):
    cls = type("Broken", (_Broken,), {"make": staticmethod(make), "name": "broken"})
    torch.manual_seed(0)
    return cls(cls.config_class.create(Geometry(1, 28, 28, 10)))


@pytest.mark.parametrize("make, says", [
    (lambda x: torch.zeros(len(x) + 1, 3, 7, 5), "shape 4×3×7×5, not 3×1×28×28"),
    (lambda x: torch.full_like(x, float("nan")), "non-finite"),
    (lambda x: torch.full_like(x, float("inf")), "non-finite"),
    (lambda x: (x * 255).to(torch.uint8), "torch.uint8 tensor"),
])
def test_generate_refuses_what_is_not_the_configs_images(make, says):
    with pytest.raises(ValueError, match=says):
        broken(make).generate(3, torch.Generator().manual_seed(0))


def test_generate_passes_a_good_samplers_images():
    images = broken(lambda x: x).generate(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()


def test_export_names_nan_output_rather_than_extra_noise():
    """NaN ≠ NaN made export's determinism check call a NaN sampler one that draws extra noise (exit 2)."""
    model = broken(lambda x: torch.full_like(x, float("nan"))).eval()
    z = model.sample_latent(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="non-finite") as caught:
        _deterministic(model, z, None, model.sample_settings({}))
    assert not isinstance(caught.value, UsageError)
