"""Sanity benchmark for `gentool evaluate` on the real MNIST: held-out test digits must score far better than the
same digits blurred, which must score far better than uniform noise (FID, KID, precision, recall), and a set of
only eights must cover one mode.

    python3 benchmarks/evaluate_mnist.py --data-dir ../shared/data --out /tmp/gentool-eval-bench [--n 5000]

It writes real.npz, blurred.npz, noise.npz and eights.npz to --out, scores each against the training split (which
the test digits are held out from) exactly as `gentool evaluate FILE --data mnist --data-dir DIR --split train
--n N --json` does, prints a table and exits 1 if an expected ordering fails. The first run trains and caches the
MNIST extractor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from gentool.data import load_dataset
from gentool.images import write_npz
from gentool.metrics.evaluate import EvalOptions, evaluate
from gentool.progress import PlainReporter

BLUR_SIGMA = 1.5
COLUMNS = ("fid", "kid_mean", "precision", "recall", "is_mean", "modes", "class_kl", "jsd", "emd")


def make_sets(data_dir: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    """uint8 N×1×28×28 image sets: held-out test digits, the same blurred, uniform noise, training eights."""
    rng = np.random.default_rng(seed)
    test = load_dataset("mnist", data_dir, train=False)
    real = test.images[torch.from_numpy(np.sort(rng.choice(len(test), n, replace=False)))]
    blurred = np.stack([gaussian_filter(img[0].float().numpy(), BLUR_SIGMA) for img in real])[:, None]
    noise = rng.integers(0, 256, size=real.shape, dtype=np.uint8)
    train = load_dataset("mnist", data_dir, train=True)
    eights = train.images[train.labels == 8][:n]
    return {"real": real, "blurred": torch.from_numpy(blurred.round().clip(0, 255).astype(np.uint8)),
            "noise": torch.from_numpy(noise), "eights": eights}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, images in make_sets(args.data_dir, args.n, args.seed).items():
        path = out / f"{name}.npz"
        write_npz(path, images.float() / 255)
        req = EvalOptions(source=str(path), data="mnist", data_dir=args.data_dir, n=args.n, split="train",
                          seed=args.seed, device="cpu", out=str(out / f"{name}.json"), overwrite=True)
        results[name] = evaluate(req, PlainReporter())
        print(f"python3 -m gentool evaluate {path} --data mnist --data-dir {args.data_dir} --split train "
              f"--n {args.n} --seed {args.seed} --json", file=sys.stderr)
    ex = results["real"]["extractor"]
    print(f"extractor {ex['id']}: test accuracy {ex['test_accuracy']:.2%}, trained in {ex['train_seconds']} s")
    print("| set | N | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, r in results.items():
        cells = [f"{r['metrics'][c]:.4g}" for c in COLUMNS]
        print(f"| {name} | {r['n']} | " + " | ".join(cells) + " |")
    return 0 if _orderings_hold({k: v["metrics"] for k, v in results.items()}) else 1


def _orderings_hold(m: dict) -> bool:
    ok = True
    for key, better in (("fid", min), ("kid_mean", min), ("precision", max), ("recall", max)):
        ranked = sorted(("real", "blurred", "noise"), key=lambda s: m[s][key], reverse=better is max)
        if ranked != ["real", "blurred", "noise"]:
            print(f"FAIL: {key} ranks {ranked}", file=sys.stderr)
            ok = False
    if m["eights"]["modes"] != 1:
        print(f"FAIL: eights cover {m['eights']['modes']} modes, expected 1", file=sys.stderr)
        ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
