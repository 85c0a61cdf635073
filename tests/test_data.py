"""Data loading through torchvision's readers and image folders."""

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


def test_missing_data_names_the_folder_and_files(tmp_path):
    with pytest.raises(GentoolError) as err:
        load_dataset("mnist", tmp_path / "nowhere")
    message = str(err.value)
    assert "nowhere" in message and "train-images-idx3-ubyte" in message and "\n" not in message


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
