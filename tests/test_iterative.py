"""flow and ddpm: the samplers' arithmetic against known answers, guidance, and the family-neutral interface they
rely on (sampler settings, latents, EMA on by default, sampling commands)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from gentool.checkpoint import load_checkpoint
from gentool.data import Geometry
from gentool.errors import ConfigError, UsageError
from gentool.models.ddpm import DDPM, cosine_alpha_bars
from gentool.models.flow import ClassFlow, Flow
from gentool.models.unet import UNet
from gentool.registry import get_entry
from gentool.train import TrainOptions, train
from gentool.train_options import cli_message

MNIST = Geometry(1, 28, 28, 10)


def build(cls, geometry=MNIST, **kw):
    torch.manual_seed(0)
    return cls(cls.config_class.create(geometry, **{"width": 0.25, **kw}))


def test_flow_solvers_integrate_a_known_velocity_field(monkeypatch):
    """dx/dt = −x from x(0) = z ends at z/e; Euler's error shrinks like 1/steps, Heun's like 1/steps²."""
    model = build(Flow)
    monkeypatch.setattr(model, "predict", lambda x, t, labels, settings: -x)
    z = torch.ones(1, 1, 28, 28)
    exact = math.exp(-1)

    def error(solver, steps):
        images = model.sample_batch(z, None, {"solver": solver, "steps": steps}, torch.Generator())
        return abs(float(images.mean()) * 2 - 1 - exact)  # images are (x + 1) / 2

    assert error("euler", 1) == pytest.approx(exact, abs=1e-6)  # one Euler step from 1 with slope −1 reaches 0
    assert error("euler", 20) < error("euler", 10) < error("euler", 5)
    assert error("euler", 10) / error("euler", 20) == pytest.approx(2, rel=0.1)
    assert error("heun", 10) / error("heun", 20) == pytest.approx(4, rel=0.15)
    assert error("heun", 5) < error("euler", 20)


def test_cosine_schedule():
    bars = cosine_alpha_bars(1000, 0.008)
    assert bars.shape == (1000,) and torch.all(bars[1:] < bars[:-1])
    assert bars[0] > 0.9999 and bars[-1] < 1e-4
    assert float(bars[499]) == pytest.approx(math.cos((0.5 + 0.008) / 1.008 * math.pi / 2) ** 2, rel=1e-3)


@pytest.mark.parametrize("solver", ["ddim", "ddpm"])
@pytest.mark.parametrize("steps", [2, 7, 50])
def test_ddpm_samplers_reach_the_image_an_exact_denoiser_knows(monkeypatch, solver, steps):
    """With the ε that exactly explains x_t from a known clean image, both samplers end on that image, whatever the
    number of steps (the ancestral one despite its noise). (One step alone is ill-conditioned: at t = T−1, √ᾱ ≈ 5e-5
    turns fp32 rounding in ε into 2e-3 in x̂0; every later step recomputes x̂0 at a smaller noise level.)"""
    model = build(DDPM)
    target = torch.linspace(-0.9, 0.9, 28 * 28).reshape(1, 1, 28, 28)
    bars = model.alpha_bars

    def exact_eps(x, t, labels, settings):
        a = float(bars[round(float(t[0]) * model.config.timesteps)])
        return (x - math.sqrt(a) * target) / math.sqrt(1 - a)

    monkeypatch.setattr(model, "predict", exact_eps)
    z = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    images = model.sample_batch(z, None, {"solver": solver, "steps": steps}, torch.Generator().manual_seed(1))
    torch.testing.assert_close(images, (target + 1) / 2, atol=1e-5, rtol=0)
    assert len(model.sampling_times(steps)) == steps and model.sampling_times(steps)[0] == 999


def test_guidance_combines_conditional_and_unconditional_predictions(monkeypatch):
    model = build(ClassFlow)
    calls = []

    class FakeUNet(torch.nn.Module):
        """Predicts 1 everywhere without a class (index 10) and 3 with one."""

        def forward(self, x, t, labels=None):
            calls.append(labels.tolist())
            return torch.where(labels == 10, 1.0, 3.0)[:, None, None, None].expand_as(x).clone()

    monkeypatch.setattr(model, "unet", FakeUNet())
    x, t, y = torch.zeros(2, 1, 28, 28), torch.zeros(()), torch.tensor([4, 5])
    assert float(model.predict(x, t, y, {"guidance": 1.0}).mean()) == 3.0  # plain conditional: one pass
    assert float(model.predict(x, t, y, {"guidance": 2.5}).mean()) == pytest.approx(1 + 2.5 * (3 - 1))
    assert calls == [[4, 5], [4, 5, 10, 10]]


def test_unet_sizes_and_geometries():
    for geometry in (MNIST, Geometry(3, 32, 32, 10), Geometry(3, 64, 48, 0)):
        model = build(Flow, geometry)
        x = torch.zeros(2, *geometry.shape)
        assert model.unet(x, torch.rand(2)).shape == x.shape
    # the model names its own fields; the command line names the options that set them
    with pytest.raises(ConfigError, match="geometry: image geometry 1x30x30 has no U-Net") as err:
        build(Flow, Geometry(1, 30, 30, 0))
    assert cli_message(err.value).startswith("--data: image geometry 1x30x30 has no U-Net")
    assert cli_message(err.value).endswith("resize the images with --image-size")
    with pytest.raises(ConfigError, match="latent_dim: this model has no latent size; leave it out") as err:
        Flow.config_class.create(MNIST, latent_dim=5)
    assert cli_message(err.value) == "--latent-dim: this model has no latent size; leave it out"
    counts = [sum(p.numel() for p in UNet(1, build(Flow, width=w).config.channel_counts()).parameters())
              for w in (0.5, 1, 2)]
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("given, message, flags", [
    ({"steps": 0}, "steps: got 0; expected an integer between 1 and 1000 for flow", "--steps: got 0"),
    ({"steps": 2.5}, "steps: got 2.5; expected an integer", "--steps: got 2.5"),
    ({"solver": "rk4"}, "solver: got 'rk4'; expected one of euler, heun for flow", "--solver: got 'rk4'"),
    ({"guidance": 2.0}, "guidance: not a setting of flow's sampler; its sampling settings are steps, solver",
     "--guidance: not a setting of flow's sampler; its sampling settings are --steps, --solver"),
    ({"eta": 0.5}, "eta: not a setting of flow's sampler", "--sampler eta: not a setting of flow's sampler"),
])
def test_sampler_settings_are_checked(given, message, flags):
    with pytest.raises(ConfigError) as err:
        build(Flow).sample_settings(given)
    assert message in str(err.value) and cli_message(err.value).startswith(flags)
    with pytest.raises(ConfigError, match="steps: not a setting of gan's sampler; it has no sampling settings"):
        build(get_entry("gan").cls).sample_settings({"steps": 4})


def small_run(mnist_root, out, model="flow", epochs=2, **kw):
    return TrainOptions(model=model, data="mnist", data_dir=str(mnist_root), epochs=epochs, limit=48, batch_size=16,
                        width=0.25, seed=4, out=str(out), checkpoint_every=0, **kw)


def test_ema_is_on_by_default_and_resume_is_bit_exact(mnist_root, tmp_path):
    """flow keeps a weight average unless --ema 0; an interrupted run resumed to the end equals a straight one,
    the average and the sampler settings it was given included."""
    straight = train(small_run(mnist_root, tmp_path / "a", steps=2))
    train(small_run(mnist_root, tmp_path / "b", epochs=1, steps=2))
    resumed = train(TrainOptions(model="flow", resume=str(tmp_path / "b"), epochs=2, data_dir=str(mnist_root)))
    assert resumed["step"] == straight["step"] == 6
    a, b = load_file(str(tmp_path / "a/last.safetensors")), load_file(str(tmp_path / "b/last.safetensors"))
    assert any(k.startswith("ema.unet.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "b/last.safetensors").state["options"]["steps"] == 2
    config = json.loads((tmp_path / "a/config.json").read_text())
    assert config["options"]["ema"] == Flow.default_ema
    off = train(small_run(mnist_root, tmp_path / "c", epochs=1, ema=0))
    assert not any(k.startswith("ema.") for k in load_file(off["checkpoints"]["last"]))


def test_a_family_without_a_latent_samples_from_the_generator_and_refuses_a_walk():
    from gentool.models.base import GenerativeModel, ModelConfig
    from gentool.sampling import latent_walk

    class Pixels(GenerativeModel):
        """Independent uniform pixels: no latent code, all randomness from the generator."""

        def __init__(self, config):
            super().__init__(config)
            self.scale = torch.nn.Parameter(torch.ones(()))

        def sample_batch(self, z, labels, settings, generator):
            return torch.rand(len(z), 1, 28, 28, generator=generator) * self.scale

    Pixels.name = "pixels"
    model = Pixels(ModelConfig.create(MNIST))
    assert not model.has_latent and model.sample_latent(3, torch.Generator()).shape == (3, 0)
    a, b = (model.generate(5, torch.Generator().manual_seed(1), batch_size=2) for _ in range(2))
    assert a.shape == (5, 1, 28, 28) and torch.equal(a, b)
    with pytest.raises(UsageError, match="--interpolate: pixels has no latent code to walk through"):
        latent_walk(model, 2, 3, torch.Generator())


def test_sampling_commands_on_flow_and_ddpm(invoke, mnist_root, tmp_path):
    """sample with --steps/--solver/--guidance, --by-class and latent walks, as a user runs them."""
    for name in ("cflow", "ddpm"):
        run = tmp_path / name
        assert invoke("train", name, "--data", "mnist", "--data-dir", mnist_root, "--epochs", "1", "--limit", "32",
                      "--width", "0.25", "--steps", "2", "--out", run, "-q").exit_code == 0
    ckpt = tmp_path / "cflow" / "last.safetensors"
    grid = invoke("sample", ckpt, "--grid", "10x2", "--by-class", "--steps", "2", "--guidance", "2",
                  "--out", tmp_path / "by.png", "--json")
    assert grid.exit_code == 0, grid.stderr
    assert json.loads(grid.stdout)["sampling"] == {"steps": 2, "solver": "euler", "guidance": 2.0}
    walk = invoke("sample", ckpt, "--interpolate", "--grid", "2x2", "--frames", "2", "--steps", "2", "--out",
                  tmp_path / "walk.gif", "--json")
    assert walk.exit_code == 0 and json.loads(walk.stdout)["frames"] == 8
    ddpm = tmp_path / "ddpm" / "last.safetensors"
    for solver in ("ddim", "ddpm"):
        out = tmp_path / f"{solver}.gif"
        assert invoke("sample", ddpm, "--interpolate", "--grid", "1x2", "--frames", "2", "--steps", "3", "--solver",
                      solver, "--out", out).exit_code == 0
    bad = invoke("sample", ddpm, "--guidance", "2")
    assert bad.exit_code == 2 and "--guidance: not a setting of ddpm's sampler" in bad.stderr
