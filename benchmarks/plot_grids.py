"""Sample grids side by side, each under a caption, with the evaluate figures that go with it: the before/after
picture of a change to a model.

    python3 benchmarks/plot_grids.py --out figure.png --title TEXT \
        GRID.png "caption" [EVAL.json] GRID2.png "caption 2" [EVAL2.json] ...

A grid is a PNG as `gentool sample --grid` or a run's samples/epoch_NNNN.png write it; an EVAL.json, from
`gentool evaluate --json --out`, adds its FID, classes covered and pixel figures (when it has them) to the caption.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.image import imread  # noqa: E402


def panels(items: list[str]) -> list[tuple[Path, str, dict | None]]:
    """GRID CAPTION [EVAL.json] ... → [(grid, caption, metrics or None)]."""
    out, i = [], 0
    while i < len(items):
        if i + 1 >= len(items):
            raise SystemExit(f"plot_grids: {items[i]} has no caption")
        grid, caption, i = Path(items[i]), items[i + 1], i + 2
        metrics = None
        if i < len(items) and items[i].endswith(".json"):
            metrics, i = json.loads(Path(items[i]).read_text())["metrics"], i + 1
        out.append((grid, caption, metrics))
    return out


def caption_of(caption: str, metrics: dict | None) -> str:
    if not metrics:
        return caption
    lines = [caption, f"FID {metrics['fid']:.1f}" + (f" · {metrics['modes']}/{metrics['classes']} classes"
                                                     if "modes" in metrics else "")]
    if "pixel_mean" in metrics:
        lines.append(f"mean {metrics['pixel_mean']:.2f} · spread {metrics['pixel_spread']:.2f} · "
                     f"sat {metrics['pixel_saturated']:.0%}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="+", help="GRID.png CAPTION [EVAL.json], repeated")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--dpi", type=int, default=90, help="90 draws a 274-pixel grid at about its own size")
    parser.add_argument("--colours", type=int, default=256,
                        help="a palette of this many colours (0: full colour); 256 keeps a committed figure "
                             "~3× smaller")
    args = parser.parse_args()
    shown = panels(args.items)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 4.2), squeeze=False)
    for ax, (grid, caption, metrics) in zip(axes[0], shown):
        image = imread(grid)  # a grey grid is 2-D: without cmap, matplotlib would paint it in viridis
        ax.imshow(image, interpolation="nearest", cmap="gray" if image.ndim == 2 else None)
        ax.set_title(caption_of(caption, metrics), fontsize=8)
        ax.axis("off")
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=args.dpi)
    if args.colours:  # sample grids are noisy photographs: full-colour PNG holds them at about 1 MB
        from PIL import Image

        full = Image.open(args.out).convert("RGB")
        full.quantize(args.colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out,
                                                                                                   optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
