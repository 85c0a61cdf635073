"""A training run's state and how it starts: the options `gentool train` accepts, the session (model, optimizers,
data, run directory, EMA, place among ranks), a fresh run or a resumed one, and when the loop stops."""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import gentool
from gentool import rundir
from gentool.checkpoint import (
    checkpoint_size_hint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from gentool.data import ImageData, load_dataset
from gentool.device import prepare, seed_everything
from gentool.distributed import (
    SINGLE,
    World,
    broadcast_text,
    max_over_ranks,
    sync_state,
)
from gentool.ema import EMA, check_decay
from gentool.errors import UsageError, bad_value
from gentool.fileio import atomic_write_json, read_json
from gentool.guards import GuardState, StopSignals
from gentool.models.base import GenerativeModel
from gentool.registry import get_entry


@dataclass
class TrainOptions:
    """Everything `gentool train` accepts; None means "the model's default"."""

    model: str
    data: str | None = None
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    latent_dim: int | None = None
    width: float | None = None
    params: dict = field(default_factory=dict)
    limit: int | None = None
    image_size: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    checkpoint_every: int = 10
    sample_every: int = 1
    resume: str | None = None
    overwrite: bool = False
    skip_nonfinite: bool = False
    eval_every: int = 0
    eval_n: int = 2000
    stop_on_divergence: bool = False
    ema: float | None = None  # None: the family's default (flow, ddpm: on); 0: off
    sample_options: dict = field(default_factory=dict)  # the sampler's settings for grids and --eval-every
    max_minutes: float | None = None
    precision: str = "fp32"
    channels_last: bool | None = None  # None: on for convolutional networks
    compile: bool = False
    threads: int | None = None

    def validate(self) -> None:
        """Reject option values before any work starts."""
        _positive("--epochs", self.epochs)
        for name, value in (("--limit", self.limit), ("--image-size", self.image_size)):
            if value is not None:
                _positive(name, value)
        for name, value in (("--checkpoint-every", self.checkpoint_every), ("--sample-every", self.sample_every)):
            if not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
                raise bad_value(name, value, "an integer ≥ 0 (0 turns it off)")
        if not self.resume and not self.data:
            raise UsageError("--data: missing; expected mnist, cifar10, mnist-sample or a folder of images")
        if self.resume and self.out:
            raise UsageError("--out: not allowed with --resume (a resumed run stays in its own directory)")
        if self.ema:  # 0 turns a family's default average off
            check_decay(self.ema)
        if self.threads is not None and not (isinstance(self.threads, int) and 1 <= self.threads <= 4096):
            raise bad_value("--threads", self.threads, "a positive number of threads")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and 0 < self.max_minutes <= 10**7):
            raise bad_value("--max-minutes", self.max_minutes, "a positive number of minutes")
        from gentool.metrics.watch import (
            check_watch_options,  # the watch imports this module (TrainHook)
        )

        check_watch_options(self)


MAX_COUNT = 10**9  # no epoch count, image count or pixel size is sensibly larger


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise bad_value(name, value, f"a positive integer up to {MAX_COUNT:,}")


