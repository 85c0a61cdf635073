"""Sampling throughput (images per second) of every built-in model, plain PyTorch against gentool in fp32 and bf16,
and the time `gentool evaluate` takes for 10,000 samples of a checkpoint, with the peak memory of the process.

    python3 benchmarks/sampling.py --data-dir ../shared/data [--models gan,vae] [--n 10000] [--no-evaluate]

Sampling runs `GenerativeModel.generate` (what `gentool sample --n` does) on freshly initialised networks: the
cost does not depend on the weights. Evaluate scores one checkpoint per geometry with every metric; the first run
on a machine also trains and caches the MNIST reference extractor (about two minutes), reported separately.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from gentool.checkpoint import save_checkpoint
from gentool.data import Geometry
from gentool.device import Amp, pick_precision, prepare
from gentool.registry import get_entry, list_models

MNIST = Geometry(1, 28, 28, 10)


def sampling_rate(name: str, n: int, precision: str, prepared: bool) -> float:
    """Images per second of `generate`; `prepared`: as `gentool sample` runs it (`device.prepare`: channels-last
    and gentool.kernels), else the model as built (plain PyTorch layers, contiguous)."""
    cls = get_entry(name).cls
    torch.manual_seed(0)
    model = cls(cls.config_class.create(MNIST))
    cpu = torch.device("cpu")
    if prepared:
        prepare(model, cpu, precision)
    else:
        model.amp = Amp(cpu, pick_precision(precision, cpu))
    model.generate(500, torch.Generator().manual_seed(1))  # warm-up
    start = time.perf_counter()
    model.generate(n, torch.Generator().manual_seed(0))
    return n / (time.perf_counter() - start)


def evaluate_seconds(name: str, n: int, data_dir: str) -> tuple[float, float]:
    """(seconds for a warm evaluate of n samples, seconds of a first call that may train the extractor)."""
    from gentool.metrics.evaluate import EvalOptions, evaluate

    cls = get_entry(name).cls
    model = cls(cls.config_class.create(MNIST))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "m.safetensors"
        save_checkpoint(ckpt, model, model.build_optimizers(), {"epoch": 0, "step": 0},
                        {"source": "mnist", "geometry": MNIST.to_dict()}, "benchmark")
        times = []
        for _ in range(2):
            start = time.perf_counter()
            evaluate(EvalOptions(source=str(ckpt), data="mnist", data_dir=data_dir, n=n, metrics="all"))
            times.append(time.perf_counter() - start)
    return times[1], times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--models", default=",".join(e.name for e in list_models() if e.source == "built-in"))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--no-evaluate", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MNIST geometry, {args.n:,} samples")
    print(f"{'model':8} {'plain fp32':>11} {'fp32 img/s':>11} {'bf16 img/s':>11} {'fp32/plain':>10} "
          f"{'bf16/plain':>10}")
    for name in args.models.split(","):
        plain = sampling_rate(name, args.n, "fp32", prepared=False)
        fp32, bf16 = sampling_rate(name, args.n, "fp32", True), sampling_rate(name, args.n, "bf16", True)
        print(f"{name:8} {plain:11.0f} {fp32:11.0f} {bf16:11.0f} {fp32 / plain:9.2f}× {bf16 / plain:9.2f}×",
              flush=True)
    if not args.no_evaluate:
        warm, first = evaluate_seconds("gan", args.n, args.data_dir)
        print(f"evaluate (all metrics, gan checkpoint, {args.n:,} samples vs MNIST test): {warm:.1f} s "
              f"(first call {first:.1f} s, including any extractor training)")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
