"""gentool prepare."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gentool.cli import options as o
from gentool.progress import make_reporter


@o.cli_errors
def prepare(
    data: Annotated[str, typer.Option("--data", metavar="NAME|DIR", help="The real data evaluate will compare with: mnist, cifar10, mnist-sample or a folder with class subfolders.")],
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", metavar="DIR", help="Where mnist/cifar10 lie (default: $XDG_CACHE_HOME/gentool/data).")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", metavar="N", help="A folder's images at N×N pixels, as a model trained with --image-size N draws them (default: their own size).")] = None,
    split: Annotated[str, typer.Option("--split", metavar="test|train|both", help="The real split(s) whose statistics to compute.")] = "test",
    device: Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda|mps", help="Where to train the extractor.")] = "auto",
    quiet: o.QuietOpt = False,
    json_out: o.JsonOpt = False,
):
    """Build a data set's reference extractor and real-image statistics now (with progress and an ETA), so the
    first `gentool evaluate` on that data starts scoring at once: run it on its own in a batch job. Safe to repeat:
    what is cached already is reused."""
    from gentool.metrics.prepare import prepare as build

    splits = ("test", "train") if split == "both" else (split,)
    found = build(data, data_dir, image_size, splits, device, make_reporter(quiet))
    if json_out:
        o.print_json(found)
        return
    say = o.out_console().print
    say(f"extractor {found['extractor']} (test accuracy {found['test_accuracy']:.2%}) in {found['cache']}",
        highlight=False, soft_wrap=True)
    for name, s in found["splits"].items():
        say(f"{name} statistics: {s['images']:,} images of {s['source']}", highlight=False, soft_wrap=True)
    say(f"ready in {found['seconds']:.0f} s; gentool evaluate on --data {data} now starts scoring at once",
        highlight=False, soft_wrap=True)