@dataclass
class Session:
    """A run in progress: the model and its optimizers, the data and where results go."""

    opts: TrainOptions
    model: GenerativeModel
    optimizers: dict
    data: ImageData
    run_dir: Path
    source: str
    epoch: int = 0
    step: int = 0
    history: dict = field(default_factory=lambda: {"epochs": [], "events": []})
    stop_reason: str | None = None
    batch: int = 0  # batches already done in the epoch in progress (a run interrupted mid-epoch)
    partial: dict = field(default_factory=dict)  # that epoch's running sums, counts, images seen and seconds
    signals: StopSignals | None = None
    guard: GuardState = field(default_factory=lambda: GuardState(False))
    ema: EMA | None = None
    world: World = SINGLE
    deadline: float | None = None  # time.monotonic() at which --max-minutes ends the run
    sample_settings: dict = field(default_factory=dict)  # the sampler's, for epoch grids and --eval-every

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def signum(self) -> int:
        """The signal that stopped the run (SIGTERM for a rank stopped because another rank was signalled)."""
        return (self.signals and self.signals.signum) or signal.SIGTERM


    def save(self, path: Path) -> None:
        """Write a checkpoint of the current state (weights, optimizers, EMA, RNG, counters) to `path`, atomically."""
        save_checkpoint(path, self.model, self.optimizers, self.run_state(), self.data_meta(), self.source, self.ema)

    def sampling(self):
        """A context in which the model samples as `gentool sample` would: with the EMA weights when kept."""
        return self.ema.applied(self.model) if self.ema else nullcontext(self.model)

    def data_meta(self) -> dict:
        return {"name": self.data.name, "source": self.opts.data, "geometry": self.data.geometry.to_dict(),
                "pixel_range": list(self.model.pixel_range), "class_names": self.data.class_names}

    def run_state(self) -> dict:
        o = self.opts
        options = {"data": o.data, "limit": o.limit, "image_size": o.image_size, "seed": o.seed,
                   "checkpoint_every": o.checkpoint_every, "sample_every": o.sample_every,
                   "sample_options": o.sample_options}
        return {"epoch": self.epoch, "step": self.step, "seed": o.seed, "options": options,
                "stopped": self.stop_reason, "batch": self.batch, "partial": self.partial}


# Why the loop stops, in order of precedence (every rank takes the highest any rank has).
CONTINUE, TIME_UP, HOOK_STOP, SIGNALLED = 0, 1, 2, 3


def stop_code(session: Session, time_up: bool = True, hook_stop: bool = False) -> int:
    """Whether the loop stops here and why, agreed between ranks so they all stop at the same step."""
    code = (SIGNALLED if session.signals and session.signals.signum else HOOK_STOP if hook_stop
            else TIME_UP if time_up and session.out_of_time() else CONTINUE)
    if not session.world.enabled:
        return code
    return max_over_ranks(code, session.world, session.model.device)


def _load_data(opts: TrainOptions) -> ImageData:
    return load_dataset(opts.data, opts.data_dir, train=True, image_size=opts.image_size, limit=opts.limit)


def new_session(opts: TrainOptions, device: torch.device, world: World = SINGLE) -> Session:
    """Build data, model, optimizers and an empty run directory for a fresh run (rank 0 alone writes)."""
    entry = get_entry(opts.model)
    data = _load_data(opts)
    overrides = {"lr": opts.lr, "batch_size": opts.batch_size, **opts.params}
    config = entry.cls.config_class.create(data.geometry, opts.latent_dim, opts.width, **overrides)
    seed_everything(opts.seed)
    model = entry.cls(config)
    settings = model.sample_settings(opts.sample_options)  # a bad --steps fails before the run directory exists
    prepare_model(model, opts, device)
    run_dir = Path(opts.out) if opts.out else rundir.default_run_dir(entry.name, data.name)
    run_dir = Path(broadcast_text(str(run_dir), world, device))  # default names hold a timestamp: take rank 0's
    if world.main:
        rundir.prepare_new(run_dir, opts.overwrite)
        rundir.check_writable(run_dir, 4 * checkpoint_size_hint(model))
    sync_state(model, world)
    session = Session(opts, model, model.build_optimizers(), data, run_dir, entry.source, world=world,
                      sample_settings=settings)
    if opts.ema is None:  # recorded in config.json as the decay used
        opts.ema = model.default_ema
    session.ema = EMA(model, opts.ema) if opts.ema else None
    if world.main:
        config_json = {"gentool_version": gentool.__version__, "model": entry.name, "model_source": entry.source,
                       "config": config.to_dict(), "options": asdict(opts), "data": session.data_meta()}
        atomic_write_json(run_dir / rundir.CONFIG, config_json)
        write_metrics(session)
    _seed_rank(opts.seed, world, 0)
    return session


