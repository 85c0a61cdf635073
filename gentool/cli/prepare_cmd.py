"""gentool prepare: its options are PrepareOptions' fields (gentool/prepare_options.py)."""

from __future__ import annotations

from gentool.cli import options as o
from gentool.prepare_options import PrepareOptions
from gentool.progress import make_reporter


@o.cli_errors
@o.options_command(PrepareOptions)
def prepare(opts: PrepareOptions, quiet: o.QuietOpt = False, json_out: o.JsonOpt = False):
    """Build a data set's reference extractor and real-image statistics now (with progress and an ETA), so the
    first `gentool evaluate` on that data starts scoring at once: run it on its own in a batch job. Safe to repeat:
    what is cached already is reused."""
    from gentool.metrics.prepare import prepare as build

    found = build(opts, make_reporter(quiet))
    if json_out:
        o.print_json(found)
        return
    say = o.out_console().print
    accuracy = ("test accuracy" if found["extractor_kind"] == "classifier" else  # a folder without classes
                f"{found['extractor_kind']}: no classes; accuracy at predicting held-out images' rotations")
    say(f"extractor {found['extractor']} ({accuracy} {found['test_accuracy']:.2%}) in {o.escape(found['cache'])}",
        highlight=False, soft_wrap=True)
    for name, s in found["splits"].items():
        say(f"{name} statistics: {s['images']:,} images of {o.escape(s['source'])}", highlight=False, soft_wrap=True)
    say(f"ready in {found['seconds']:.0f} s; gentool evaluate on --data {o.escape(opts.data)} now starts scoring at "
        f"once",
        highlight=False, soft_wrap=True)
