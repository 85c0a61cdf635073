"""What `gentool train` accepts: one keyword-only dataclass that is the single place each option is declared, with
its help text, its default and what a resumed run does with it. The CLI builds the command's options from it,
`gentool.resume` reads the resume rules from it, and a config-file loader can fill it.

Imports nothing heavy: `gentool train --help` reads this module without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import ClassVar

from gentool.checks import MAX_COUNT, MAX_SEED, Ints, Numbers, Words, check_options, choice
from gentool.errors import GEOMETRY, OPTION, PARAM, SAMPLER, ConfigError, GentoolError, UsageError
from gentool.models.fields import GEOMETRY_FIELDS, MAX_LATENT, MAX_SIDE  # noqa: F401 (MAX_SIDE: imported from here)

# What a resumed run does with an option (the `resume` entry of each field's metadata):
FIXED = "fixed"  # part of what the run is; a resume may not change it (a different value is a usage error)
RESTORED = "restored"  # a data option: the run's recorded value unless given again; a different one is reported
KEPT = "kept"  # how the run trains on: the recorded value unless given again (changing it is normal)
FREE = "free"  # about this invocation only (machine, time budget, output): never taken from the run

AUTO = "auto"  # --resume auto
EVAL_N = 2000  # generated images scored by --eval-every (and by sweep --eval)
# Model config fields that have an option of their own; every other one is a --param.
MODEL_SETTINGS = ("latent_dim", "width", "lr", "batch_size")
# What a run's config.json does not pass on when it is used as --config: where and how that run was started.
NOT_RERUN = ("out", "resume", "overwrite")


# What the options accept (besides the checks of their type, see gentool.checks).
MAX_BATCH, MAX_WIDTH, MAX_MINUTES = 1 << 16, 64.0, 1e7  # model configs check the same
MINUTES = f"a number of minutes above 0, up to {MAX_MINUTES:,.0f}"  # --max-minutes (train's, distill's)
MIN_EVAL_N, MAX_EVAL_N = 10, 100_000  # generated images a score is made from (evaluate's --n, --eval-n)
POSITIVE = Ints(1, MAX_COUNT)
EVERY = Ints(0, MAX_COUNT, f"an integer from 0 (off) to {MAX_COUNT:,}")
SEED = Ints(0, MAX_SEED)
MAX_THREADS = 4096  # torch takes any count; more threads than this is no machine's
THREADS = Ints(1, MAX_THREADS, f"a number of threads from 1 to {MAX_THREADS:,}")
DEVICE = Words(r"auto|cpu|cuda(:[0-9]{1,3})?|mps(:0)?", "auto, cpu, cuda, cuda:N or mps")
PRECISION = choice("auto", "fp32", "bf16", "fp16")


def option(help: str, *, default=None, fallback=None, resume: str = FREE, metavar: str | None = None,
           flags: tuple[str, ...] = (), argument: bool = False, cli_type=None, convert=None, complete=None,
           required: bool = False, bare=None, check=None):
    """A dataclass field for an option. `default` is the field's value when the option is not given (None for
    options a resume restores, so that "not given" is visible); `fallback` is what a new run uses then.
    `flags`, `metavar`, `argument`, `cli_type`, `convert` (CLI value → field value) and `complete` (the shell
    completion's candidates for a partial value) shape the command line; a `required` field has no default;
    `bare` is the value of an option whose value may be left out (`--tensorboard` alone); `check(name, value)`
    refuses a value the option cannot take (see gentool.checks), before any work."""
    meta = {"help": help, "fallback": fallback, "resume": resume, "metavar": metavar, "flags": flags,
            "argument": argument, "cli_type": cli_type, "convert": convert, "complete": complete, "bare": bare,
            "check": check}
    if required:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def complete_model(incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of MODEL: the model names with their descriptions, read from source (nothing imported)."""
    from gentool.registry import describe_models

    return [(m.name, m.description) for m in describe_models() if m.name.startswith(incomplete.lower())]


def _params(items) -> dict:
    from gentool.parsing import parse_param

    return dict(parse_param(p) for p in items or [])


def _sampler(items) -> dict:
    from gentool.parsing import parse_param

    return dict(parse_param(p, "--sampler") for p in items or [])


@dataclass(kw_only=True)
class TrainOptions:
    """Everything `gentool train` accepts; None means "not given" (the model's default, or the run's own value
    when resuming)."""

    model: str | None = option(
        "Model name (see `gentool models`). Required for a new run; with --resume it may be left out (the run "
        "knows its model).", metavar="MODEL", argument=True, resume=FIXED, complete=complete_model)
    data: str | None = option(
        "mnist, cifar10, mnist-sample, or a folder of PNG/JPEG images (class subfolders give labels). Required for "
        "a new run.", metavar="NAME|DIR", resume=FIXED)
    data_dir: str | None = option(
        "Folder holding MNIST (its four idx files, directly or under MNIST/raw/) or CIFAR-10 "
        "(cifar-10-batches-py/). Default: $GENTOOL_DATA, else ~/.cache/gentool/data, where a missing data set is "
        "downloaded.", metavar="DIR", resume=RESTORED)
    epochs: int | None = option("Total epochs (with --resume: the total, not more).", fallback=10, metavar="N",
                                resume=KEPT, check=POSITIVE)
    batch_size: int | None = option("Batch size (default: the model's).", metavar="B", resume=FIXED,
                                    check=Ints(1, MAX_BATCH))
    lr: float | None = option("Learning rate (default: the study's for the model).", metavar="LR", resume=FIXED,
                              check=Numbers(0, 1e6, open_low=True))
    latent_dim: int | None = option("Latent size (default: the study's, per model and data).", metavar="D",
                                    resume=FIXED, check=Ints(1, MAX_LATENT))
    width: float | None = option("Multiplier for every hidden width/channel count (1 = the study's network).",
                                 metavar="W", resume=FIXED, check=Numbers(0, MAX_WIDTH, open_low=True))
    params: dict = option("Any other config field (repeatable), e.g. --param clip=0.02.", default=None,
                          metavar="NAME=VALUE", flags=("--param",), resume=FIXED, cli_type=list[str],
                          convert=_params)
    limit: int | None = option("Train on the first N training images only.", metavar="N", resume=RESTORED,
                               check=POSITIVE)
    image_size: int | None = option("Resize image-folder data to S×S pixels.", metavar="S", resume=FIXED,
                                    check=Ints(1, MAX_SIDE))
    seed: int | None = option("Random seed; the same seed repeats a CPU run exactly.", fallback=0, metavar="S",
                              resume=RESTORED, check=SEED)
    device: str = option("auto (cuda, then mps, then cpu), cpu, cuda or mps.", default="auto",
                         metavar="auto|cpu|cuda|mps", check=DEVICE)
    out: str | None = option(
        "Run directory (default: $GENTOOL_RUNS/<model>-<data>-<time>, with $GENTOOL_RUNS unset: runs/). With --resume auto: the run to continue, or to "
        "start when it has no checkpoint yet.", metavar="DIR")
    resume: str | None = option(
        "Continue the run in RUN (its directory or a checkpoint) up to --epochs in total, with its own model and "
        "data options. 'auto' continues the run in --out when it has a checkpoint and starts it there otherwise: "
        "one command line for every start and restart of a batch job.", metavar="RUN|CKPT|auto")
    overwrite: bool = option("Replace the run in --out (only gentool's own files in it are removed).",
                             default=False)
    checkpoint_every: int | None = option("Also keep epoch_NNNN.safetensors every K epochs (0: never).",
                                          fallback=10, metavar="K", resume=KEPT, check=EVERY)
    checkpoint_minutes: float | None = option(
        "Also save the run every M minutes of training (wall clock; mid-epoch if need be): last.safetensors, which "
        "--resume continues, and a copy step_NNNNNNNN.safetensors that is kept (0: never). The copies add up, one a "
        "checkpoint's size per interval: the start checks the disk holds them when --max-minutes bounds the run, "
        "and a copy is skipped, with a warning, when the disk runs short. Bounds what a killed batch job loses; "
        "gives checkpoints to score against time.", fallback=0, metavar="M", resume=KEPT,
        check=Numbers(0, MAX_MINUTES, what=f"a number of minutes from 0 (off) to {MAX_MINUTES:,.0f}"))
    sample_every: int | None = option("Write samples/epoch_NNNN.png every K epochs (0: never); once grids have "
                                      "taken 30 s, only while they take at most a quarter of the run (the last "
                                      "epoch's always).", fallback=1,
                                      metavar="K", resume=KEPT, check=EVERY)
    ema: float | None = option(
        "Keep an exponential moving average of the sampling network's weights (generator, decoder, denoiser) with "
        "this DECAY, e.g. 0.999; sample and evaluate use it by default. Default: none, except for families that "
        "keep one (flow, ddpm); 0 turns it off.", metavar="DECAY", resume=FIXED,
        check=Numbers(0, 1, what="0 (off) or a number in (0, 1) such as 0.999"))
    max_minutes: float | None = option(
        "Stop after this much training time (wall clock) or at --epochs (default 10), whichever comes first, saving "
        "a checkpoint that --resume continues.",
        metavar="M", check=Numbers(0, MAX_MINUTES, open_low=True, what=MINUTES))
    precision: str | None = option(
        "auto (bf16 where this machine runs it measurably faster, by a short probe cached per CPU; else fp32; "
        "$GENTOOL_AUTO_PRECISION=fp32|bf16 fixes what auto picks), fp32 (safe everywhere), bf16 (autocast; CPUs "
        "with AVX512-BF16/AMX, recent GPUs) or fp16 (CUDA/MPS, with gradient scaling). The choice and why are in "
        "config.json.", fallback="auto", metavar="auto|fp32|bf16|fp16", resume=KEPT, check=PRECISION)
    channels_last: bool | None = option(
        "Channels-last memory format (default: on for convolutional networks, off on MPS).",
        flags=("--channels-last/--no-channels-last",))
    compile: bool = option(
        "Compile the networks with torch.compile (slow first steps; needs a C++ compiler on CPU, triton on CUDA).",
        default=False)
    threads: int | None = option("CPU threads for this process (default: torch's, one per core).", metavar="N",
                                 check=THREADS)
    skip_nonfinite: bool | None = option(
        "Drop optimizer steps whose gradients are NaN/Inf instead of stopping the run.", fallback=False,
        flags=("--skip-nonfinite/--no-skip-nonfinite",), resume=KEPT)
    eval_every: int | None = option(
        "Every K epochs score samples (FID, modes) into metrics.json and keep best.safetensors (0: never).",
        fallback=0, metavar="K", resume=KEPT, check=EVERY)
    eval_n: int | None = option("Samples scored by --eval-every.", fallback=EVAL_N, metavar="N", resume=KEPT,
                                check=Ints(MIN_EVAL_N, MAX_EVAL_N))
    tensorboard: str | None = option(
        "Log to TensorBoard (needs pip install 'gentool[tensorboard]'): epoch records, losses every few steps, the "
        "sample grids, --eval-every's metrics, the config as hyperparameters. Alone: into RUN_DIR/tensorboard; "
        "--tensorboard DIR: into a folder named after the run inside DIR, so that `tensorboard --logdir DIR` "
        "compares runs (give MODEL "
        "first: a word right after --tensorboard is its DIR). A resumed run keeps logging where it did.",
        metavar="[DIR]", bare="auto", resume=KEPT)
    deterministic: bool | None = option(
        "Use only deterministic algorithms (torch.use_deterministic_algorithms; on CUDA also cuDNN's deterministic "
        "kernels and no autotuning, and cuBLAS's fixed workspace): slower on GPUs, same weights for the same seed "
        "and machine. Recorded in config.json.", fallback=False, flags=("--deterministic/--no-deterministic",),
        resume=KEPT)
    heldout: int | None = option(
        "Held-out images on which a family with likelihood terms (vae, cvae) records its loss terms after each "
        "epoch, as heldout_TERM (default: min(2000, a tenth of the training images); 0: none).", metavar="N",
        resume=KEPT, check=EVERY)
    stop_on_divergence: bool | None = option(
        "End the run cleanly on a divergence (a loss far outside its recent range, FID doubling from its best or "
        "stuck worse than noise's).", fallback=False, flags=("--stop-on-divergence/--no-stop-on-divergence",),
        resume=KEPT)

    command: ClassVar[str] = "train"

    # The sampler's settings, for families that declare them (`gentool models --check` lists each family's), used
    # for the epoch grids and --eval-every; the family checks them and fills in its defaults. Any declared setting
    # is --sampler NAME=VALUE; the built-in families' three also have a flag of their own.
    steps: int | None = option(
        "Sampler steps of an iterative family (flow, ddpm): fewer is faster, more is closer to the exact sampler "
        "(default: the family's).", metavar="N", resume=KEPT, check=Ints(1, 100_000))  # each family narrows these
    solver: str | None = option(
        "Sampler of an iterative family: flow euler|heun, ddpm ddim|ddpm (default: the family's).", metavar="NAME",
        resume=KEPT)
    guidance: float | None = option(
        "Classifier-free guidance weight of a class-conditional iterative family (cflow, cddpm): 1 = plain "
        "conditional, larger follows the class more closely.", metavar="W", resume=KEPT, check=Numbers(0, 1000))
    sampler: dict = option(
        "Any sampler setting the model declares (repeatable), e.g. --sampler steps=8 (each model's: below, and in "
        "`gentool models`).", default=None, metavar="NAME=VALUE", flags=("--sampler",), resume=KEPT, cli_type=list[str],
        convert=_sampler)

    @property
    def sample_options(self) -> dict:
        return sampler_settings(self)

    def __post_init__(self):
        if self.params is None:
            self.params = {}
        fold_sampler(self)

    @classmethod
    def from_run_record(cls, record: dict, where: str) -> dict:
        """The settings that re-run the run a config.json describes (`--config RUN/config.json`): the options it
        recorded (not its --out, --resume or --overwrite) and its model's config, pinned field by field, so that
        the same networks are built even by a gentool whose defaults have changed since."""
        options, config = record.get("options"), record.get("config")
        if not (isinstance(options, dict) and isinstance(config, dict) and isinstance(record.get("model"), str)):
            raise UsageError(f"{where}: not a run's config.json (expected its model, options and config)")
        values = {k: v for k, v in options.items() if k not in NOT_RERUN and v is not None}
        params = values.get("params") if isinstance(values.get("params"), dict) else {}
        for key, value in config.items():
            if key in MODEL_SETTINGS:
                values[key] = value
            elif key not in GEOMETRY_FIELDS:
                params[key] = value
        return {**values, "model": record["model"], "params": params}

    def printable(self) -> dict:
        """The settings `--print-config` writes: for a new run every value it will use, the model's own defaults
        included (latent size, width, learning rate, batch size, EMA, sampler settings); for a resume the values
        given (the run supplies the rest)."""
        self.validate()
        if self.resume is not None:
            return dataclasses.asdict(self)
        values = dataclasses.asdict(self.with_fallbacks())
        if self.model and self.data:
            defaults = model_defaults(self)
            values["sampler"] = {**defaults.pop("sampler"), **values["sampler"]}
            values.update({k: v for k, v in defaults.items() if values.get(k) is None})
        return values

    def given(self) -> dict:
        """The options set (not None, not empty), by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, {})}

    def with_fallbacks(self) -> "TrainOptions":
        """A copy in which every option not given has the value a new run uses."""
        return dataclasses.replace(self, **{f.name: f.metadata["fallback"] for f in fields(self)
                                            if getattr(self, f.name) is None and f.metadata["fallback"] is not None})

    def check_new_run(self) -> None:
        """A new run needs its model and data named."""
        if not self.model:
            raise UsageError("MODEL: missing; expected a model name (see `gentool models`), or --resume RUN to "
                             "continue a run")
        if not self.data:
            raise UsageError("--data: missing; expected mnist, cifar10, mnist-sample or a folder of images")

    def validate(self) -> None:
        """Reject option values before any work starts (options not given are skipped): each its declared check
        (which the command line applied already; a resume's restored values and the library's callers' not), then
        how they go together."""
        check_options(self, field_flag)
        for name in self.params:  # a config field with its own option (--latent-dim, --lr, ...) is set only there
            if name in FIELDS:
                raise ConfigError(name, f"set it with {flag(name)} (in a --config file: {name} = …, outside "
                                        f"[params])", section=PARAM)
        if self.resume is None:
            self.check_new_run()
            if not self.out:  # where the run will go ($GENTOOL_RUNS), refused before any work if no folder can be
                from gentool.environment import runs_folder

                runs_folder()
        if self.resume is not None and self.overwrite:
            raise UsageError("--overwrite: not allowed with --resume (a resumed run keeps its files)")
        if self.resume == AUTO and not self.out:
            raise UsageError("--resume auto: needs --out DIR, the run directory to continue or start")
        if self.ema:  # 0 turns a family's default average off
            from gentool.ema import check_decay

            check_decay(self.ema)


def check_threads(threads) -> None:
    """--threads (train's and sweep's): unset, or a number of threads from 1 to MAX_THREADS."""
    if threads is not None:
        THREADS("--threads", threads)


def sampler_settings(opts) -> dict:
    """The sampler settings an options object was given (--steps, --solver, --guidance and each --sampler), by name;
    the model's family checks them and fills in its defaults."""
    given = {name: getattr(opts, name) for name in SAMPLER_SETTINGS}
    return {**opts.sampler, **{k: v for k, v in given.items() if v is not None}}


def fold_sampler(opts) -> None:
    """Move a --sampler setting that has a flag of its own (--sampler steps=8) to that field, so that a setting has
    one place (and a resume that restores one and is given the other sees one value); given both ways, the two must
    agree."""
    opts.sampler = dict(opts.sampler or {})
    for name in SAMPLER_SETTINGS:
        if name in opts.sampler:
            value, own = opts.sampler.pop(name), getattr(opts, name)
            if own is not None and own != value:
                raise UsageError(f"--sampler {name}: got {value!r}, and {flag(name)} {own!r}; give it once")
            setattr(opts, name, value)


def cli_message(exc: GentoolError) -> str:
    """An error's line as the command line says it: a model's ConfigError names the option that sets the field."""
    if not isinstance(exc, ConfigError):
        return str(exc)
    in_file = exc.file_name or (lambda section, name: None)
    return exc.message(lambda section, name: in_file(section, name) or option_name(section, name))


def option_name(section: str, name: str) -> str:
    """The command-line option that sets what a model's ConfigError names (the command line's translation of a
    field into a flag): --data for the image geometry, a config field's own option (--lr, --latent-dim) or
    --param NAME; a sampler setting's own flag (--steps) or --sampler NAME; a training option's flag."""
    if section == SAMPLER:
        return "--class" if name == "labels" else flag(name) if name in SAMPLER_SETTINGS else f"--sampler {name}"
    if section == OPTION:
        return flag(name)
    if section == PARAM:
        return f"--param {name}"
    if name == GEOMETRY or name in GEOMETRY_FIELDS:
        return "--data"
    return flag(name) if name in MODEL_SETTINGS else f"--param {name}"


def copy_option(name: str, default=None, declared: dict | None = None, help: str | None = None):
    """TrainOptions' field `name` (or another command's, from `declared`, its fields by name) for another command
    that takes the same option: same help (unless `help` words it for that command), flags and checks, `default`
    when not given. (Fields cannot be shared between dataclasses.)"""
    meta = (declared or FIELDS)[name].metadata
    return option(help or meta["help"], default=default, metavar=meta["metavar"], flags=meta["flags"],
                  cli_type=meta["cli_type"], convert=meta["convert"], complete=meta["complete"],
                  check=meta["check"])


def flag(name: str) -> str:
    """The command-line name of a TrainOptions field ("data_dir" → "--data-dir", "model" → "MODEL")."""
    return field_flag(FIELDS[name])


def field_flag(f: dataclasses.Field) -> str:
    """The command-line name of an options dataclass's field."""
    meta = f.metadata
    if meta["argument"]:
        return meta["metavar"]
    return meta["flags"][0].split("/")[0] if meta["flags"] else "--" + f.name.replace("_", "-")


FIELDS = {f.name: f for f in fields(TrainOptions)}
SAMPLER_SETTINGS = ("steps", "solver", "guidance")  # declared in TrainOptions, shared by sample and evaluate
# The one list of what a resume may change, by rule (see FIXED, RESTORED, KEPT, FREE above).
RESUME_RULES = {name: f.metadata["resume"] for name, f in FIELDS.items()}


KNOWN_SIZES = {"mnist": 60_000, "cifar10": 50_000, "mnist-sample": 2_000}  # training images of the built-in data


def model_defaults(opts: TrainOptions) -> dict:
    """What a new run of `opts.model` on `opts.data` takes where an option is not given: its family's config
    (latent size, width, learning rate, batch size: before a small data set shrinks the batch), EMA decay and
    sampler settings (those without a flag of their own under "sampler"). Imports the model (torch)."""
    from gentool.data import peek_geometry
    from gentool.registry import get_entry

    cls = get_entry(opts.model).cls
    config = cls.config_class.create(peek_geometry(opts.data, opts.image_size), opts.latent_dim, opts.width,
                                     lr=opts.lr, batch_size=opts.batch_size, **opts.params)
    found = {name: getattr(config, name) for name in MODEL_SETTINGS if hasattr(config, name)}
    size = KNOWN_SIZES.get(opts.data.lower())
    images = min(filter(None, (size, opts.limit)), default=None)  # a folder's size is known once it is read
    if opts.batch_size is None:  # as a run picks it: some families shrink the batch for a small data set
        found["batch_size"] = config.batch_size_for(images) if images else None
    found["ema"] = cls.default_ema or 0.0
    settings = {o.name: o.default for o in cls.sample_options}
    found.update({name: settings.pop(name) for name in SAMPLER_SETTINGS if name in settings})
    return {**found, "sampler": settings}
