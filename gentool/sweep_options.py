"""What `gentool sweep` accepts: one keyword-only dataclass, each option declared once. The options a sweep passes
on to every trial's training are TrainOptions' own fields (same help, flags and checks); the grid's axes are value
lists. The CLI builds the command from it, `--config FILE` fills it from TOML and `--print-config` writes it.

Imports nothing heavy: `gentool sweep --help` reads this module without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gentool.errors import UsageError, bad_value
from gentool.evaluate_options import GENTOOL, EvalOptions
from gentool.parsing import parse_list, parse_param
from gentool.checks import Ints
from gentool.train_options import EVAL_N, FIELDS, POSITIVE, THREADS, check_threads, complete_model, copy_option, option

# The options every trial shares and that make the sweep what it is (another value is another sweep), and those
# that may change from one invocation to the next.
SHARED = ("batch_size", "lr", "limit", "image_size", "seed")
RUNTIME = ("epochs", "data_dir", "device", "checkpoint_every", "sample_every", "evaluate", "eval_n",
           "skip_nonfinite", "eval_every", "stop_on_divergence", "deterministic", "extractor", "extractor_weights", "heldout",
           "tensorboard")
SWEEPS_ENV = "GENTOOL_SWEEPS"  # the folder default sweep directories go in (else sweeps/)


EVAL_FIELDS = {f.name: f for f in dataclasses.fields(EvalOptions)}


def _axis(kind, name: str):
    def convert(text: str | None) -> list | None:
        return None if text is None else parse_list(text, name, kind)
    return convert


def _param_axes(items: list[str] | None) -> dict[str, list]:
    """--param NAME=V1,V2 (repeatable) → {NAME: [V1, V2]}."""
    axes = {}
    for spec in items or []:
        name, _ = parse_param(spec)
        if name in axes or name in ("latent_dim", "width"):
            raise bad_value("--param", spec, "a field not swept already (use --latent-dim/--width for those)")
        axes[name] = parse_list(spec.partition("=")[2], f"--param {name}")
    return axes


@dataclass(kw_only=True)
class SweepOptions:
    """Everything `gentool sweep` accepts."""

    command: ClassVar[str] = "sweep"

    model: str | None = option("Model name (see `gentool models`).", metavar="MODEL", argument=True,
                               complete=complete_model)
    data: str | None = copy_option("data")
    data_dir: str | None = copy_option("data_dir")
    latent_dim: list[int] | None = option("Latent sizes to sweep, comma-separated, e.g. 2,5,10,20.", metavar="D,D",
                                          cli_type=str, convert=_axis(int, "--latent-dim"),
                                          check=FIELDS["latent_dim"].metadata["check"])
    width: list[float] | None = option("Width multipliers to sweep, comma-separated, e.g. 0.5,1,2.", metavar="W,W",
                                       cli_type=str, convert=_axis(float, "--width"),
                                       check=FIELDS["width"].metadata["check"])
    params: dict[str, list[Any]] = option(
        "Another config field to sweep, NAME=V1,V2 (repeatable; one value fixes it).", default=None,
        metavar="NAME=V,V", flags=("--param",), cli_type=list[str], convert=_param_axes)
    epochs: int = option("Epochs per trial (re-running with more continues finished trials).", default=10,
                         metavar="N", check=POSITIVE)
    batch_size: int | None = copy_option("batch_size")
    lr: float | None = copy_option("lr")
    limit: int | None = copy_option("limit")
    image_size: int | None = copy_option("image_size")
    seed: int = copy_option("seed", default=0)
    device: str = copy_option("device", default="auto")
    checkpoint_every: int = copy_option("checkpoint_every", default=10)
    sample_every: int = copy_option("sample_every", default=1)
    skip_nonfinite: bool = copy_option("skip_nonfinite", default=False)
    eval_every: int = copy_option("eval_every", default=0)
    heldout: int | None = copy_option("heldout")
    stop_on_divergence: bool = copy_option("stop_on_divergence", default=False)
    deterministic: bool = copy_option("deterministic", default=False)
    tensorboard: str | None = option(
        "Log every trial to TensorBoard under one root, one folder per trial, so that `tensorboard --logdir ROOT` "
        "compares them (needs pip install 'gentool[tensorboard]'). Alone: ROOT is SWEEP_DIR/tensorboard; "
        "--tensorboard DIR: ROOT is DIR (give MODEL first: a word right after --tensorboard is its DIR).",
        metavar="[DIR]", bare="auto")
    workers: int = option("Trials run at once, each in its own process with a share of the CPU threads.",
                          default=1, metavar="W", check=Ints(1, 1024))
    threads: int | None = option("CPU threads for the whole sweep, shared evenly among its --workers (default: "
                                 "torch's, one per core).", metavar="N", check=THREADS)
    trial: int | None = option("Run only trial K (0-based), e.g. --trial $SLURM_ARRAY_TASK_ID.", metavar="K",
                               check=Ints(0, 10**6))
    list_trials: bool = option("Print the trials and their values, then exit.", default=False, flags=("--list",))
    evaluate: bool = option("Also score each trial with `gentool evaluate` (FID, KID, IS, precision/recall, "
                            "modes...).", default=False, flags=("--eval",))
    eval_n: int = option("Generated images --eval (and --eval-every) scores per trial.", default=EVAL_N,
                         metavar="N", check=FIELDS["eval_n"].metadata["check"])
    extractor: str = copy_option("extractor", GENTOOL, EVAL_FIELDS)
    extractor_weights: str | None = copy_option("extractor_weights", None, EVAL_FIELDS)
    metric: str | None = option("Metric for heatmap.png (default: fid when present, else the training loss).",
                                metavar="NAME")
    out: str | None = option(f"Sweep directory (default: ${SWEEPS_ENV}/<model>-<data>, with ${SWEEPS_ENV} unset: "
                             f"sweeps/); re-running the same command resumes it.", metavar="DIR")

    def __post_init__(self):
        if self.params is None:
            self.params = {}

    def axes(self) -> dict[str, list]:
        """The grid's axes in order: --latent-dim, --width, then each --param."""
        axes = {"latent_dim": self.latent_dim, "width": self.width, **self.params}
        axes = {name: values for name, values in axes.items() if values is not None}
        if not axes:
            raise UsageError("--latent-dim/--width/--param: nothing to sweep; give at least one list of values")
        for name, values in axes.items():  # a file's lists are checked here (the command line's when parsed)
            if len(set(map(repr, values))) != len(values):
                raise bad_value(f"--param {name}" if name in self.params else "--" + name.replace("_", "-"),
                                values, "a list without repeated values")
        return axes

    def validate(self) -> None:
        if not self.model:
            raise UsageError("MODEL: missing; expected a model name (see `gentool models`)")
        if not self.data:
            raise UsageError("--data: missing; expected mnist, cifar10, mnist-sample or a folder of images")
        if self.workers < 1:
            raise bad_value("--workers", self.workers, "a positive integer")
        check_threads(self.threads)
        if self.extractor != GENTOOL or self.extractor_weights:
            if not self.evaluate:
                raise UsageError("--extractor: only with --eval (it says how --eval scores each trial)")
            EvalOptions(source="", extractor=self.extractor, extractor_weights=self.extractor_weights).validate()
        if self.extractor_weights:  # absolute: worker processes and later invocations may run elsewhere
            self.extractor_weights = str(Path(self.extractor_weights).expanduser().absolute())
        self.axes()

    def printable(self) -> dict:
        """The settings `--print-config` writes."""
        self.validate()
        return dataclasses.asdict(self)

    def shared(self) -> dict:
        return {name: getattr(self, name) for name in SHARED}

    def runtime(self) -> dict:
        runtime = {name: getattr(self, name) for name in RUNTIME}
        runtime["eval"] = runtime.pop("evaluate")
        return runtime
