"""FID against wall-clock minutes from a `benchmarks/time_to_quality.py` run: one curve per configuration.

    python3 benchmarks/plot_time_to_quality.py bench-ttq/results.json [--out bench-ttq/curve.png] [--floor FID]
        [--title TEXT]

Each point is a scored snapshot at the minute (since launch) it was written; the y axis is logarithmic, since FIDs
fall over orders of magnitude. Error bars are each FID's bootstrap interval (over that snapshot's samples, as
`gentool evaluate` reports it; one training seed, so they do not show the spread between training runs). The label
says the classes covered at the last point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402


TICKS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500)


def curves(results: dict) -> dict[str, list[tuple[float, float, str, tuple[float, float]]]]:
    """{configuration: [(minute, fid, "modes/classes", (fid low, fid high)), ...] in time order}; a snapshot
    scored without an interval (older results.json files) gets (fid, fid)."""
    return {name: sorted((s["minute"], s["fid"], f"{s['modes']}/{s['classes']}", tuple(s.get("fid_ci") or
                                                                                       (s["fid"], s["fid"])))
                         for s in marks.values())
            for name, marks in results.items() if marks}


def plot(results: dict, out: Path, title: str, floor: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1,
                   label=f"real images scored the same way ({floor:g})")
    lines = curves(results)
    for name, points in lines.items():
        xs, ys, covered, cis = zip(*points)
        bars = [[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]]
        ax.errorbar(xs, ys, yerr=bars, marker="o", capsize=3,
                    label=f"{name.replace('`', '')} ({covered[-1]} classes at the end)")
        ax.annotate(f"{ys[-1]:.1f}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    fids = [v for points in lines.values() for _, _, _, ci in points for v in ci] + ([floor] if floor else [])
    ax.set_yticks([t for t in TICKS if min(fids) / 1.2 <= t <= max(fids) * 1.2])  # plain numbers, not 2×10¹
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("wall-clock minutes since launch (start-up, data loading and checkpoints included)")
    ax.set_ylabel("FID (gentool evaluate, lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results.json written by time_to_quality.py")
    parser.add_argument("--out", type=Path, help="PNG to write (default: curve.png beside results.json)")
    parser.add_argument("--floor", type=float, help="FID of real images scored the same way (a dashed line)")
    parser.add_argument("--title", default="Sample quality against the minutes a user waits (real MNIST)")
    args = parser.parse_args()
    out = args.out or args.results.with_name("curve.png")
    data = json.loads(args.results.read_text())
    plot(data.get("runs", data), out, args.title, args.floor)  # (early results.json files held the runs alone)
    print(out)


if __name__ == "__main__":
    main()
