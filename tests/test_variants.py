"""WGAN-GP, SNGAN, the class-conditional models, EMA and the time budget."""

import json

import imageio.v3 as iio
import pytest
import torch
from safetensors.torch import load_file

from gentool.checkpoint import load_checkpoint
from gentool.data import Geometry
from gentool.ema import EMA
from gentool.errors import ConfigError, UsageError
from gentool.train_options import cli_message
from gentool.models.cgan import CGAN
from gentool.models.sngan import SNGAN
from gentool.models.wgan_gp import WGANGP, gradient_penalty
from gentool.registry import get_entry
from gentool.summary import summarize
from gentool.api import TrainOptions, train  # the hooks gentool train runs (watch, figures)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

MNIST = Geometry(1, 28, 28, 10)
CIFAR = Geometry(3, 32, 32, 10)


def build(cls, geometry=MNIST, **kw):
    torch.manual_seed(0)
    return cls(cls.config_class.create(geometry, **kw))


class Quadratic(torch.nn.Module):
    """critic(x) = ½‖x‖² per sample, whose gradient at x is x itself."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(dim=1, keepdim=True)


def test_gradient_penalty_uses_each_samples_whole_gradient_norm():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    alpha = torch.rand(6, 1, 1, 1, generator=g)
    penalty = gradient_penalty(Quadratic(), real, fake, alpha)
    mixed = alpha * real + (1 - alpha) * fake
    expected = (mixed.flatten(1).norm(dim=1) - 1) ** 2  # one norm over all channels and pixels of a sample
    per_channel = ((mixed.flatten(2).norm(dim=2) - 1) ** 2).mean(dim=1)  # the bug: a norm per channel
    assert penalty.shape == (6,)
    assert torch.allclose(penalty, expected, rtol=1e-5)
    assert not torch.allclose(penalty, per_channel, rtol=1e-2)


@pytest.mark.parametrize("geometry", [MNIST, CIFAR])
def test_gradient_penalty_of_one_sample_ignores_the_others(geometry):
    model = build(WGANGP, geometry)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.critic.modules())
    g = torch.Generator().manual_seed(1)
    shape = (4, geometry.channels, geometry.height, geometry.width)
    real, fake, alpha = torch.rand(shape, generator=g), torch.rand(shape, generator=g), torch.rand(4, 1, 1, 1, generator=g)
    before = gradient_penalty(model.critic, real, fake, alpha)
    fake2 = fake.clone()
    fake2[3] = torch.rand(shape[1:], generator=g)
    after = gradient_penalty(model.critic, real, fake2, alpha)
    assert torch.equal(before[:3], after[:3]) and not torch.equal(before[3], after[3])


def test_gradient_penalty_stays_fp32_under_bf16_autocast():
    model = build(WGANGP)
    real, fake = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = gradient_penalty(model.critic, real, fake)
    assert penalty.dtype == torch.float32 and torch.isfinite(penalty).all()


def test_sngan_discriminator_layers_have_unit_spectral_norm_and_hinge_loss():
    model = build(SNGAN)
    x = torch.rand(8, 1, 28, 28)
    for _ in range(30):  # power iterations run in training-mode forwards
        model.discriminator(x)
    for module in model.discriminator.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
            assert abs(float(sigma) - 1) < 0.05
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-2.0], [0.5]])
    assert float(model.discriminator_loss(real, fake)) == pytest.approx(0.0 + 0.25 + 0.0 + 0.75)
    assert float(model.generator_loss(fake)) == pytest.approx(0.75)


def test_summary_states_the_variants_sizes():
    """SN adds no trainable weights: the SNGAN discriminator is the study's GAN discriminator; the WGAN-GP critic is
    the study's WGAN critic without its BatchNorm."""
    sn = summarize(build(SNGAN))["networks"]["discriminator"]
    assert sn["trainable_params"] == 69_825
    gp = summarize(build(WGANGP))["networks"]["critic"]
    assert gp["trainable_params"] == 70_081 - 2 * 2 * 64  # two BatchNorm layers of 64 channels
    assert summarize(build(CGAN))["networks"]["discriminator"]["layers"][0]["type"] == "ParametrizedConv2d"


