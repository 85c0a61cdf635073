"""Training throughput of gentool against a conventional PyTorch pipeline, side by side, for every built-in model
on MNIST and CIFAR-10 geometry, with each side's peak memory.

    python3 benchmarks/throughput.py --data-dir ../shared/data [--models vae,wgan] [--geometries mnist]
                                     [--precision fp32] [--workers 0] [--json out.json]

gentool: `gentool.train.train` itself (tensor-resident uint8 data, seeded index batches, guarded optimizer steps,
its default memory format) on the first N training images for two epochs; the figure is the second epoch's
images per second as recorded in metrics.json (the first pays for warm-up).
conventional: the same model class, loss and optimizer (with PyTorch's default kernel for it) fed by
torchvision's MNIST reader (CIFAR-10: an ImageFolder over the JPEG copy) with per-sample ToTensor + Normalize
transforms and a shuffling DataLoader (--workers worker processes), fp32, default memory format; the second of two
passes is timed.
Each measurement runs in its own process, so "peak MB" is that process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from flops import plain_optimizers
from gentool.data import Geometry
from gentool.registry import get_entry, list_models

GEOMETRIES = {"mnist": Geometry(1, 28, 28, 10), "cifar10": Geometry(3, 32, 32, 10)}
# Images per measured pass: about ten seconds of training for each family on a 2-core CPU.
IMAGES = {("vae", "mnist"): 30_000, ("cvae", "mnist"): 30_000}  # the MLP VAEs; on CIFAR-10 they are convolutional
IMAGES_CONV = {"mnist": 1_536, "cifar10": 1_024}


def images_for(model: str, geometry: str, scale: float) -> int:
    return int(IMAGES.get((model, geometry), IMAGES_CONV[geometry]) * scale)


def data_spec(geometry: str, data_dir: str) -> str:
    return "mnist" if geometry == "mnist" else str(Path(data_dir) / "cifar10-jpeg" / "train")


def measure_gentool(model: str, geometry: str, data_dir: str, n: int, precision: str) -> dict:
    """Images per second of the second epoch of a real `gentool train` run."""
    from gentool.train import TrainOptions, train

    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(model=model, data=data_spec(geometry, data_dir), data_dir=data_dir, epochs=2, limit=n,
                            out=str(Path(tmp) / "run"), checkpoint_every=0, sample_every=0, precision=precision)
        result = train(opts)
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    second = metrics["epochs"][-1]
    return {"images_per_second": second["images_per_second"], "seconds": second["seconds"], "step": result["step"]}


def conventional_loader(model_cls, geometry: str, data_dir: str, n: int, batch_size: int, workers: int):
    """torchvision dataset + per-sample ToTensor/Normalize + DataLoader, producing the model's pixel range."""
    import torchvision
    from torchvision import transforms

    lo, hi = model_cls.pixel_range
    c = GEOMETRIES[geometry].channels
    # ToTensor gives [0, 1]; Normalize maps it to the model's range ((x - mean) / std).
    normalize = transforms.Normalize([-lo / (hi - lo)] * c, [1 / (hi - lo)] * c)
    transform = transforms.Compose([transforms.ToTensor(), normalize])
    if geometry == "mnist":
        dataset = torchvision.datasets.MNIST(data_dir, train=True, download=False, transform=transform)
    else:
        dataset = torchvision.datasets.ImageFolder(str(Path(data_dir) / "cifar10-jpeg" / "train"), transform=transform)
    subset = torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n])
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)


def measure_conventional(model: str, geometry: str, data_dir: str, n: int, workers: int) -> dict:
    """Images per second of the second of two passes of a plain loop over a DataLoader."""
    cls = get_entry(model).cls
    torch.manual_seed(0)
    net = cls(cls.config_class.create(GEOMETRIES[geometry]))
    optimizers = plain_optimizers(net.build_optimizers())
    loader = conventional_loader(cls, geometry, data_dir, n, net.config.batch_size, workers)
    step, rate, seconds = 0, 0.0, 0.0
    for _ in range(2):
        start, seen = time.perf_counter(), 0
        for images, labels in loader:
            net.train_step(images, labels, optimizers, step)
            step, seen = step + 1, seen + len(images)
        seconds = time.perf_counter() - start
        rate = seen / seconds
    return {"images_per_second": round(rate, 1), "seconds": round(seconds, 3), "step": step}


