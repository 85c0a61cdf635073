"""The same checks over every registered model, built-ins and installed plugins alike, on both geometries."""

import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file

from gentool.checkpoint import load_checkpoint, save_checkpoint
from gentool.data import Geometry
from gentool.device import Amp, _bf16_supported, prepare
from gentool.errors import UsageError
from gentool.models.base import GenerativeModel
from gentool.models.study import StudyConfig
from gentool.registry import list_models
from gentool.summary import summarize
from gentool.api import TrainOptions, train  # the hooks gentool train runs (watch, figures)

GEOMETRIES = {"mnist": Geometry(1, 28, 28, 10), "cifar10": Geometry(3, 32, 32, 10)}
MODELS = [e.name for e in list_models()]
# Families whose own code (config, defaults, training times) does not depend on the geometry and whose network,
# training step and sampler are another family's that runs on both: one geometry covers what is theirs. reflow's are
# flow's.
ONE_GEOMETRY = {"reflow"}
CASES = [(name, geometry) for name in MODELS for geometry in sorted(GEOMETRIES)
         if name not in ONE_GEOMETRY or geometry == "mnist"]


def build(name, geometry="mnist", **overrides):
    cls = next(e.cls for e in list_models() if e.name == name)
    if "latent_dim" not in {f.name for f in dataclasses.fields(cls.config_class)}:
        overrides.pop("latent_dim", None)  # a family without a latent size
    torch.manual_seed(0)
    return cls(cls.config_class.create(GEOMETRIES[geometry], **overrides))


def seeded(seed=3):
    return torch.Generator().manual_seed(seed)


def cheap(model_class) -> dict:
    """Sampler settings that keep the tests fast: every integer setting (a step count) at most 2."""
    return {o.name: max(int(o.low), min(o.default, 2)) for o in model_class.sample_options
            if isinstance(o.default, int)}


@torch.no_grad()
def perturbed(model):
    """`model` with seeded noise added to every parameter: zero-initialised layers (a U-Net's residual branches
    and output) would otherwise make its output independent of its inputs."""
    g = seeded(9)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def real_batch(model, n=8):
    g = torch.Generator().manual_seed(1)
    c = model.config
    return model.normalize(torch.randint(0, 256, (n, c.channels, c.image_height, c.image_width), generator=g,
                                         dtype=torch.uint8)), torch.arange(n) % 10