@pytest.mark.parametrize("name", ["cgan", "cvae"])
def test_conditional_models_draw_the_class_asked_for(name):
    cls = get_entry(name).cls
    model = build(cls)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.generate(3, g(), torch.tensor([1, 1, 1]))
    b = model.generate(3, g(), torch.tensor([7, 7, 7]))
    assert not torch.allclose(a, b)
    assert torch.equal(model.spread_labels(12), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]))
    with pytest.raises(UsageError, match="class-conditional and needs labelled data"):
        build(cls, Geometry(1, 28, 28, 0))


def test_unconditional_model_refuses_labels():
    with pytest.raises(ConfigError, match="labels: gan is not class-conditional") as err:
        build(get_entry("gan").cls).generate(2, torch.Generator(), labels=torch.tensor([1, 2]))
    assert cli_message(err.value).startswith("--class: gan is not class-conditional")


def test_ema_update_is_a_warmed_up_moving_average():
    model = build(SNGAN)
    ema = EMA(model, 0.9)
    key = "generator.0.weight"
    start = ema.shadow[key].clone()
    with torch.no_grad():
        model.generator[0].weight.add_(1.0)
    ema.update(model)  # warm-up: d = min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow[key], d * start + (1 - d) * (start + 1), atol=1e-6)
    with ema.applied(model):
        assert torch.equal(model.generator[0].weight, ema.shadow[key])
    assert torch.equal(model.generator[0].weight, start + 1)


def opts(mnist_root, out, model="sngan", epochs=2, **kw):
    return TrainOptions(model=model, data="mnist", data_dir=str(mnist_root), epochs=epochs, limit=64, batch_size=16,
                        seed=3, out=str(out), checkpoint_every=0, sample_every=1, **kw)


