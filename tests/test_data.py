"""Data loading through torchvision's readers and image folders."""

import shutil

import pytest
import torch

from gentool.data import batches, load_dataset, load_mnist_sample
from gentool.errors import GentoolError, UsageError


def test_mnist_idx_files_load_as_one_uint8_tensor(mnist_root):
    data = load_dataset("mnist", mnist_root)
    assert data.images.dtype == torch.uint8 and data.images.shape == (256, 1, 28, 28)
    assert data.geometry.shape == (1, 28, 28) and data.geometry.num_classes == 10
    sample = load_mnist_sample(True)
    assert torch.equal(data.images, sample.images[:256]) and torch.equal(data.labels, sample.labels[:256])
    assert len(load_dataset("mnist", mnist_root, train=False)) == 64


def test_a_data_dir_that_does_not_exist_is_refused_and_never_created(tmp_path):
    for kind in ("mnist", "cifar10"):
        with pytest.raises(UsageError) as err:
            load_dataset(kind, tmp_path / "nowhere")
        message = str(err.value)
        assert message.startswith("--data-dir: ") and "nowhere does not exist" in message and "\n" not in message
        assert not (tmp_path / "nowhere").exists()


def test_mnist_files_flat_in_the_data_dir(tmp_path, mnist_root):
    flat = tmp_path / "flat"
    shutil.copytree(mnist_root / "MNIST" / "raw", flat)
    data = load_dataset("mnist", flat, train=False)
    assert len(data) == 64 and torch.equal(data.images, load_dataset("mnist", mnist_root, train=False).images)


@pytest.fixture()
def offline(monkeypatch):
    """Downloads go to a local port nothing listens on: the real download code fails the way it does offline."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/mnist/"])
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")


def test_a_failed_download_names_the_folders_the_files_and_the_cause(tmp_path, offline, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(GentoolError) as err:
        load_dataset("mnist", data_dir)
    message = str(err.value)
    assert message.startswith(f"--data-dir: MNIST not found in {data_dir} (searched {data_dir}/MNIST/raw and "
                              f"{data_dir} for train-images-idx3-ubyte, ")
    assert "found train-images-idx3-ubyte.gz: gunzip them" in message and "refused" in message.lower()
    assert "pass --data-dir" not in message and "\n" not in message
    assert sorted(p.name for p in data_dir.iterdir()) == ["train-images-idx3-ubyte.gz"]  # nothing left behind
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GENTOOL_DATA", raising=False)
    with pytest.raises(GentoolError, match=r"in the default data folder .*pass --data-dir DIR or set GENTOOL_DATA"):
        load_dataset("cifar10")


def test_image_folder_labels_interleave_classes(cifar_folder):
    data = load_dataset(str(cifar_folder), limit=20)
    assert data.images.shape == (20, 3, 32, 32)
    assert data.labels.tolist() == list(range(10)) * 2
    assert data.class_names == [f"class{i}" for i in range(10)]


def test_image_size_resizes(cifar_folder):
    data = load_dataset(str(cifar_folder), image_size=28, limit=5)
    assert data.images.shape == (5, 3, 28, 28) and data.images.dtype == torch.uint8


def test_unsupported_geometry_is_a_usage_error(invoke, cifar_folder, tmp_path):
    result = invoke("train", "vae", "--data", cifar_folder, "--image-size", "20", "--epochs", "1", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "3x20x20" in result.stderr and "1x28x28" in result.stderr


def test_mixed_sizes_need_image_size(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    iio.imwrite(tmp_path / "a.png", np.zeros((28, 28), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((30, 30), np.uint8))
    with pytest.raises(UsageError, match="--image-size"):
        load_dataset(str(tmp_path))
    assert load_dataset(str(tmp_path), image_size=28).images.shape == (2, 1, 28, 28)


def test_batches_are_a_seeded_permutation():
    a = batches(10, 4, seed=1, epoch=1, device=torch.device("cpu"))
    b = batches(10, 4, seed=1, epoch=1, device=torch.device("cpu"))
    c = batches(10, 4, seed=1, epoch=2, device=torch.device("cpu"))
    assert [t.tolist() for t in a] == [t.tolist() for t in b] != [t.tolist() for t in c]
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    # A tail batch of one would break BatchNorm: it is dropped.
    assert [len(t) for t in batches(9, 4, 0, 1, torch.device("cpu"))] == [4, 4]