@pytest.mark.parametrize("name, geometry", CASES)
class TestContract:
    def test_is_a_generative_model_with_a_config(self, name, geometry):
        model = build(name, geometry)
        assert isinstance(model, GenerativeModel) and model.name == name
        assert model.config.preset == geometry if isinstance(model.config, StudyConfig) else model.config.preset
        assert type(model.config).from_dict(model.config.to_dict()) == model.config
        assert model.sample_latent(2, seeded()).shape == (2, *model.latent_shape)

    def test_train_steps_return_finite_scalars_and_change_weights(self, name, geometry):
        model = build(name, geometry, width=0.25)
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
        """Every sampler the family declares repeats its images from the generator's seed alone: the global RNG
        (moved on between the two draws) plays no part."""
        model = build(name, geometry, width=0.25)
        c = GEOMETRIES[geometry]
        choices = [{}] + [{o.name: v} for o in model.sample_options for v in o.choices if v != o.default]
        for settings in ({**cheap(model), **c} for c in choices):
            torch.manual_seed(1)
            a = model.generate(5, seeded(), settings=settings, batch_size=3)
            torch.manual_seed(2)
            b = model.generate(5, seeded(), settings=settings, batch_size=3)
            assert a.shape == (5, c.channels, c.height, c.width)
            assert torch.equal(a, b) and 0 <= a.min() and a.max() <= 1, settings

    def test_sampler_settings_are_declared_and_checked(self, name, geometry):
        model = build(name, geometry, width=0.25)
        settings = model.sample_settings()
        assert settings == {o.name: o.default for o in model.sample_options}
        for option in model.sample_options:
            assert option.check(option.default, name) == option.default and option.help
        with pytest.raises(UsageError, match="^no-such-setting: not a setting of"):  # the model names its setting
            model.sample_settings({"no-such-setting": 1})
        assert "guidance" not in settings or model.conditional  # guidance needs classes

    def test_given_latents_and_labels_decide_the_samples(self, name, geometry):
        """What a latent walk relies on: with the latents (and labels) given, the same generator seed gives the same
        images and other latents give other images."""
        model = build(name, geometry, width=0.25)
        if not model.has_latent:
            pytest.skip(f"{name} has no latent code")
        z = model.sample_latent(4, seeded(5))
        labels = model.spread_labels(4)
        s = cheap(model)
        a = model.generate(4, seeded(), labels, latents=z, settings=s)
        assert torch.equal(a, model.generate(4, seeded(), labels, latents=z, settings=s))
        other = model.sample_latent(4, seeded(6))
        assert not torch.equal(a, model.generate(4, seeded(), labels, latents=other, settings=s))

    def test_declared_capabilities_hold(self, name, geometry):
        model = perturbed(build(name, geometry, width=0.25))
        x, y = real_batch(model)
        if model.likelihood_terms:
            out = model.losses(x, y)
            assert {"reconstruction", "kl"} <= out.keys() and all(v.dim() == 0 for v in out.values())
        assert set(model.sampling_networks) <= set(model.networks())
        assert set(model.double_backward_networks) <= set(model.networks())
        assert model.default_ema is None or 0 < model.default_ema < 1
        if model.conditional:
            z, s = model.sample_latent(2, seeded(4)), cheap(model)
            a = model.generate(2, seeded(), torch.tensor([1, 1]), latents=z, settings=s)
            b = model.generate(2, seeded(), torch.tensor([7, 7]), latents=z, settings=s)
            assert not torch.equal(a, b)

    @pytest.mark.skipif(not _bf16_supported(torch.device("cpu")), reason="this CPU has no fast bf16 (AVX512-BF16/AMX)")
    def test_bf16_steps_and_samples_are_finite(self, name, geometry):
        model = build(name, geometry, width=0.25)
        model.amp = Amp(torch.device("cpu"), torch.bfloat16)
        optimizers = model.build_optimizers()
        for step in range(2):
            with model.amp.autocast():
                out = model.train_step(*real_batch(model), optimizers, step)
            assert all(math.isfinite(float(v)) for v in out.values())
        images = model.generate(3, seeded(), settings=cheap(model))
        assert images.dtype == torch.float32 and torch.isfinite(images).all()

    def test_runtime_preparation_changes_how_not_what_it_computes(self, name, geometry):
        """Channels-last and gentool.kernels (what `prepare` applies on a CPU) leave samples and losses as they were."""
        plain, fast = perturbed(build(name, geometry)), perturbed(build(name, geometry))
        prepare(fast, torch.device("cpu"), "fp32")  # the layout and kernels under test, not auto's bf16 on AMX/Zen 4
        a = plain.generate(4, seeded(), settings=cheap(plain))
        b = fast.generate(4, seeded(), settings=cheap(plain))
        # Rounding differences only; an iterated sampler may amplify one into a pixel or two (DDIM divides by
        # √ᾱ ≈ 0.006 at its first step), which the mean keeps from hiding a wrong result.
        diff = (b - a).abs()
        assert diff.mean() < 1e-6 and diff.max() < 1e-2, (float(diff.mean()), float(diff.max()))
        x, y = real_batch(plain)
        outs = []
        for model in (plain, fast):
            torch.manual_seed(5)
            outs.append(model.train_step(x, y, model.build_optimizers(), 0))
        assert outs[0].keys() == outs[1].keys()
        for k in outs[0]:
            torch.testing.assert_close(outs[1][k], outs[0][k], rtol=1e-3, atol=1e-4, msg=k)

    def test_checkpoint_round_trip_rebuilds_an_identical_model(self, name, geometry, tmp_path):
        model = build(name, geometry, latent_dim=7, width=0.25)
        optimizers = model.build_optimizers()
        model.train_step(*real_batch(model), optimizers, 0)
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, model, optimizers, {"epoch": 1, "step": 1}, {"geometry": GEOMETRIES[geometry].to_dict()}, "test")
        ckpt = load_checkpoint(path)
        assert ckpt.model.config == model.config and ckpt.state["step"] == 1
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        assert torch.equal(ckpt.model.generate(4, g(), settings=cheap(model)), model.generate(4, g(), settings=cheap(model)))
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


