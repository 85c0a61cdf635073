"""Bounded memory for large requests: samples are drawn and written chunk by chunk, and the same seed gives the same
images however they are chunked (memory itself is measured in benchmarks/memory.py, not asserted here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gentool import sampling
from gentool.data import Geometry
from gentool.images import NpzWriter, to_uint8
from gentool.registry import get_entry, list_models
from gentool.sampling import chunk_sizes, sample_chunks


def small(name: str, geometry=Geometry(1, 28, 28, 10)):
    cls = get_entry(name).cls
    torch.manual_seed(0)
    return cls(cls.config_class.create(geometry, None, 0.25)).eval()


@pytest.mark.parametrize("n, chunk", [(1, 16), (15, 16), (16, 16), (17, 16), (40, 16), (100, 32), (500, 48)])
def test_chunk_sizes_cover_n_with_no_short_tail(n, chunk):
    sizes = chunk_sizes(n, chunk)
    assert sum(sizes) == n and all(s % 16 == 0 for s in sizes[:-1])
    assert sizes[-1] >= min(n, 16)


@pytest.mark.parametrize("model", [e.name for e in list_models()])
def test_chunked_samples_are_the_samples_of_one_draw(model):
    # The same latent codes and labels in both; the pixels agree to float rounding, not bit for bit, since a
    # matmul's rounding may depend on how many rows it is given (the CPU kernel is picked by shape).
    def same(a, b):
        return torch.allclose(a, b, rtol=0, atol=1e-6)

    net = small(model)
    # A sampler that draws noise of its own (ddpm's ancestral one, its default) draws it chunk by chunk, so its
    # images are one draw's only up to one chunk (below); the chunk-independence is that of the codes and labels.
    ancestral = any(o.name == "solver" and o.default == "ddpm" for o in net.sample_options)
    # two steps of an iterative sampler: how the draw is chunked is under test, not how many steps each chunk takes
    steps = {"steps": 2} if any(o.name == "steps" for o in net.sample_options) else None
    settings = {**(steps or {}), "solver": "ddim"} if ancestral else steps
    for n, chunk in ((37, 16), (130, 32), (5, 16)):
        one = net.generate(n, torch.Generator().manual_seed(4), settings=settings)
        chunked = torch.cat(list(sample_chunks(net, n, torch.Generator().manual_seed(4), chunk=chunk,
                                               settings=settings)))
        assert same(one, chunked), (model, n, chunk)
    if ancestral:
        labels = torch.arange(12) % 10 if net.conditional else None  # (drawn labels come before the noise)
        one = net.generate(12, torch.Generator().manual_seed(4), labels=labels, settings=steps)
        assert same(one, torch.cat(list(sample_chunks(net, 12, torch.Generator().manual_seed(4), labels, chunk=16,
                                                      settings=steps))))
        chunks = list(sample_chunks(net, 37, torch.Generator().manual_seed(4), chunk=16, settings=steps))
        again = list(sample_chunks(net, 37, torch.Generator().manual_seed(4), chunk=16, settings=steps))
        assert all(torch.equal(a, b) for a, b in zip(chunks, again))  # the seed and chunk size fix the images
    if net.conditional:
        labels = torch.arange(70) % 10
        one = net.generate(70, torch.Generator().manual_seed(5), labels=labels, settings=settings)
        chunked = torch.cat(list(sample_chunks(net, 70, torch.Generator().manual_seed(5), labels, chunk=16,
                                               settings=settings)))
        assert same(one, chunked)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from gentool.train import TrainOptions, train

    run = tmp_path_factory.mktemp("memory") / "run"
    train(TrainOptions(model="cvae", data="mnist-sample", limit=64, epochs=1, width=0.25, out=str(run),
                       sample_every=0))
    return run / "last.safetensors"


def test_sample_streams_npz_and_pngs_with_the_images_of_one_draw(ckpt, tmp_path, invoke, monkeypatch):
    """The expected images are drawn in fp32 (a loaded model's own precision): the commands pin fp32 too, since
    `--precision auto` picks bf16 on AMX and Zen 4 hosts."""
    from gentool.checkpoint import load_checkpoint

    monkeypatch.setattr(sampling, "CHUNK", 32)
    expected = to_uint8(load_checkpoint(ckpt).model.generate(101, torch.Generator().manual_seed(9)))
    assert invoke("sample", ckpt, "--n", "101", "--seed", "9", "--precision", "fp32",
                  "--out", tmp_path / "s.npz").exit_code == 0
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert z.files == ["images"] and np.array_equal(z["images"], expected)
    assert invoke("sample", ckpt, "--n", "101", "--seed", "9", "--precision", "fp32",
                  "--out", f"{tmp_path / 'pngs'}/").exit_code == 0
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(101)]
    assert np.array_equal(np.stack([np.asarray(Image.open(p)) for p in pngs]), expected[..., 0])
    labels = torch.full((40,), 3)
    sevens = to_uint8(load_checkpoint(ckpt).model.generate(40, torch.Generator().manual_seed(1), labels=labels))
    assert invoke("sample", ckpt, "--n", "40", "--seed", "1", "--class", "3", "--precision", "fp32",
                  "--out", tmp_path / "c.npz").exit_code == 0
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        assert np.array_equal(z["images"], sevens)


def test_an_unfinished_npz_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "s.npz"
    path.write_bytes(b"previous")
    rows = np.zeros((10, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="6 of 10 rows"):
        with NpzWriter(path, rows.shape) as npz:
            npz.write(rows[:6])
    with pytest.raises(KeyboardInterrupt):
        with NpzWriter(path, rows.shape) as npz:
            npz.write(rows[:3])
            raise KeyboardInterrupt
    with pytest.raises(ValueError, match="do not continue"):
        with NpzWriter(path, rows.shape) as npz:
            npz.write(np.zeros((3, 5, 4, 1), np.uint8))
    assert path.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [path]


def test_a_walk_gif_too_large_to_hold_is_refused_before_drawing(ckpt, tmp_path, invoke):
    result = invoke("sample", ckpt, "--interpolate", "--grid", "64x64", "--frames", "500", "--out", tmp_path / "w.gif")
    assert result.exit_code == 2 and "--frames: got 500" in result.stderr and "GiB" in result.stderr
    assert not (tmp_path / "w.gif").exists()
    assert invoke("sample", ckpt, "--interpolate", "--grid", "2x3", "--frames", "3", "--out", tmp_path / "w.gif").exit_code == 0
    assert Image.open(tmp_path / "w.gif").n_frames == 12
