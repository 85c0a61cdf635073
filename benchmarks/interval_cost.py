"""What `gentool evaluate`'s intervals cost, on N CIFAR-10-sized images with the CIFAR-10 extractor's network (128
features, 10 classes): the per-image work every evaluation does (features, class probabilities, pixel statistics
and projections of the generated images) plus the scoring of all metrics, without intervals and with R bootstrap
resamples, timed in turns; the ratio of the two totals is the cost of intervals.

    python3 benchmarks/interval_cost.py --data /work/shared/data/cifar10-jpeg --out /tmp/gentool-intervals \\
        [--n 10000] [--resamples 200] [--repeats 2] [--reference]

The real set is the test split; the "generated" set is the same images moved by two pixels (so the scores are not
zero). The network is the extractor's, untrained: training it does not change what evaluation costs, and on a
shared machine it takes an hour. A checkpoint's sampling time, which evaluate adds on top, is left out, so the ratio
is an upper bound. With --reference, torch-fidelity's FID, KID and precision/recall formulas run on the same
features beside gentool's (the agreement tests/test_reference_formulas.py checks on small synthetic features).
Writes results.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gentool.data import load_dataset
from gentool.evaluate_options import METRICS
from gentool.metrics.evaluate import score_stats
from gentool.metrics.extractor import COLOUR_RECIPE, Extractor, FeatureNet
from gentool.metrics.fid_kid import gaussian_stats
from gentool.metrics.intervals import IntervalPlan
from gentool.metrics.stats import image_stats, stream_stats

WANTED = tuple(m for m in METRICS if m != "vae")


def timed(fn):
    started, used = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - started, time.process_time() - used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a folder with a test/ split of class folders (CIFAR-10)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = load_dataset(str(Path(args.data) / "test"))
    real_images = test.images[:args.n]
    net = FeatureNet(COLOUR_RECIPE, test.geometry, 10).eval()
    extractor = Extractor(net, {"id": "untrained"})
    real = image_stats(extractor, real_images, 10_000)
    real_gaussian = gaussian_stats(real.features)
    moved = torch.roll(real_images, shifts=(2, 2), dims=(2, 3))
    gen, stats_wall, stats_cpu = timed(lambda: stream_stats(extractor, moved.split(4096), projections=True))
    wall = {0: [], args.resamples: []}
    cpu = {0: [], args.resamples: []}
    for _ in range(args.repeats):
        for resamples in wall:
            plan = IntervalPlan(resamples, 0.95)
            (metrics, _), w, c = timed(lambda: score_stats(real, real_gaussian, gen, WANTED, 0, plan))
            wall[resamples].append(w)
            cpu[resamples].append(c)
    base = stats_wall + statistics.median(wall[0])
    with_ci = stats_wall + statistics.median(wall[args.resamples])
    cpu_base = stats_cpu + statistics.median(cpu[0])
    cpu_with = stats_cpu + statistics.median(cpu[args.resamples])
    summary = {"n": args.n, "resamples": args.resamples, "threads": torch.get_num_threads(),
               "load_average": os.getloadavg(), "per_image_seconds": stats_wall, "per_image_cpu_seconds": stats_cpu,
               "scoring_seconds": wall, "scoring_cpu_seconds": cpu, "ratio": with_ci / base,
               "cpu_ratio": cpu_with / cpu_base, "metrics": metrics}
    print(f"{args.n:,} CIFAR-10-sized images, all metrics, {torch.get_num_threads()} threads, load average "
          f"{summary['load_average'][0]:.1f}: per-image work {stats_wall:.1f} s; evaluation {base:.1f} s without "
          f"intervals, {with_ci:.1f} s with {args.resamples} resamples (x{with_ci / base:.2f}); CPU time "
          f"{cpu_base:.1f} s and {cpu_with:.1f} s (x{cpu_with / cpu_base:.2f})")
    for key in ("fid", "kid_mean", "precision", "recall", "modes", "class_kl"):
        print(f"  {key}: {metrics[key]:.4g} {metrics.get({'kid_mean': 'kid_ci'}.get(key, f'{key}_ci'))}")
    if args.reference:
        summary["reference"] = compare_with_torch_fidelity(real.features, gen.features)
        print("  torch-fidelity on the same features:", summary["reference"])
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return 0


def compare_with_torch_fidelity(real: np.ndarray, fake: np.ndarray, pr_n: int = 5000) -> dict:
    """|gentool − torch-fidelity| for FID, KID (torch-fidelity's own subsets) and precision/recall (on pr_n samples
    a side: torch-fidelity holds the whole distance matrices)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    from gentool.metrics.fid_kid import frechet_distance, polynomial_mmd2
    from gentool.metrics.manifold import precision_recall

    r64, f64 = real.astype(np.float64), fake.astype(np.float64)
    fid = fid_statistics_to_metric(*(fid_features_to_statistics(torch.from_numpy(x)) for x in (r64, f64)), False)
    ours_fid = frechet_distance(*gaussian_stats(r64), *gaussian_stats(f64))
    kid = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=20,
                                 kid_subset_size=1000, rng_seed=0, verbose=False)
    rng = np.random.RandomState(0)
    ours_kid = np.mean([polynomial_mmd2(r64[rng.choice(len(r64), 1000, replace=False)],
                                        f64[rng.choice(len(f64), 1000, replace=False)]) for _ in range(20)])
    prc = prc_features_to_metric(torch.from_numpy(fake[:pr_n]), torch.from_numpy(real[:pr_n]), prc_neighborhood=3,
                                 prc_batch_size=10_000, save_cpu_ram=True, verbose=False)
    precision, recall = precision_recall(real[:pr_n], fake[:pr_n], 3)
    return {"fid": [ours_fid, fid["frechet_inception_distance"]],
            "kid": [float(ours_kid), kid["kernel_inception_distance_mean"]],
            "precision": [precision, prc["precision"]], "recall": [recall, prc["recall"]]}


if __name__ == "__main__":
    sys.exit(main())