@pytest.mark.parametrize("name", MODELS)
def test_a_run_with_the_familys_defaults_stops_and_resumes_bit_exactly(name, mnist_root, tmp_path):
    """What every family gets from the loop: its default EMA, epoch grids and figures, checkpoints, and a run stopped
    after its first step (--max-minutes) that resumes to the same weights as a straight one — in bf16 wherever this
    CPU has it (the precision `auto` picks on AMX and Zen 4 hosts), whatever auto would pick here; fp32 elsewhere
    (other tests resume in fp32 on every host)."""
    cls = next(e.cls for e in list_models() if e.name == name)
    precision = "bf16" if _bf16_supported(torch.device("cpu")) else "fp32"

    def opts(out, **kw):
        return TrainOptions(model=name, data="mnist", data_dir=str(mnist_root), epochs=1, limit=32, batch_size=16,
                            width=0.25, seed=3, out=str(tmp_path / out), checkpoint_every=0, precision=precision,
                            **cheap(cls), **kw)

    straight = train(opts("a"))
    cut = train(opts("b", max_minutes=1e-9))
    assert cut["step"] == 1 and "time budget" in cut["stopped"]
    assert (tmp_path / "b" / "samples" / "latest.png").is_file()  # a budget inside epoch 1 leaves a grid to look at
    resumed = train(TrainOptions(model=name, resume=str(tmp_path / "b"), epochs=1, data_dir=str(mnist_root)))
    assert resumed["step"] == straight["step"] == 2
    assert resumed["precision"]["used"] == straight["precision"]["used"] == precision
    a, b = load_file(str(tmp_path / "a/last.safetensors")), load_file(str(tmp_path / "b/last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("ema.") for k in a) == bool(cls.default_ema)
    for run in ("a", "b"):
        assert {"loss.png", "progress.gif"} <= {p.name for p in (tmp_path / run).iterdir()}
        assert (tmp_path / run / "samples" / "epoch_0001.png").is_file()


def test_every_model_builds_on_the_meta_device_without_computing_values():
    """Checkpoint loading, summary and the size checks build each model on the meta device. Its initialisers ran
    there as Python decompositions, the first of which imports torch._dynamo: 1.3-1.7 s added to every `sample` of
    cflow, cddpm, cgan, sngan or a distilled student. Built under gentool.meta.shapes_only, no model imports it."""
    import subprocess
    import sys

    script = """
import sys, dataclasses
from gentool.data import Geometry
from gentool.meta import shapes_only
from gentool.registry import list_models
for entry in list_models():
    fields = {f.name for f in dataclasses.fields(entry.cls.config_class)}
    extra = {"adversarial": 0.5} if "adversarial" in fields else {}  # reflow's critic: spectral normalization
    with shapes_only():
        model = entry.cls(entry.cls.config_class.create(Geometry(1, 28, 28, 10), **extra))
    assert all(p.is_meta for p in model.parameters()), entry.name
    assert "torch._dynamo" not in sys.modules, f"building {entry.name} imported torch._dynamo"
print(len(list_models()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and int(done.stdout) == len(MODELS), done.stderr[-2000:]
