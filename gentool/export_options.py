"""What `gentool export` accepts: one keyword-only dataclass, each option declared once (with its help text and
flags), checked before any work.

Imports nothing heavy: `gentool export --help` reads this module without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from gentool.errors import UsageError, bad_value
from gentool.links import LinkRefused, check_no_links
from gentool.paths import check_input_file, check_replace, prepare_output
from gentool.sample_options import DrawOptions, SamplerOptions
from gentool.train_options import copy_option, option

# format: (file suffix, what the file is, the packages its parity check needs)
FORMATS = {"onnx": (".onnx", "an ONNX model", ("onnx", "onnxruntime")),
           "torchscript": (".pt", "a TorchScript module (torch.jit.load)", ())}
DRAW_FIELDS = {f.name: f for f in fields(DrawOptions)}  # sample's and evaluate's options, for the one export shares
DEFAULT_TOLERANCE = 2e-3  # about half a grey level of an 8-bit image (1/510): the PNGs agree up to rounding


@dataclass(kw_only=True)
class ExportOptions(SamplerOptions):
    """What `gentool export` was asked for (the sampler's settings too: the exported file runs that sampler)."""

    checkpoint: str = option("A .safetensors checkpoint written by gentool train.", metavar="CKPT",
                             argument=True, required=True)
    format: str = option("onnx (run with onnxruntime, needs pip install 'gentool[export]') or torchscript "
                         "(torch.jit.load).", default="onnx", metavar="onnx|torchscript")
    out: str | None = option("The file to write (default: beside the checkpoint, .onnx or .pt); a JSON of its "
                             "inputs, outputs and origin is written beside it (its name + .json).", metavar="PATH")
    weights: str = copy_option("weights", "auto", declared=DRAW_FIELDS)
    tolerance: float = option("Largest difference allowed between the exported file's images and gentool's own "
                              "(fp32, same latent codes; pixel values in [0, 1]); above it nothing is written.",
                              default=DEFAULT_TOLERANCE, metavar="T")
    overwrite: bool = option("Replace an existing file instead of refusing.", default=False)
    threads: int | None = copy_option("threads")  # the parity check runs the sampler: as sample, on a shared node

    def resolve(self) -> tuple[Path, Path]:
        """Validate and work out (output file, its JSON), checking both can be written before any work."""
        if self.format not in FORMATS:
            raise bad_value("--format", self.format, "one of " + ", ".join(FORMATS))
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance)
                and 0 < self.tolerance <= 1):
            raise bad_value("--tolerance", self.tolerance, "a number in (0, 1] (pixel values lie in [0, 1])")
        suffix = FORMATS[self.format][0]
        ckpt = Path(self.checkpoint)
        out = Path(self.out) if self.out else ckpt.with_suffix(suffix)
        if out.suffix.lower() != suffix:
            raise bad_value("--out", str(out), f"a {suffix} path for --format {self.format}")
        meta = out.with_name(out.name + ".json")
        for path in (out, meta):
            check_replace(path, "--out", self.overwrite)
        # the checkpoint first: a missing one (in a folder not there) must not leave the output's folder made beside it
        check_input_file(ckpt, "CKPT", "a .safetensors checkpoint file")
        prepare_output(out, "--out", longest=meta.name)  # the JSON's name is the longer: NAME.onnx.json
        try:
            check_no_links(meta)  # replaced at the end: a link there (or a hard link) is refused now, not then
        except LinkRefused as exc:
            raise UsageError(f"--out: {exc}") from None
        return out, meta