def _seed_rank(seed: int, world: World, step: int) -> None:
    """Give ranks other than 0 their own noise stream (rank 0 keeps the single-process one)."""
    if world.rank:
        torch.manual_seed(seed * 1_000_003 + world.rank * 7_919 + step)


def resume_session(opts: TrainOptions, device: torch.device, world: World = SINGLE) -> Session:
    """Reopen a run from RUN_DIR/last.safetensors (or a given checkpoint): weights, optimizers, RNG, counters."""
    path = Path(opts.resume)
    ckpt_path = path / rundir.LAST if path.is_dir() else path
    ckpt = load_checkpoint(ckpt_path, device, arg="--resume", weights="raw")
    prepare_model(ckpt.model, opts, device)
    if world.main:
        rundir.remove_stale_temporaries(ckpt_path.parent)
    saved = ckpt.state.get("options", {})
    if opts.data is not None and opts.data != saved.get("data"):
        raise bad_value("--data", opts.data, f"the run's own data set {saved.get('data')!r} (or leave it out)")
    for key in ("data", "limit", "image_size", "seed", "checkpoint_every", "sample_every"):
        if key in saved:
            setattr(opts, key, saved[key])
    # The sampler's settings may change on resume; left out, the run keeps its own.
    if not opts.sample_options and isinstance(saved.get("sample_options"), dict):
        opts.sample_options = saved["sample_options"]
    data = _load_data(opts)
    if tuple(data.geometry.shape) != tuple(ckpt.data["geometry"][k] for k in ("channels", "height", "width")):
        raise UsageError(f"--resume: data geometry {data.geometry.shape} differs from the checkpoint's")
    optimizers = ckpt.model.build_optimizers()
    ckpt.load_optimizers(optimizers)
    restore_rng(ckpt.rng)
    session = Session(opts, ckpt.model, optimizers, data, ckpt_path.parent, ckpt.meta.get("model_source", "built-in"),
                      epoch=int(ckpt.state["epoch"]), step=int(ckpt.state["step"]),
                      batch=int(ckpt.state.get("batch", 0)), partial=ckpt.state.get("partial") or {}, world=world,
                      sample_settings=ckpt.model.sample_settings(opts.sample_options))
    _seed_rank(opts.seed, world, session.step)
    session.ema = _resumed_ema(ckpt, opts.ema)
    metrics_path = session.run_dir / rundir.METRICS
    if metrics_path.exists():
        history = read_json(metrics_path)
        history["epochs"] = [r for r in history.get("epochs", []) if r["epoch"] <= session.epoch]
        history["events"] = [e for e in history.get("events", []) if e.get("epoch", 0) <= session.epoch]
        session.history = history
    return session


def prepare_model(model: GenerativeModel, opts: TrainOptions, device: torch.device) -> None:
    """Device, precision, memory format and compilation for training (runtime settings, not saved with the run)."""
    prepare(model, device, opts.precision, opts.channels_last, opts.compile)


def _resumed_ema(ckpt, decay: float | None) -> EMA | None:
    """The run's EMA as saved (a different --ema is refused), or a new one when --ema is first given on resume."""
    saved = ckpt.ema_meta
    if saved is None:
        return EMA(ckpt.model, decay) if decay else None
    if decay is not None and decay != saved["decay"]:
        raise bad_value("--ema", decay, f"the run's own decay {saved['decay']} (or leave it out)")
    return EMA(ckpt.model, saved["decay"], ckpt.ema_tensors, saved["updates"])


def write_metrics(session: Session) -> None:
    """Rewrite metrics.json (atomically) from the session's history."""
    session.history.update({"model": session.model.name, "run_dir": str(session.run_dir)})
    atomic_write_json(session.run_dir / rundir.METRICS, session.history)

