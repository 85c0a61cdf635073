"""Tiny data sets written in torchvision's on-disk formats, so the real loading code runs in every test (CPU only).

MNIST digits come from the real sample bundled with gentool, written out as idx files; CIFAR-10 geometry comes
as an image folder of PNGs and as the official pickled batches (torchvision's reader, checksums patched to match).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from gentool.cli.app import app
from gentool.data import load_mnist_sample

REAL_DATA = Path(os.environ.get("GENTOOL_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
N_TRAIN, N_TEST = 256, 64


def suite_threads() -> int:
    """Threads for this test process: up to 2 when it runs alone; under pytest-xdist (`-n N`, see README) the cores
    shared among the N workers, at least 1, so that the workers' torch threads do not outnumber the cores (thread
    pools that spin while they wait would then slow each other down)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 1:
        return min(2, torch.get_num_threads())
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores // workers))


THREADS = suite_threads()
torch.set_num_threads(THREADS)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # ... and the gentool processes the tests start (those that do not set it themselves) take as many
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

# Hypothesis' per-example deadline (200 ms) measures the machine, not the code: under load (another worker, other
# jobs) an example over it, then under it on the replay, fails as "flaky". The properties are what is tested.
settings.register_profile("gentool", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gentool")


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A test that changes torch's thread count in this process (a command's --threads run in-process) leaves it as
    it found it: the next tests, and the other xdist worker sharing the cores, are not given more threads."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks (--dist loadgroup)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist with `--dist loadgroup` (pyproject.toml's addopts): the tests of a file that share a
    module-scoped fixture (a trained run, an extractor, an installed plugin) go to one worker, which builds it
    once; every other test is sent on its own, to whichever worker is free. Without xdist the mark does nothing."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        scopes = {d.scope for defs in info.name2fixturedefs.values() for d in defs}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the idx format MNIST ships in (magic 0x08 = unsigned byte)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data dir holding MNIST/raw/*-ubyte with 256 train and 64 test real digits."""
    root = tmp_path_factory.mktemp("mnist-data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train, test = load_mnist_sample(True), load_mnist_sample(False)
    write_idx(raw / "train-images-idx3-ubyte", train.images[:N_TRAIN, 0].numpy())
    write_idx(raw / "train-labels-idx1-ubyte", train.labels[:N_TRAIN].numpy().astype(np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", test.images[:N_TEST, 0].numpy())
    write_idx(raw / "t10k-labels-idx1-ubyte", test.labels[:N_TEST].numpy().astype(np.uint8))
    return root


def colour_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 32×32 RGB images (N×H×W×C) whose colour and stripe pattern depend on their class, and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        base = np.array([25 * c, 255 - 25 * c, 128], dtype=float)
        stripes = ((xx + yy * (c % 3)) // (2 + c % 4)) % 2
        img = base[None, None, :] * (0.5 + 0.5 * stripes[..., None]) + rng.normal(0, 12, (32, 32, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory) -> Path:
    """An image folder train/<class>/*.png of 3×32×32 images, 20 per class."""
    import imageio.v3 as iio

    root = tmp_path_factory.mktemp("cifar-folder") / "train"
    images, labels = colour_images(200, seed=1)
    for i, (img, c) in enumerate(zip(images, labels)):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / f"{i:04d}.png", img)
    return root


@pytest.fixture()
def cifar_official(tmp_path, monkeypatch) -> Path:
    """A data dir holding cifar-10-batches-py in the official pickled format (tiny batches), with torchvision's
    checksum lists patched to these files so its real reader accepts them."""
    import torchvision.datasets as tvd

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        images, labels = colour_images(40, seed=10 + k)
        batch = {"data": images.transpose(0, 3, 1, 2).reshape(40, -1), "labels": labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, md5[n]] for n in names[:5]])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    return tmp_path


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def invoke(runner):
    """Run a gentool command in-process; returns the click Result."""

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture()
def entry_point(monkeypatch, capsys):
    """Run the console script's entry point (gentool.cli.app.main, where click's usage errors and gentool's own
    become one line and an exit code) in this process, with the given command line and working directory; returns
    what a subprocess would (return code, stdout, stderr). The same edge as the executable, without the seconds a
    new process spends importing torch: for tests of what gentool says, not of the process."""
    from gentool.cli.app import main

    def run(*args, cwd: Path) -> subprocess.CompletedProcess:
        argv = ["gentool", *map(str, args)]
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", argv)
        monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() installs its own
        monkeypatch.delenv("GENTOOL_DEBUG", raising=False)  # as test_journeys.ENV: one line, not a traceback
        capsys.readouterr()
        threads = torch.get_num_threads()
        try:
            with pytest.raises(SystemExit) as exit_:
                main()
        finally:
            torch.set_num_threads(threads)  # a --threads given to this command ends with it, as its process would
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, exit_.value.code, out.out, out.err)

    return run


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The real MNIST data dir, or a skip saying why."""
    if not (REAL_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found at {REAL_DATA} (set GENTOOL_REAL_DATA to the folder holding MNIST/raw)")
    return REAL_DATA
