"""What the hooks cost a run: images per second of the same VAE training with no hooks at all (the bare loop),
with the hooks `gentool train` uses by default (watch, figures, an idle TensorBoard hook), and with --tensorboard
logging (scalars every few steps, a grid and a flush per epoch), plus each run's whole wall-clock time.

    python benchmarks/hooks_overhead.py [--data-dir DIR] [--limit 2000] [--epochs 3] [--repeats 3]

Each measurement is its own process (`--threads 1`), and the variants alternate within each repeat, so that a
busy machine slows all of them alike. Reported: the median over repeats of the mean images/s of epochs 2 and later
(epoch 1 pays for warm-up), and of the seconds from process start to the end of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("bare loop", "default hooks", "default + tensorboard")

CHILD = r"""
import json, sys, time
start = time.perf_counter()
import torch
from gentool.api import default_hooks
from gentool.train import train
from gentool.train_options import TrainOptions
variant, data_dir, limit, epochs, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
opts = TrainOptions(model="vae", data="mnist", data_dir=data_dir, limit=limit, epochs=epochs, out=out, threads=1,
                    tensorboard="auto" if variant == "default + tensorboard" else None)
result = train(opts, hooks=[] if variant == "bare loop" else default_hooks())
records = json.load(open(result["metrics_file"]))["epochs"]
rate = sum(r["images_per_second"] for r in records[1:]) / max(1, len(records) - 1)
print(json.dumps({"images_per_second": rate, "seconds": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path.home() / ".cache" / "gentool" / "data"))
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, variant in enumerate(VARIANTS):
                out = Path(tmp) / f"{r}-{i}"
                done = subprocess.run([sys.executable, "-c", CHILD, variant, args.data_dir, str(args.limit),
                                       str(args.epochs), str(out)], capture_output=True, text=True, check=True)
                results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"repeat {r + 1} {variant}: {results[variant][-1]}", file=sys.stderr, flush=True)
    print(f"VAE on {args.limit} MNIST images, {args.epochs} epochs, 1 thread, {args.repeats} alternating repeats "
          f"({time.strftime('%Y-%m-%d %H:%M')}):")
    print(f"{'variant':<24}{'images/s (epochs 2+)':>22}{'seconds (process)':>20}")
    for variant, rows in results.items():
        rate = statistics.median(x["images_per_second"] for x in rows)
        seconds = statistics.median(x["seconds"] for x in rows)
        print(f"{variant:<24}{rate:>22.1f}{seconds:>20.1f}")


if __name__ == "__main__":
    main()
