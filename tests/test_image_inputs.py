"""Image inputs to evaluate (and image-folder data): decompression bombs refused from the header, every PIL mode
scaled correctly or refused, `.npz` files read lazily with bounded claims, and messages naming the real cause."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gentool.data import load_image_folder
from gentool.errors import GentoolError, UsageError
from gentool.metrics.sources import open_source
from gentool.progress import PlainReporter

DIGITS = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)


def png(path: Path, width: int, height: int, depth: int = 8, colour: int = 0, pixels: bytes | None = None) -> Path:
    """A PNG written chunk by chunk: a header may claim any size, with as little (or as much) data as we like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    head = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = zlib.compress(pixels if pixels is not None else b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def sixteen_bit(values: np.ndarray, colour: bool = False) -> bytes:
    rows = values.astype(">u2")
    return b"".join(b"\x00" + row.tobytes() for row in rows.reshape(rows.shape[0], -1))


def folder_of(tmp_path: Path, images, name="imgs") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, img in enumerate(images):
        img.save(folder / f"{i:03d}.png") if isinstance(img, Image.Image) else Path(img).rename(folder / f"{i:03d}.png")
    return folder


def pixels(source) -> np.ndarray:
    return np.concatenate([c.numpy() for c in source.chunks(1000, seed=0)])


# --- decompression bombs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, height", [(20000, 20000), (9000, 9000), (100000, 1000)])
def test_huge_images_are_refused_from_their_header(tmp_path, width, height):
    bomb = png(tmp_path / "bomb.png", width, height)
    assert bomb.stat().st_size < 1000
    folder = folder_of(tmp_path, [Image.fromarray(DIGITS[0])])
    bomb.rename(folder / "999.png")
    source = open_source(str(folder))
    with pytest.raises(GentoolError, match=f"999.png is {width}x{height} pixels(, but 000.png is 28x28|; at most)"):
        pixels(source)
    first = tmp_path / "first"
    first.mkdir()
    png(first / "a.png", width, height)
    with pytest.raises(GentoolError, match="SOURCE: image .*a.png is .*(pixels|too large)"):
        open_source(str(first))
    with pytest.raises(GentoolError, match="--data: image .*a.png is .*(pixels|too large)"):
        load_image_folder(first)


# --- every PIL mode -----------------------------------------------------------------------------------------------

def grey_as(mode: str, digit: np.ndarray):
    """The digit saved in another mode, expected to read back as the same 8-bit grey values."""
    img = Image.fromarray(digit)
    if mode == "P":
        return img.convert("P")  # a grey palette
    if mode == "LA":
        return Image.merge("LA", (img, Image.new("L", img.size, 255)))
    return img


@pytest.mark.parametrize("mode", ["L", "LA", "P"])
def test_grey_modes_read_as_the_same_values(tmp_path, mode):
    folder = folder_of(tmp_path, [grey_as(mode, d) for d in DIGITS])
    source = open_source(str(folder))
    assert source.shape == (1, 28, 28)
    assert np.array_equal(pixels(source)[:, 0], DIGITS)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    folder = tmp_path / "g16"
    folder.mkdir()
    for i, d in enumerate(DIGITS):  # v·257 is the 16-bit value of 8-bit v
        png(folder / f"{i:03d}.png", 28, 28, 16, 0, sixteen_bit(d.astype(np.uint32) * 257))
    assert Image.open(folder / "000.png").mode.startswith("I")
    assert np.array_equal(pixels(open_source(str(folder)))[:, 0], DIGITS)
    assert np.array_equal(load_image_folder(folder).images[:, 0].numpy(), DIGITS)
    # values between 8-bit levels round to the nearest one
    png(folder / "000.png", 2, 1, 16, 0, sixteen_bit(np.array([[128, 65535 - 128]])))
    img = Image.open(folder / "000.png")
    from gentool.images import image_pixels

    assert image_pixels(img).ravel().tolist() == [0, 255]


def test_colour_modes(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    as_rgba = [Image.fromarray(np.dstack([x, np.full((32, 32), 255, np.uint8)])) for x in rgb]
    assert np.array_equal(pixels(open_source(str(folder_of(tmp_path, as_rgba, "rgba")))).transpose(0, 2, 3, 1), rgb)
    sixteen = tmp_path / "rgb16"
    sixteen.mkdir()
    for i, x in enumerate(rgb):
        png(sixteen / f"{i}.png", 32, 32, 16, 2, sixteen_bit(x.astype(np.uint32) * 257))
    assert np.array_equal(pixels(open_source(str(sixteen))).transpose(0, 2, 3, 1), rgb)
    coloured_palette = [Image.fromarray(x).convert("P", palette=Image.Palette.ADAPTIVE) for x in rgb]
    assert open_source(str(folder_of(tmp_path, coloured_palette, "pal"))).shape == (3, 32, 32)
    cmyk = tmp_path / "cmyk"
    cmyk.mkdir()
    for i, x in enumerate(rgb):
        Image.fromarray(x).convert("CMYK").save(cmyk / f"{i}.jpg")
    assert pixels(open_source(str(cmyk))).shape == (4, 3, 32, 32)


@pytest.mark.parametrize("first, image, needle", [
    (Image.fromarray(DIGITS[0]), Image.merge("LA", (Image.new("L", (28, 28), 9), Image.new("L", (28, 28), 0))),
     "has transparent pixels"),
    (Image.new("RGB", (28, 28)), Image.new("RGBA", (28, 28), (1, 2, 3, 128)), "has transparent pixels"),
    (Image.new("RGB", (28, 28)), Image.new("P", (28, 28)), "is grey, unlike 000.png"),
])
def test_unreadable_modes_are_refused(tmp_path, first, image, needle):
    folder = folder_of(tmp_path, [first, image])
    with pytest.raises(GentoolError, match=f"SOURCE: (image )?.*001.png {needle}"):
        pixels(open_source(str(folder)))
    if "transparent" in needle:  # training data: the image is skipped, and the user told why
        told = io.StringIO()
        assert len(load_image_folder(folder, reporter=PlainReporter(told, every=0))) == 1
        assert f"skipped 1 file (transparent): 001.png ({needle}" in told.getvalue()


def test_floating_point_pixels_are_refused():
    from gentool.images import ImageError, image_pixels

    with pytest.raises(ImageError, match="floating-point"):
        image_pixels(Image.new("F", (4, 4), 0.5))


# --- .npz files ---------------------------------------------------------------------------------------------------

def npz_claiming(path: Path, shape, data: bytes | None = None, compress=zipfile.ZIP_DEFLATED) -> Path:
    """An .npz whose images.npy header claims `shape`, followed by `data` (zeros of the claimed size by default,
    streamed into the archive so the test itself never holds them)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    with zipfile.ZipFile(path, "w", compress, allowZip64=True) as zf, zf.open("images.npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        if data is not None:
            f.write(data)
        else:
            left, block = int(np.prod(shape)), bytes(1 << 24)
            while left:
                f.write(block[:min(left, len(block))])
                left -= min(left, len(block))
    return path


@pytest.mark.parametrize("claimed, scored", [(400_000, 100), (400_000, 400_000 - 1), (50_000, 10)])
def test_a_small_npz_claiming_many_images_is_read_within_bounded_memory(tmp_path, claimed, scored):
    bomb = npz_claiming(tmp_path / "bomb.npz", (claimed, 28, 28, 1))
    assert bomb.stat().st_size < claimed * 784 / 500  # deflate: a few hundred KB for 300 MB of images
    source = open_source(str(bomb))
    assert source.available == claimed
    tracemalloc.start()
    try:
        for _ in source.chunks(scored, seed=0):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"{peak / 2**20:.0f} MiB held to score {scored} of {claimed} images"


def test_stored_and_compressed_npz_read_alike(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "plain.npz", images=images)
    np.savez_compressed(tmp_path / "small.npz", images=images)
    pick = np.sort(np.random.default_rng(5).choice(300, 40, replace=False))
    for name in ("plain.npz", "small.npz"):
        got = np.concatenate([c.numpy() for c in open_source(str(tmp_path / name)).chunks(40, seed=5)])
        assert np.array_equal(got.transpose(0, 2, 3, 1), images[pick])


@pytest.mark.parametrize("shape, data, needle", [
    ((10**12, 28, 28, 1), b"", "claims shape"),
    ((10, 28, 28, 1), bytes(100), "damaged"),
    ((10, 5000, 28, 1), bytes(10), "claims shape"),
    ((10, 28, 28, 2), bytes(10 * 28 * 28 * 2), "shape"),
])
def test_npz_claims_are_bounded(tmp_path, shape, data, needle):
    bad = npz_claiming(tmp_path / "bad.npz", shape, data)
    with pytest.raises(UsageError, match=needle):
        open_source(str(bad))


def test_a_truncated_npz_is_one_line(tmp_path):
    full = npz_claiming(tmp_path / "full.npz", (200, 28, 28, 1), np.arange(200 * 784, dtype=np.uint8).tobytes(),
                        zipfile.ZIP_STORED)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size - 2000])
    with pytest.raises(GentoolError, match="SOURCE: .*cut.npz"):
        list(open_source(str(cut)).chunks(200, seed=0))


@pytest.mark.parametrize("content, needle", [
    (b"hello, these are my notes\n", "a text file"),
    (pickle.dumps({"images": [1, 2]}), "pickled Python data"),
    (b"", "empty"),
    (b"\x93NUMPY\x01\x00" + b" " * 100, "a single .npy array"),
    (bytes(range(256)) * 4, "not an .npz \\(zip\\) archive"),
])
def test_files_that_are_not_npz_are_named_for_what_they_are(tmp_path, content, needle):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=f"SOURCE: .*x.npz is {needle}"):
        open_source(str(path))


@pytest.mark.parametrize("target, needle", [
    ("/dev/zero", "a character device"),
    ("/dev/null", "a character device"),
    ("missing-target.npz", "symbolic link to missing-target.npz, which does not exist"),
])
def test_links_and_devices_are_named_for_what_they_are(tmp_path, target, needle, invoke):
    link = tmp_path / "link.npz"
    os.symlink(target, link)
    with pytest.raises(UsageError, match=f"SOURCE: .*link.npz.*{needle}"):
        open_source(str(link))
    ckpt = tmp_path / "link.safetensors"
    os.symlink(target, ckpt)
    result = invoke("sample", ckpt, "--out", tmp_path / "g.png")
    assert result.exit_code == 2 and needle in result.stderr and "does not exist" not in result.stderr.replace(
        "which does not exist", "")