def data_cost(geometry: str, data_dir: str, batches: int = 200, batch_size: int = 64) -> tuple[float, float]:
    """Milliseconds per batch of 64 spent producing training input: gentool's gather + normalize from the uint8
    tensor, and the conventional DataLoader's next batch (per-sample decode and transforms)."""
    from gentool.data import batches as index_batches, load_dataset
    from gentool.models.gan import GAN

    n = batches * batch_size
    data = load_dataset(data_spec(geometry, data_dir), data_dir, train=True, limit=n)
    model = GAN(GAN.config_class.create(GEOMETRIES[geometry]))
    start = time.perf_counter()
    for idx in index_batches(len(data), batch_size, 0, 1, torch.device("cpu")):
        model.normalize(data.images[idx])
    ours = (time.perf_counter() - start) / batches * 1000
    loader = conventional_loader(GAN, geometry, data_dir, n, batch_size, 0)
    start = time.perf_counter()
    for _ in loader:
        pass
    return ours, (time.perf_counter() - start) / batches * 1000


def child(args) -> None:
    """One measurement in this process; prints its JSON (with peak RSS) on the last line."""
    torch.manual_seed(0)
    if args.side == "gentool":
        out = measure_gentool(args.model, args.geometry, args.data_dir, args.n, args.precision)
    else:
        out = measure_conventional(args.model, args.geometry, args.data_dir, args.n, args.workers)
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def run_child(side: str, model: str, geometry: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--models", model, "--geometries", geometry,
           "--data-dir", args.data_dir, "--n", str(images_for(model, geometry, args.scale)),
           "--precision", args.precision, "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--models", default=",".join(e.name for e in list_models() if e.source == "built-in"))
    parser.add_argument("--geometries", default="mnist,cifar10")
    parser.add_argument("--precision", default="fp32", help="gentool's --precision (the conventional loop is fp32)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of the conventional side")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the images per pass (quicker: 0.25)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", choices=["gentool", "conventional"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.side, args.model, args.geometry = args.child, args.models, args.geometries
        child(args)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {args.precision}, "
          f"DataLoader workers {args.workers}")
    for geometry in args.geometries.split(","):
        ours, theirs = data_cost(geometry, args.data_dir)
        print(f"input pipeline, {geometry}: {ours:.3f} ms per batch of 64 (gentool: index + normalize a uint8 tensor) "
              f"vs {theirs:.2f} ms (DataLoader, per-sample ToTensor/Normalize) = {theirs / ours:.0f}×")
    print(f"{'model':8} {'data':8} {'images':>7} {'gentool img/s':>14} {'conv. img/s':>12} {'ratio':>6} "
          f"{'gentool MB':>11} {'conv. MB':>9}")
    rows = []
    for geometry in args.geometries.split(","):
        for model in args.models.split(","):
            ours, theirs = run_child("gentool", model, geometry, args), run_child("conventional", model, geometry, args)
            row = {"model": model, "data": geometry, "images": images_for(model, geometry, args.scale),
                   "precision": args.precision, "gentool": ours, "conventional": theirs}
            if "error" in ours or "error" in theirs:
                print(f"{model:8} {geometry:8} failed: {ours.get('error') or theirs.get('error')}")
            else:
                row["ratio"] = round(ours["images_per_second"] / theirs["images_per_second"], 2)
                print(f"{model:8} {geometry:8} {row['images']:7d} {ours['images_per_second']:14.1f} "
                      f"{theirs['images_per_second']:12.1f} {row['ratio']:6.2f} {ours['peak_mb']:11.0f} "
                      f"{theirs['peak_mb']:9.0f}", flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