def test_ema_is_saved_used_by_default_and_resumed_exactly(mnist_root, tmp_path, invoke):
    straight = train(opts(mnist_root, tmp_path / "a", ema=0.9))
    train(opts(mnist_root, tmp_path / "b", epochs=1, ema=0.9))
    train(TrainOptions(model="sngan", resume=str(tmp_path / "b"), epochs=2, data_dir=str(mnist_root)))
    a, b = load_file(str(tmp_path / "a/last.safetensors")), load_file(str(tmp_path / "b/last.safetensors"))
    assert any(k.startswith("ema.generator.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = straight["checkpoints"]["last"]
    assert load_checkpoint(ckpt).weights == "ema" and load_checkpoint(ckpt, weights="raw").weights == "raw"
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ema_images = load_checkpoint(ckpt).model.generate(4, g())
    raw_images = load_checkpoint(ckpt, weights="raw").model.generate(4, g())
    assert not torch.equal(ema_images, raw_images)
    result = invoke("sample", ckpt, "--grid", "2x2", "--out", str(tmp_path / "g.png"), "--json")
    assert json.loads(result.stdout)["weights"] == "ema"
    bad = invoke("train", "sngan", "--resume", str(tmp_path / "b"), "--epochs", "3", "--ema", "0.5",
                 "--data-dir", str(mnist_root))
    assert bad.exit_code == 2 and "--ema: got 0.5; expected the run's own decay 0.9" in bad.stderr


def test_weights_ema_needs_a_run_with_ema(mnist_root, tmp_path, invoke):
    run = train(opts(mnist_root, tmp_path / "r", epochs=1))
    result = invoke("sample", run["checkpoints"]["last"], "--weights", "ema")
    assert result.exit_code == 2 and "trained without --ema" in result.stderr
    result = invoke("train", "vae", "--data", "mnist-sample", "--ema", "1.5")
    assert result.exit_code == 2 and "--ema: got 1.5; expected 0 (off) or a number in (0, 1)" in result.stderr


def test_sample_by_class_and_class_errors(mnist_root, tmp_path, invoke):
    ckpt = train(opts(mnist_root, tmp_path / "c", model="cgan", epochs=1))["checkpoints"]["last"]
    grid = invoke("sample", ckpt, "--grid", "10x3", "--by-class", "--out", str(tmp_path / "by.png"), "--json")
    assert grid.exit_code == 0 and json.loads(grid.stdout)["n"] == 30
    assert json.loads(grid.stdout)["rows"] == [f"{k} - {w}" for k, w in enumerate(DIGIT_WORDS)]
    picture = iio.imread(tmp_path / "by.png")  # each row named in a margin at the grid's left
    margin = picture.shape[1] - (3 * 30 + 2)
    assert margin > 20 and all(picture[2 + r * 30:2 + r * 30 + 28, :margin].max() > 128 for r in range(10))
    one = invoke("sample", ckpt, "--class", "7", "--n", "12", "--out", str(tmp_path / "s7.npz"), "--json")
    assert json.loads(one.stdout)["class"] == {"index": 7, "name": "7 - seven"}
    for args, message in [(["--class", "10"], "--class: got '10'; expected a class index 0–9"),
                          (["--grid", "11x2", "--by-class"], "at most 10 rows with --by-class"),
                          (["--by-class", "--class", "3"], "--by-class: not allowed with --class")]:
        result = invoke("sample", ckpt, *args)
        assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_max_minutes_stops_cleanly_and_resume_matches_an_uninterrupted_run(mnist_root, tmp_path):
    straight = train(opts(mnist_root, tmp_path / "a", model="wgan-gp"))
    cut = train(opts(mnist_root, tmp_path / "b", model="wgan-gp", max_minutes=1e-9))
    assert cut["step"] == 1 and "time budget" in cut["stopped"] and "--resume" in cut["stopped"]
    resumed = train(TrainOptions(model="wgan-gp", resume=str(tmp_path / "b"), epochs=2, data_dir=str(mnist_root)))
    assert resumed["step"] == straight["step"] == 8
    a, b = load_file(str(tmp_path / "a/last.safetensors")), load_file(str(tmp_path / "b/last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gan_draws_with_sigmoid_on_mnist_and_cifar_by_default():
    from gentool.models.gan import GAN

    mnist, cifar = build(GAN), build(GAN, CIFAR)
    assert isinstance(mnist.generator[-1], torch.nn.Sigmoid) and mnist.pixel_range == (0.0, 1.0)
    assert isinstance(cifar.generator[-1], torch.nn.Sigmoid) and cifar.pixel_range == (0.0, 1.0)
    assert cifar.config.output == "sigmoid" and mnist.config.output == "sigmoid"  # stored resolved, not "auto"
    assert summarize(cifar)["trainable_params"] == summarize(build(GAN, CIFAR, output="tanh"))["trainable_params"]
    assert mnist.normalize(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [0.0, 1.0]
    z = torch.randn(3, 100)
    assert torch.equal(mnist.decode(z), mnist.generator(z))  # sigmoid pixels are already in [0, 1]
    tanh = build(GAN, output="tanh")
    assert isinstance(tanh.generator[-1], torch.nn.Tanh) and tanh.pixel_range == (-1.0, 1.0)
    assert torch.allclose(tanh.decode(z), (tanh.generator(z) + 1) / 2)
    assert summarize(tanh)["trainable_params"] == summarize(mnist)["trainable_params"] == 1_234_114
    with pytest.raises(UsageError, match="output: got 'relu'; expected auto, tanh or sigmoid"):
        build(GAN, output="relu")


def reload_as_written_before(path, model, geometry, edit):
    """Save `model` to `path`, rewrite the stored config with `edit` (as an older gentool wrote it), load it back."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from gentool.checkpoint import save_checkpoint

    save_checkpoint(path, model, model.build_optimizers(), {"epoch": 1, "step": 1}, {"geometry": geometry.to_dict()},
                    "t")
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    assert config["output"] == "tanh"
    edit(config)
    save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    return load_checkpoint(path).model


def test_older_gan_checkpoints_load_with_the_tanh_they_were_trained_with(tmp_path):
    from gentool.models.gan import GAN

    z = torch.randn(3, 100)
    # Written before the field existed (no "output" in its config).
    tanh = build(GAN, output="tanh")
    old = reload_as_written_before(tmp_path / "a.safetensors", tanh, MNIST, lambda c: c.pop("output"))
    assert old.config.output == "tanh" and torch.equal(old.decode(z), tanh.decode(z))
    # Written while "auto" was stored and meant tanh on CIFAR-10.
    tanh = build(GAN, CIFAR, output="tanh")
    old = reload_as_written_before(tmp_path / "b.safetensors", tanh, CIFAR, lambda c: c.update(output="auto"))
    assert old.config.output == "tanh" and torch.equal(old.decode(z), tanh.decode(z))


@pytest.mark.parametrize("geometry", [MNIST, CIFAR], ids=["mnist", "cifar10"])
def test_gan_generator_keeps_a_gradient_where_training_drives_its_output(geometry):
    """Issue 18: within its first epoch the study's GAN drives the generator's last pre-activations to about ±12
    (MNIST: black; CIFAR-10: white). A tanh there returns exactly ±1 in float32, its gradient is exactly zero and no
    step brings the samples back; the default output must still pass a gradient to the generator."""
    from gentool.models.gan import GAN

    def bias_gradient(model, bias):
        last = model.generator[-2]
        with torch.no_grad():
            last.bias.fill_(bias)
        loss = model.generator_loss(model.score(model.fake(8)))
        return torch.autograd.grad(loss, last.bias)[0]

    for bias in (-12.0, 12.0):
        assert (bias_gradient(build(GAN, geometry), bias) != 0).all(), bias
        assert (bias_gradient(build(GAN, geometry, output="tanh"), bias) == 0).all(), bias  # the failure it guards


def test_by_class_without_a_grid_draws_every_class(mnist_root, tmp_path, invoke):
    ckpt = train(opts(mnist_root, tmp_path / "c", model="cgan", epochs=1))["checkpoints"]["last"]
    result = invoke("sample", ckpt, "--by-class", "--out", str(tmp_path / "all.png"), "--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)["rows"]) == 10  # was the default 8 rows
    with pytest.warns(UserWarning, match="draws classes 0–4 of the model's 10"):
        few = invoke("sample", ckpt, "--by-class", "--grid", "5x3", "--out", str(tmp_path / "few.png"))
    assert few.exit_code == 0


@pytest.mark.parametrize("k, said", [(10, "--grid 10x4 (or no --grid) draws them all"),
                                     (80, "no --grid draws them all"),  # --grid takes at most 64 rows
                                     (500, "no grid holds them all (without --grid: the first 100)")])
def test_the_by_class_warning_says_a_way_to_see_every_class_that_exists(k, said):
    from gentool.sampling import _all_rows

    assert _all_rows(k, 4).startswith(said)


def test_a_run_that_reaches_its_epochs_before_its_budget_says_so(invoke, tmp_path):
    """A new user's `train cflow --data FOLDER --max-minutes 3` stopped after the default 10 epochs (30 steps)
    without a word of why it ended long before its budget (session 14's walk)."""
    result = invoke("train", "vae", "--data", "mnist-sample", "--limit", "32", "--epochs", "1", "--max-minutes", "5",
                    "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())  # (a long line may be wrapped)
    assert "done: --epochs 1 reached before --max-minutes 5 ran out; to train on in a budget, raise --epochs: " in said
    assert f"train --resume {tmp_path / 'r'} --epochs 10 --max-minutes 5" in said
