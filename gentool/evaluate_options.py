"""What `gentool evaluate` accepts: one keyword-only dataclass, each option declared once (with its help text and
flags), checked before any work; and the metric names it knows.

Imports nothing heavy: `gentool evaluate --help` reads this module without loading torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gentool.errors import UsageError, bad_value
from gentool.paths import check_input_file, check_replace, prepare_output
from gentool.sample_options import DrawOptions
from gentool.checks import Ints, choice
from gentool.train_options import MAX_EVAL_N, MIN_EVAL_N, copy_option, option

METRICS = ("fid", "fid-inf", "kid", "is", "pr", "modes", "jsd", "emd", "pixels", "vae")
ALIASES = {"fid_inf": "fid-inf", "fidinf": "fid-inf",
           "precision": "pr", "recall": "pr", "precision_recall": "pr", "inception": "is", "swd": "emd",
           "elbo": "vae", "reconstruction": "vae", "coverage": "modes", "pixel": "pixels",
           "saturation": "pixels"}
MIN_N, MAX_N = MIN_EVAL_N, MAX_EVAL_N
SPLITS = ("test", "train")
GENTOOL, INCEPTION = "gentool", "inception-v3"  # --extractor
INCEPTION_METRICS = ("fid", "kid", "is")
DEFAULT_RESAMPLES, DEFAULT_LEVEL = 200, 0.95  # --intervals, --level
MAX_RESAMPLES = 10_000


def parse_metrics(spec: str, known: tuple[str, ...] = METRICS) -> list[str]:
    """'all' or a comma-separated list (names or aliases such as precision, recall, swd, elbo) → metric names."""
    names = [s.strip().lower() for s in (spec or "").split(",") if s.strip()]
    if names == ["all"]:
        return list(known)
    wanted = []
    for name in names:
        key = ALIASES.get(name, name)
        if key not in known:
            raise bad_value("--metrics", name, "all or a comma-separated list of " + ", ".join(known))
        wanted += [key] if key not in wanted else []
    if not wanted:
        raise bad_value("--metrics", spec, "all or a comma-separated list of " + ", ".join(known))
    return wanted


@dataclass(kw_only=True)
class EvalOptions(DrawOptions):
    """What `gentool evaluate` was asked for (--precision: of a checkpoint's sampling; the extractor always runs in
    fp32)."""

    source: str = option("A checkpoint (samples are drawn from it), an .npz of images (key 'images', uint8 "
                         "N×H×W×C) or a folder of PNGs.", metavar="SOURCE", argument=True, required=True)
    data: str | None = option("Real data to compare with: mnist, cifar10, mnist-sample or a folder of images, with "
                              "class subfolders or without (then no class metrics; default: a checkpoint's own).",
                              metavar="NAME|DIR")
    data_dir: str | None = copy_option("data_dir")
    n: int = option("Number of generated images to score.", default=10_000, metavar="N", flags=("--n",),
                    check=Ints(MIN_N, MAX_N))
    metrics: str = option("all, or a comma-separated list of fid, fid-inf (FID at five sample counts and its "
                          "extrapolation to infinitely many), kid, is, pr (precision/recall), modes, jsd, emd, "
                          "pixels (mean, spread and saturated share of pixel values, beside the real data's), vae "
                          "(inception-v3: fid, kid, is).", default="all", metavar="LIST")
    split: str | None = option("Real split to compare with: test or train.", fallback="test for gentool's "
                               "extractor, train for inception-v3", metavar="test|train",
                               check=choice(*SPLITS))
    extractor: str = option(
        "gentool (a small classifier gentool trains once per data set; its FID is not comparable with published "
        "numbers) or inception-v3 (the standard FID network, computed as torch-fidelity does; needs "
        "--extractor-weights).", default=GENTOOL, metavar="gentool|inception-v3",
        check=choice(GENTOOL, INCEPTION))
    extractor_weights: str | None = option(
        "inception-v3: the FID Inception weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
        "nothing is downloaded.", metavar="FILE")
    intervals: int = option("Bootstrap resamples of the generated set for the intervals of fid, kid, precision, "
                            "recall, modes and class KL (0: no intervals; the real set is never resampled).",
                            default=DEFAULT_RESAMPLES, metavar="R")
    level: float = option("Level of the intervals, e.g. 0.95 (between 0.5 and 0.999).", default=DEFAULT_LEVEL,
                          metavar="P")
    out: str | None = option("Also write the JSON result to this file.", metavar="FILE")

    def validate(self) -> list[str]:
        """Check the options before any work (filling in the split); returns the metric names asked for."""
        if not isinstance(self.n, int) or not MIN_N <= self.n <= MAX_N:
            raise bad_value("--n", self.n, f"an integer between {MIN_N} and {MAX_N:,}")
        if self.extractor not in (GENTOOL, INCEPTION):
            raise bad_value("--extractor", self.extractor, f"{GENTOOL} or {INCEPTION}")
        inception = self.extractor == INCEPTION
        if inception and not self.extractor_weights:
            raise UsageError("--extractor-weights: missing; inception-v3 needs the FID Inception weights file "
                             "(nothing is downloaded)")
        if not inception and self.extractor_weights:
            raise UsageError("--extractor-weights: only with --extractor inception-v3")
        if not isinstance(self.intervals, int) or not 0 <= self.intervals <= MAX_RESAMPLES:
            raise bad_value("--intervals", self.intervals, f"an integer between 0 (no intervals) and {MAX_RESAMPLES:,}")
        if not isinstance(self.level, (int, float)) or not 0.5 <= self.level <= 0.999:
            raise bad_value("--level", self.level, "a number between 0.5 and 0.999, e.g. 0.95")
        self.split = self.split or ("train" if inception else "test")
        if self.split not in SPLITS:
            raise bad_value("--split", self.split, " or ".join(SPLITS))
        source = Path(self.source).expanduser()
        if self.out and not os.path.isdir(source):  # a SOURCE not there must not leave --out's folder made for it
            check_input_file(source, "SOURCE", "a checkpoint, an .npz of images or a folder of PNGs")
        if self.out:
            out = Path(self.out)
            if os.path.isdir(out):  # os.path: a name too long is prepare_output's to say, not an OSError here
                raise bad_value("--out", self.out, "a file path for the JSON result, not a folder")
            check_replace(out, "--out", self.overwrite)
            prepare_output(out, "--out")  # now, not after minutes of scoring
        return parse_metrics(self.metrics, INCEPTION_METRICS if inception else METRICS)
