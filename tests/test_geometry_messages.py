"""A geometry mismatch between a checkpoint or image files and a data set names both sides as they are: a grey
MNIST model evaluated against a folder of colour 32×32 images said the folder's were 3×28×28 (the size it would
have been decoded to for the model); a resumed run's data gave its shape as a Python tuple and the checkpoint's not
at all."""

from __future__ import annotations

from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest

from gentool.datatypes import Geometry
from gentool.errors import UsageError
from gentool.session import check_resumed_data


def write_pngs(folder, shape, n=12):
    """n random PNGs of H×W×C `shape` (C = 1 written grey) in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        iio.imwrite(folder / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8).squeeze())
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny grey 28×28 VAE (mnist-sample) and a tiny colour 32×32 one (a folder of colour PNGs)."""
    from typer.testing import CliRunner

    from gentool.cli.app import app

    root = tmp_path_factory.mktemp("models")
    colour = write_pngs(root / "colour-data" / "a", (32, 32, 3), 16).parent
    write_pngs(colour / "b", (32, 32, 3), 16)
    made = {}
    for name, data in (("grey", "mnist-sample"), ("colour", colour)):
        out = root / name
        result = CliRunner().invoke(app, ["train", "vae", "--data", str(data), "--epochs", "1", "--limit", "32",
                                          "--batch-size", "16", "--out", str(out), "-q", "--threads", "1"])
        assert result.exit_code == 0, result.output
        made[name] = out / "last.safetensors"
    return made


def one_error(entry_point, cwd, *args) -> str:
    done = entry_point("evaluate", *args, "--n", "12", cwd=cwd)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


def test_a_grey_model_against_colour_folders(entry_point, models, tmp_path):
    rgb32 = write_pngs(tmp_path / "rgb32", (32, 32, 3))
    rgb28 = write_pngs(tmp_path / "rgb28", (28, 28, 3))
    message = one_error(entry_point, tmp_path, models["grey"], "--data", rgb32)
    assert "draws grey 28×28 (1×28×28) images" in message and "holds colour 32×32 (3×32×32) ones" in message
    assert "the channels (1 against 3) differ" in message and "trained on (mnist-sample)" in message
    message = one_error(entry_point, tmp_path, models["grey"], "--data", rgb28)
    assert "holds colour 28×28 (3×28×28) ones" in message and "size" not in message


def test_colour_images_against_grey_data_and_the_reverse(entry_point, models, tmp_path):
    rgb = write_pngs(tmp_path / "rgb", (28, 28, 3))
    message = one_error(entry_point, tmp_path, rgb, "--data", "mnist-sample")
    assert "rgb holds colour 28×28 (3×28×28) images but --data mnist-sample holds grey 28×28 (1×28×28)" in message
    message = one_error(entry_point, tmp_path, models["colour"], "--data", "mnist-sample")
    assert "draws colour 32×32 (3×32×32) images but --data mnist-sample holds grey 28×28 (1×28×28) ones" in message
    assert "the channels (3 against 1) and the size (32×32 against 28×28) differ" in message


def test_resumed_data_names_both_geometries_and_the_classes():
    ckpt = SimpleNamespace(data={"geometry": {"channels": 1, "height": 28, "width": 28}, "source": "mnist"},
                           model=SimpleNamespace(conditional=True, config=SimpleNamespace(num_classes=10)))
    with pytest.raises(UsageError) as refused:
        check_resumed_data("run/last.safetensors", ckpt, SimpleNamespace(geometry=Geometry(3, 32, 32, 10)), "pics")
    assert str(refused.value) == (
        "--resume: run/last.safetensors was trained on grey 28×28 (1×28×28) images but --data pics holds colour "
        "32×32 (3×32×32) ones: the channels (1 against 3) and the size (28×28 against 32×32) differ; resume it on the "
        "data it was trained on (mnist)")
    with pytest.raises(UsageError, match="was trained on 10 classes but --data pics has 3;"):
        check_resumed_data("run/last.safetensors", ckpt, SimpleNamespace(geometry=Geometry(1, 28, 28, 3)), "pics")
    check_resumed_data("run/last.safetensors", ckpt, SimpleNamespace(geometry=Geometry(1, 28, 28, 10)), "pics")
