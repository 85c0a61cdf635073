"""The same checks over every registered model, built-ins and installed plugins alike, on both geometries."""

import math

import pytest
import torch

from gentool.checkpoint import load_checkpoint, save_checkpoint
from gentool.data import Geometry
from gentool.device import prepare
from gentool.models.base import GenerativeModel
from gentool.registry import list_models
from gentool.summary import summarize

GEOMETRIES = {"mnist": Geometry(1, 28, 28, 10), "cifar10": Geometry(3, 32, 32, 10)}
MODELS = [e.name for e in list_models()]


def build(name, geometry="mnist", **overrides):
    cls = next(e.cls for e in list_models() if e.name == name)
    torch.manual_seed(0)
    return cls(cls.config_class.create(GEOMETRIES[geometry], **overrides))


def real_batch(model, n=8):
    g = torch.Generator().manual_seed(1)
    c = model.config
    return model.normalize(torch.randint(0, 256, (n, c.channels, c.image_height, c.image_width), generator=g,
                                         dtype=torch.uint8)), torch.arange(n) % 10


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("name", MODELS)
class TestContract:
    def test_is_a_generative_model_with_a_config(self, name, geometry):
        model = build(name, geometry)
        assert isinstance(model, GenerativeModel) and model.name == name
        assert model.config.preset == geometry
        assert type(model.config).from_dict(model.config.to_dict()) == model.config

    def test_train_steps_return_finite_scalars_and_change_weights(self, name, geometry):
        model = build(name, geometry)
        optimizers = model.build_optimizers()
        assert optimizers and all(isinstance(o, torch.optim.Optimizer) for o in optimizers.values())
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x, y = real_batch(model)
        lo, hi = model.pixel_range
        assert lo - 1e-6 <= x.min() and x.max() <= hi + 1e-6
        for step in range(6):
            out = model.train_step(x, y, optimizers, step)
            assert out and all(v.dim() == 0 and math.isfinite(float(v)) for v in out.values())
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    def test_generate_is_seeded_and_in_unit_range(self, name, geometry):
        model = build(name, geometry)
        a = model.generate(5, torch.Generator().manual_seed(3))
        b = model.generate(5, torch.Generator().manual_seed(3))
        c = GEOMETRIES[geometry]
        assert a.shape == (5, c.channels, c.height, c.width)
        assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1

    def test_runtime_preparation_changes_how_not_what_it_computes(self, name, geometry):
        """Channels-last and gentool.kernels (what `prepare` applies on a CPU) leave samples and losses as they were."""
        plain, fast = build(name, geometry), build(name, geometry)
        prepare(fast, torch.device("cpu"))
        a = plain.generate(4, torch.Generator().manual_seed(3))
        b = fast.generate(4, torch.Generator().manual_seed(3))
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        x, y = real_batch(plain)
        outs = []
        for model in (plain, fast):
            torch.manual_seed(5)
            outs.append(model.train_step(x, y, model.build_optimizers(), 0))
        assert outs[0].keys() == outs[1].keys()
        for k in outs[0]:
            torch.testing.assert_close(outs[1][k], outs[0][k], rtol=1e-3, atol=1e-4, msg=k)

    def test_checkpoint_round_trip_rebuilds_an_identical_model(self, name, geometry, tmp_path):
        model = build(name, geometry, latent_dim=7, width=0.5)
        optimizers = model.build_optimizers()
        model.train_step(*real_batch(model), optimizers, 0)
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, model, optimizers, {"epoch": 1, "step": 1}, {"geometry": GEOMETRIES[geometry].to_dict()}, "test")
        ckpt = load_checkpoint(path)
        assert ckpt.model.config == model.config and ckpt.state["step"] == 1
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        assert torch.equal(ckpt.model.generate(4, g()), model.generate(4, g()))
        fresh = ckpt.model.build_optimizers()
        ckpt.load_optimizers(fresh)
        for k in optimizers:
            assert fresh[k].state_dict()["param_groups"] == optimizers[k].state_dict()["param_groups"]

    def test_summary_counts_every_parameter(self, name, geometry):
        model = build(name, geometry)
        summary = summarize(model)
        n = sum(p.numel() for p in model.parameters())
        assert summary["trainable_params"] == n
        assert summary["networks"].keys() == model.networks().keys()

    def test_width_scales_the_networks(self, name, geometry):
        small, big = build(name, geometry, width=0.5), build(name, geometry, width=2)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(small) < count(build(name, geometry)) < count(big)
