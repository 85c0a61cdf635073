"""Seconds per full-MNIST epoch of gentool's `train`, this checkout against another one (e.g. the code before a
change), run in alternation so that both see the same machine.

    git worktree add /tmp/before 58d4d61
    python3 benchmarks/epoch_seconds.py --data-dir ../shared/data --before /tmp/before [--models vae,gan,wgan]
                                        [--precision fp32,bf16] [--repeats 1]

Each measurement is a separate process running `gentool.train.train` on the first N training images for two
epochs (as many as benchmarks/throughput.py uses: vae/cvae 30,000, the others 1,536); the figure is the second
epoch's images per second from metrics.json, and seconds per epoch = 60,000 ÷ that. The other checkout runs in fp32 with its own defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from throughput import images_for

FULL_EPOCH = 60_000

CHILD = """
import json, sys, tempfile
from pathlib import Path
import gentool
from gentool.train import TrainOptions, train
model, n, data_dir, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
extra = {} if precision == "fp32" else {"precision": precision}
with tempfile.TemporaryDirectory() as tmp:
    train(TrainOptions(model=model, data="mnist", data_dir=data_dir, epochs=2, limit=n, out=str(Path(tmp) / "run"),
                       checkpoint_every=0, sample_every=0, **extra))
    last = json.loads((Path(tmp) / "run" / "metrics.json").read_text())["epochs"][-1]
print(json.dumps({"images_per_second": last["images_per_second"], "gentool": gentool.__file__}))
"""


def run(checkout: Path, model: str, data_dir: str, precision: str) -> float:
    """Images per second of one measurement with `checkout`'s gentool first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    n = str(images_for(model, "mnist", 1.0))
    proc = subprocess.run([sys.executable, "-c", CHILD, model, n, data_dir, precision], env=env, capture_output=True,
                          text=True, cwd=checkout)
    if proc.returncode != 0:
        raise SystemExit(f"{model} at {checkout}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["gentool"].startswith(str(checkout.resolve())):
        raise SystemExit(f"imported {out['gentool']}, not the checkout at {checkout}")
    return out["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--before", type=Path, help="another gentool checkout to measure in alternation (fp32)")
    parser.add_argument("--models", default="vae,gan,wgan")
    parser.add_argument("--precision", default="fp32,bf16", help="precisions of this checkout")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    data_dir = str(Path(args.data_dir).resolve())
    print(f"{'model':8} {'run':4} {'checkout':10} {'precision':9} {'img/s':>8} {'s/epoch':>8} {'÷ before':>8}")
    for model in args.models.split(","):
        for rep in range(args.repeats):
            before = run(args.before.resolve(), model, data_dir, "fp32") if args.before else None
            if before:
                print(f"{model:8} {rep:4d} {'before':10} {'fp32':9} {before:8.1f} {FULL_EPOCH / before:8.1f}")
            for precision in args.precision.split(","):
                rate = run(here, model, data_dir, precision)
                ratio = f"{rate / before:7.2f}×" if before else ""
                print(f"{model:8} {rep:4d} {'this':10} {precision:9} {rate:8.1f} {FULL_EPOCH / rate:8.1f} {ratio}",
                      flush=True)


if __name__ == "__main__":
    main()
