"""gentool sample: its options are SampleOptions' fields (gentool/sample_options.py)."""

from __future__ import annotations

from gentool.cli import options as o
from gentool.sample_options import SampleOptions


@o.cli_errors
@o.options_command(SampleOptions)
def sample(opts: SampleOptions, quiet: o.QuietOpt = False, json_out: o.JsonOpt = False):
    """Draw samples from a checkpoint (the checkpoint alone rebuilds the model)."""
    from gentool.progress import make_reporter
    from gentool.sampling import sample as draw

    result = draw(opts, make_reporter(quiet))
    if json_out:
        o.print_json(result)
    else:
        print(result["out"])
