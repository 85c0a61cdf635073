"""What `gentool sweep` accepts: one keyword-only dataclass, each option declared once. The options a sweep passes
on to every trial's training are TrainOptions' own fields (same help, flags and checks); the grid's axes are value
lists. The CLI builds the command from it, `--config FILE` fills it from TOML and `--print-config` writes it.

Imports nothing heavy: `gentool sweep --help` reads this module without loading torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gentool import seed_stats
from gentool.errors import PARAM, ConfigError, UsageError, bad_value
from gentool.load import cores, usable_cores
from gentool.evaluate_options import GENTOOL, EvalOptions
from gentool.parsing import parse_list, parse_param
from gentool.checks import Ints
from gentool.train_options import (EVAL_N, FIELDS, FIXED, POSITIVE, RESTORED, RESUME_RULES, THREADS, TrainOptions,
                                   check_threads, complete_model, copy_option, flag, option)

# TrainOptions fields the sweep sets itself for each trial, and how: they are not options of the sweep.
SET_BY_SWEEP = {"out": "the trial's folder in the sweep directory", "resume": "a trial with a checkpoint resumes it",
                "overwrite": "a trial stopped before its first checkpoint starts again",
                "threads": "each trial's share of the sweep's own --threads"}
# Train options the sweep declares itself (another help text or meaning) and that are one value for every trial:
# MODEL and --data make the sweep (its folder and image geometry), --data-dir is where this machine keeps the data,
# --epochs is what re-running extends, --tensorboard is the trials' common root, --eval-n also counts --eval's images.
NOT_AXES = ("model", "data", "data_dir", "epochs", "tensorboard", "eval_n")
# Axes that were axes before every train option could be one: a single value still makes a one-value axis, so that
# sweep directories made then still match the command that made them.
ALWAYS_AXES = ("latent_dim", "width")
SEED = seed_stats.SEED  # the axis --seeds makes; the sweep's tables and figures average over it
# The most trials a sweep may have. sweep.json is read with the same bound, and at this count (with each trial's
# final and evaluation metrics, a few KB) it stays far below the 256 MB a JSON file gentool reads may have.
MAX_TRIALS = 10_000
WORKERS = Ints(1, 1024)  # --workers: processes at once
SWEEPS_ENV = "GENTOOL_SWEEPS"  # the folder default sweep directories go in (else sweeps/)


EVAL_FIELDS = {f.name: f for f in dataclasses.fields(EvalOptions)}
TRAIN_HINTS = typing.get_type_hints(TrainOptions)


def _axis(kind, name: str):
    def convert(text: str | None) -> list | None:
        return None if text is None else parse_list(text, name, kind)
    return convert


def value_kind(name: str):
    """The scalar type of TrainOptions field `name` (int, float, str, bool; dict for --param and --sampler)."""
    hint = TRAIN_HINTS[name]
    return next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))


def _param_axes(items: list[str] | None) -> dict[str, list]:
    """--param NAME=V1,V2 (repeatable) → {NAME: [V1, V2]}: a model config field, or a train switch (a bool option
    such as deterministic), whose values are then true/false."""
    axes = {}
    for spec in items or []:
        name, _ = parse_param(spec)
        switch = name in FIELDS and name not in SET_BY_SWEEP and value_kind(name) is bool
        if name in FIELDS and not switch:
            raise bad_value("--param", spec, f"a config field or a train switch ({name} is swept with {flag(name)})")
        axes.pop(name, None)  # given twice: the last one counts, as for every option (and train's --param)
        axes[name] = parse_list(spec.partition("=")[2], f"--param {name}")
        if switch and not all(isinstance(v, bool) for v in axes[name]):
            raise bad_value(f"--param {name}", spec.partition("=")[2], "true,false")
    return axes


def with_train_options(cls):
    """Class decorator (under @dataclass): every train option the class does not declare itself and the sweep does
    not set itself becomes an option of the sweep, with train's help, flags and default. A valued option takes one
    value (fixed for every trial) or a comma list (an axis of the grid); a switch (--deterministic) is fixed by its
    flag and made an axis with --param NAME=true,false. A train option added later is a sweep option at once."""
    own = cls.__dict__.get("__annotations__", {})
    for name, f in FIELDS.items():
        if name in own or name in SET_BY_SWEEP:
            continue
        meta, kind = f.metadata, value_kind(name)
        if kind in (bool, dict):  # a switch, or NAME=VALUE settings (--sampler): fixed for every trial
            cls.__annotations__[name] = kind | None
            setattr(cls, name, copy_option(name))
            continue
        cls.__annotations__[name] = list[kind] | kind | None  # a --config file may give one value or a list
        setattr(cls, name, option(
            meta["help"] + " Several, comma-separated, make an axis of the grid.", fallback=meta["fallback"],
            metavar=f"{meta['metavar'] or 'V'}[,...]", cli_type=str, convert=_axis(kind, flag(name)),
            complete=meta["complete"], check=meta["check"]))
    return cls


@dataclass(kw_only=True)
@with_train_options
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
        "Another config field to sweep, NAME=V1,V2 (repeatable; one value fixes it), or a train switch, e.g. "
        "deterministic=true,false.", default=None, metavar="NAME=V,V", flags=("--param",), cli_type=list[str],
        convert=_param_axes)
    seeds: int | None = option(
        "Train each configuration with N seeds (--seed, --seed + 1, ...: a seed axis); the results by configuration, "
        "the heat map and the report then show each metric's mean ± standard deviation over the seeds and mark "
        "the configurations within noise of the best.", metavar="N", check=Ints(1, MAX_TRIALS))
    epochs: int = option("Epochs per trial (re-running with more continues finished trials).", default=10,
                         metavar="N", check=POSITIVE)
    tensorboard: str | None = option(
        "Log every trial to TensorBoard under one root, one folder per trial, so that `tensorboard --logdir ROOT` "
        "compares them (needs pip install 'gentool[tensorboard]'). Alone: ROOT is SWEEP_DIR/tensorboard; "
        "--tensorboard DIR: ROOT is DIR (give MODEL first: a word right after --tensorboard is its DIR).",
        metavar="[DIR]", bare="auto")
    workers: int = option("Trials run at once, each in its own process with a share of the CPU threads (at most "
                          "the sweep's threads: --threads, else the cores it may use).",
                          default=1, metavar="W", check=WORKERS)
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
        for name in self.train_options():  # a --config file's single value is a list of one
            value = getattr(self, name)
            if value is not None and not isinstance(value, (list, bool)):
                setattr(self, name, [value])

    @classmethod
    def train_options(cls) -> list[str]:
        """The train options this sweep takes as value lists (a value or an axis): every one it does not set itself
        or declare as a single value, except the switches (true/false flags) and NAME=VALUE settings (--sampler)."""
        return [name for name in FIELDS if name not in SET_BY_SWEEP and name not in NOT_AXES
                and name != "params" and value_kind(name) not in (bool, dict)]

    def _lists(self) -> dict[str, list]:
        """Every train option given as a value list, with --seeds turned into the seed axis."""
        lists = {name: getattr(self, name) for name in self.train_options() if getattr(self, name) is not None}
        if self.seeds is not None:
            if not (isinstance(self.seeds, int) and not isinstance(self.seeds, bool) and 1 <= self.seeds <= MAX_TRIALS):
                raise bad_value("--seeds", self.seeds, f"a number of seeds from 1 to {MAX_TRIALS:,}")
            if len(lists.get(SEED) or [0]) > 1:
                raise UsageError("--seeds: not with a list of --seed values; give one of them")
            first = (lists.get(SEED) or [FIELDS[SEED].metadata["fallback"]])[0]
            lists[SEED] = list(range(first, first + self.seeds))
        return lists

    def axes(self) -> dict[str, list]:
        """The grid's axes in order: --latent-dim, --width, the other train options given several values (--seeds
        too), each --param; the seed axis last, so that one configuration's seeds are neighbours. Refused before
        anything is built when the grid has more than MAX_TRIALS trials."""
        lists = self._lists()
        varied = {name: values for name, values in lists.items() if len(values) > 1 and name != SEED}
        axes = {**{name: lists[name] for name in ALWAYS_AXES if name in lists}, **varied, **self.params}
        if len(lists.get(SEED) or ()) > 1:
            axes[SEED] = lists[SEED]
        if not axes:
            raise UsageError("--latent-dim/--width/--param/--seeds: nothing to sweep; give at least one list of values "
                             "(any train option takes one, e.g. --lr 0.001,0.0003)")
        for name, values in axes.items():  # a file's lists are checked here (the command line's when parsed)
            if len(set(map(repr, values))) != len(values):
                raise bad_value(self._flag(name), values, "a list without repeated values")
        count = math.prod(len(values) for values in axes.values())
        if count > MAX_TRIALS:
            sizes = " × ".join(f"{len(v):,} {self._flag(name)}" for name, v in axes.items())
            raise UsageError(f"{sizes} values make {count:,} trials; a sweep has at most {MAX_TRIALS:,}")
        for name in self.params:
            if name in FIELDS and getattr(self, name) is not None:
                raise ConfigError(name, f"also given as {flag(name)} (in a --config file: {name}); give one of "
                                        f"them", section=PARAM)
        return axes

    def _flag(self, name: str) -> str:
        """The option that gave axis `name`."""
        return f"--param {name}" if name in self.params else "--seeds" if name == SEED and self.seeds else flag(name)

    def fixed(self) -> dict:
        """The train options given one value for every trial: value lists of one (not an axis) and switches."""
        lists, axes = self._lists(), self.axes()
        switches = {name: getattr(self, name) for name in FIELDS if name not in SET_BY_SWEEP and name != "params"
                    and value_kind(name) in (bool, dict) and getattr(self, name) not in (None, {})}  # params: axes
        return {**{name: values[0] for name, values in lists.items() if name not in axes}, **switches}

    def options(self) -> dict:
        """What every trial shares that makes the sweep what it is (another value is another sweep): the fixed train
        options a resumed run may not change (resume rule fixed or restored). Options not given are left out; a
        manifest is compared with their fallbacks filled in (sweep.differences)."""
        return {name: value for name, value in self.fixed().items() if RESUME_RULES[name] in (FIXED, RESTORED)}

    def validate(self) -> None:
        if not self.model:
            raise UsageError("MODEL: missing; expected a model name (see `gentool models`)")
        if not self.data:
            raise UsageError("--data: missing; expected mnist, cifar10, mnist-sample or a folder of images")
        if self.workers < 1:
            raise bad_value("--workers", self.workers, WORKERS.accepted())
        check_threads(self.threads)
        threads = self.threads or usable_cores() or cores()  # its CPU affinity, else the machine's cores
        if self.workers > threads:  # each worker is a process holding torch, the data and a model (0.5 GB or more)
            given = "--threads gives" if self.threads else "this process may use"
            raise bad_value("--workers", self.workers, f"at most {threads} (each worker runs on one thread or more of "
                                                       f"the {threads} {given}; more workers only share them, each "
                                                       f"taking its own memory)")
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

    def runtime(self) -> dict:
        """What may change from one invocation to the next, passed to every trial's training: the other fixed train
        options, the sweep's own single values (--data-dir, --epochs, --tensorboard, --eval-n) and evaluation."""
        train = {name: value for name, value in self.fixed().items() if RESUME_RULES[name] not in (FIXED, RESTORED)}
        own = {name: getattr(self, name) for name in NOT_AXES if name not in ("model", "data")}
        return {**train, **own, "eval": self.evaluate, "extractor": self.extractor,
                "extractor_weights": self.extractor_weights}
