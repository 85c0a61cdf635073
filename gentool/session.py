"""A training run's state and how it starts: the session (model, optimizers, data, run directory, EMA, place among
ranks), built for a new run or reopened from a checkpoint, and when the loop stops. Which of the two, and with what
options, is decided first by `gentool.resume.plan`."""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import torch

import gentool
from gentool import rundir
from gentool.checkpoint import (
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from gentool.couplings import is_couplings
from gentool.data import ImageData, load_dataset
from gentool.datatypes import shape_differences, shape_text
from gentool.device import PrecisionChoice, check_precision, prepare, seed_everything
from gentool.precision import host_id
from gentool.precision_check import check_run
from gentool.distributed import (
    SINGLE,
    World,
    broadcast_text,
    max_over_ranks,
    sync_state,
)
from gentool.ema import EMA
from gentool.errors import UsageError, bad_value
from gentool.fileio import atomic_copy, atomic_write_json
from gentool.guards import GuardState, StopSignals
from gentool.grids import GridShare
from gentool.history import PartialEpoch, RunHistory, state_fields
from gentool.hooks import RunView
from gentool.metrics.reference import BUILTIN, training_folder
from gentool.models.base import GenerativeModel
from gentool.progress import Reporter
from gentool.registry import get_entry, list_models
from gentool.resume import RUN_OPTIONS
from gentool.run_start import RunStart, prepare_new
from gentool.summary import check_size
from gentool.train_options import TrainOptions


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
    run: RunHistory = field(default_factory=RunHistory)  # metrics.json: the records, events and what hooks keep
    stop_reason: str | None = None
    partial: PartialEpoch | None = None  # the epoch in progress: batches done, running sums, images seen, seconds
    signals: StopSignals | None = None
    guard: GuardState = field(default_factory=lambda: GuardState(False))
    ema: EMA | None = None
    world: World = SINGLE
    deadline: float | None = None  # time.monotonic() at which --max-minutes ends the run
    next_save: float | None = None  # time.monotonic() of the next --checkpoint-minutes save
    warned: set = field(default_factory=set)  # the warnings this run has given once (rundir.room_for_copy)
    next_figures: float | None = None  # time.monotonic() at which samples/latest.png and the figures are redrawn
    sample_settings: dict = field(default_factory=dict)  # the sampler's, resolved once: epoch grids, --eval-every
    precision: PrecisionChoice = PrecisionChoice("fp32", "fp32", "given")  # resolved once, as the run started
    start: RunStart | None = None  # a new run's folder, undone unless the loop starts (`started`)
    grids: GridShare = field(default_factory=GridShare)  # the epoch grids' share of the run's time

    @property
    def batch(self) -> int:
        """Batches already done in the epoch in progress (a run resumed or stopped inside an epoch), else 0."""
        return self.partial.batch if self.partial else 0

    @property
    def history(self) -> dict:
        """The metrics.json document (`self.run.doc`): hooks add events and what they keep (best, evaluation)."""
        return self.run.doc

    @cached_property
    def view(self) -> RunView:
        """What the hooks see of this run: its values, read-only (gentool.hooks.RunView)."""
        return RunView(self)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def started(self) -> None:
        """The loop runs with its signal handlers (a Ctrl-C now saves a checkpoint): a new run's start is kept."""
        if self.start:
            self.start.keep()

    def signum(self) -> int:
        """The signal that stopped the run (SIGTERM for a rank stopped because another rank was signalled)."""
        return (self.signals and self.signals.signum) or signal.SIGTERM


    def save(self, path: Path) -> None:
        """Write a checkpoint of the current state (weights, optimizers, EMA, RNG, counters) to `path`, atomically."""
        save_checkpoint(path, self.model, self.optimizers, self.run_state(), self.data_meta(), self.source, self.ema)

    def save_timed(self) -> None:
        """The --checkpoint-minutes save that is due: last.safetensors (the state inside the epoch, as a stop
        leaves it) and its kept copy step_NNNNNNNN.safetensors. Every rank moves its schedule; rank 0 writes."""
        interval = 60 * self.opts.checkpoint_minutes
        missed = (time.monotonic() - self.next_save) // interval  # marks passed during a long step are skipped
        self.next_save += (missed + 1) * interval
        if self.world.main:
            last = self.run_dir / rundir.LAST
            self.save(last)
            if rundir.room_for_copy(last, self.opts.checkpoint_minutes, self.warned):
                atomic_copy(last, rundir.step_checkpoint(self.run_dir, self.step))

    def sampling(self):
        """A context in which the model samples as `gentool sample` would: with the EMA weights when kept."""
        return self.ema.applied(self.model) if self.ema else nullcontext(self.model)

    def data_meta(self) -> dict:
        """What the checkpoint records of the data. Couplings name the data set their teacher imitates as the
        source (what `evaluate` compares with), the teacher, and the couplings folder."""
        meta = {"name": self.data.name, "source": self.opts.data, "geometry": self.data.geometry.to_dict(),
                "pixel_range": list(self.model.pixel_range), "class_names": self.data.class_names}
        if self.opts.data_dir:  # where `evaluate CKPT` finds the real images again without --data-dir
            meta["data_dir"] = str(Path(self.opts.data_dir).expanduser().absolute())
        return {**meta, **self.data.origin} if self.data.origin else meta

    def run_state(self) -> dict:
        o = self.opts
        options = {name: getattr(o, name) for name in RUN_OPTIONS}  # what a resume takes from the run
        return {"epoch": self.epoch, "step": self.step, "seed": o.seed, "options": options,
                "stopped": self.stop_reason, **state_fields(self.partial),
                "precision": {"used": self.precision.used, "host": host_id()}}


# Why the loop stops, in order of precedence (every rank takes the highest any rank has).
CONTINUE, TIME_UP, HOOK_STOP, SIGNALLED = 0, 1, 2, 3


def stop_code(session: Session, time_up: bool = True, hook_stop: bool = False) -> int:
    """Whether the loop stops here and why, agreed between ranks so they all stop at the same step."""
    code = (SIGNALLED if session.signals and session.signals.signum else HOOK_STOP if hook_stop
            else TIME_UP if time_up and session.out_of_time() else CONTINUE)
    if not session.world.enabled:
        return code
    return max_over_ranks(code, session.world, session.model.device)


def _load_data(opts: TrainOptions, model_class, reporter: Reporter | None) -> ImageData:
    """The training images: a data set's training split, an image folder's training part (`training_folder`), or
    a teacher's couplings (`gentool distill`), which only families that take them train on."""
    data, part = opts.data, None
    if data.lower() not in BUILTIN and not is_couplings(data):
        data, part = training_folder(data)
    images = load_dataset(data, opts.data_dir, train=True, image_size=opts.image_size, limit=opts.limit, part=part,
                          reporter=reporter)
    if images.latents is not None and not model_class.takes_couplings:
        takes = ", ".join(e.name for e in list_models() if getattr(e.cls, "takes_couplings", False))
        raise UsageError(f"--data: {opts.data} holds couplings (a teacher's noise and samples), which "
                         f"{model_class.name} cannot train on; families that can: {takes}")
    return images


def check_batch(model: GenerativeModel, batch_size: int, n_images: int) -> None:
    """A network with BatchNorm needs at least two images in a batch (one has no spread to normalise by): refuse a
    --batch-size or --limit that would give it one, before the run starts."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if batch_size < 2:
        raise bad_value("--batch-size", batch_size, f"at least 2 for {model.name} (its BatchNorm layers need two "
                                                    f"images per batch)")
    if n_images < 2:
        raise bad_value("--limit", n_images, f"at least 2 images per process for {model.name} (its BatchNorm layers "
                                             f"need two images per batch)")


def new_session(opts: TrainOptions, device: torch.device, precision: PrecisionChoice, world: World = SINGLE,
                reporter: Reporter | None = None) -> Session:
    """Build data, model, optimizers and an empty run directory for a fresh run (rank 0 alone writes). A start
    that fails or is interrupted before the loop runs (`Session.started`) puts the --out path back as it was: no
    dead-end run directory is left, and no run it would have replaced is lost. `precision`: --precision as
    `gentool.train.train` resolved it, once per run (auto's check of this model may still switch it: check_run)."""
    entry = get_entry(opts.model)
    data = _load_data(opts, entry.cls, reporter)
    overrides = {"lr": opts.lr, "batch_size": opts.batch_size, **opts.params}
    config = entry.cls.config_class.create(data.geometry, opts.latent_dim, opts.width, **overrides)
    if overrides["batch_size"] is None:  # each rank trains on its share of the images
        config.batch_size = config.batch_size_for(len(data) // world.size)
    check_size(entry.cls, config, config.batch_size)  # before a single weight (or batch of layer outputs) exists
    seed_everything(opts.seed)
    model = entry.cls(config)
    check_batch(model, config.batch_size, len(data) // world.size)
    settings = model.sample_settings(opts.sample_options)  # a bad --steps fails before the run directory exists
    prepare_model(model, opts, device, precision)
    run_dir = Path(opts.out) if opts.out else rundir.default_run_dir(entry.name, data.name)
    run_dir = Path(broadcast_text(str(run_dir), world, device))  # default names hold a timestamp: take rank 0's
    sync_state(model, world)
    # Optimizers before the run directory: building them imports much of torch (seconds) the first time, and a
    # Ctrl-C during an import leaves at once (gentool.cli.on_sigint); the start's undo runs then too, but the less
    # happens between making the folder and the loop, the fewer such exits there are.
    optimizers = model.build_optimizers()
    start = prepare_new(run_dir, opts.overwrite) if world.main else None
    try:
        if world.main:
            steps = opts.epochs * -(-len(data) // (config.batch_size * world.size))
            rundir.check_room(run_dir, opts, steps, rundir.run_bytes(model, opts, steps))
        session = Session(opts, model, optimizers, data, run_dir, entry.source, world=world,
                          sample_settings=settings, precision=precision, start=start)
        if opts.ema is None:  # recorded in config.json as the decay used
            opts.ema = model.default_ema
        session.ema = EMA(model, opts.ema) if opts.ema else None
        check_run(session)  # --precision auto: this model's own steps may switch it, before config.json says which
        if world.main:
            write_run_config(session)
            write_metrics(session)
    except BaseException:  # an error or Ctrl-C: the --out path as it was (gentool.run_start)
        if start:
            start.undo()
        raise
    _seed_rank(opts.seed, world, 0)
    return session


def _seed_rank(seed: int, world: World, step: int) -> None:
    """Give ranks other than 0 their own noise stream (rank 0 keeps the single-process one)."""
    if world.rank:
        torch.manual_seed(seed * 1_000_003 + world.rank * 7_919 + step)


def check_resumed_data(path: Path, ckpt, data, given: str) -> None:
    """The data a run resumes on has the geometry its model was built for (and, for a class-conditional model, as
    many classes); each side named as it is (the message gave the data's shape as a Python tuple, the
    checkpoint's not at all)."""
    want, got = tuple(ckpt.data["geometry"][k] for k in ("channels", "height", "width")), data.geometry.shape
    trained_on = f"resume it on the data it was trained on ({ckpt.data.get('source')})"
    if tuple(got) != want:
        raise UsageError(f"--resume: {path} was trained on {shape_text(want)} images but --data {given} holds "
                         f"{shape_text(got)} ones: {shape_differences(want, got)} differ; {trained_on}")
    classes = ckpt.model.config.num_classes
    if ckpt.model.conditional and data.geometry.num_classes != classes:
        raise UsageError(f"--resume: {path} was trained on {classes} classes but --data {given} has "
                         f"{data.geometry.num_classes}; {trained_on}")


def resume_session(opts: TrainOptions, device: torch.device, precision: PrecisionChoice, world: World = SINGLE,
                   reporter: Reporter | None = None) -> Session:
    """Reopen a run from its checkpoint (opts.resume, chosen by `gentool.resume.plan`, which also filled in the
    run's recorded options): weights, optimizers, RNG, counters. `precision`: --precision as `gentool.train.train`
    resolved it; auto may keep the run's own instead (`resumed_precision`)."""
    ckpt_path = Path(opts.resume)
    if world.main and ckpt_path.parent.is_dir():
        rundir.lock_run(ckpt_path.parent, "--resume")  # one writer per run: refused while another process writes it
    ckpt = load_checkpoint(ckpt_path, device, arg="--resume", weights="raw")
    precision = resumed_precision(precision, ckpt.state.get("precision"), device)
    prepare_model(ckpt.model, opts, device, precision)
    if world.main:
        rundir.refuse_links(ckpt_path.parent, "--resume")
        rundir.remove_stale_temporaries(ckpt_path.parent)
        rundir.restore_periodic(ckpt_path, ckpt.state)  # lost if a kill fell between last and epoch_NNNN
    data = _load_data(opts, type(ckpt.model), reporter)
    check_resumed_data(ckpt_path, ckpt, data, opts.data)
    if world.main:  # more epochs name longer files (epoch_10000), a new --tensorboard DIR another folder
        steps = opts.epochs * -(-len(data) // (ckpt.model.config.batch_size * world.size))
        need = rundir.run_bytes(ckpt.model, opts, steps - int(ckpt.state["step"]), resumed=True)
        rundir.check_room(ckpt_path.parent, opts, steps, need, arg="--resume")
    optimizers = ckpt.model.build_optimizers()
    ckpt.load_optimizers(optimizers)
    restore_rng(ckpt.rng)
    session = Session(opts, ckpt.model, optimizers, data, ckpt_path.parent, ckpt.meta.get("model_source", "built-in"),
                      epoch=int(ckpt.state["epoch"]), step=int(ckpt.state["step"]),
                      partial=PartialEpoch.from_state(ckpt.state), world=world,
                      sample_settings=ckpt.model.sample_settings(opts.sample_options), precision=precision)
    _seed_rank(opts.seed, world, session.step)
    session.ema = _resumed_ema(ckpt, opts.ema)
    # metrics.json, checked field by field, cut back to the checkpoint
    history = RunHistory.resumed(session.run_dir / rundir.METRICS, session.epoch, inside_epoch=bool(session.batch))
    if history is not None:
        session.run = history
    if world.main:  # not through a link: resume refused one (rundir.refuse_links); replaced, not written into
        write_run_config(session)
    return session


def write_run_config(session: Session) -> None:
    """config.json: what the run is, from the session (the checkpoint's model and settings on a resume, with the
    options and precision of this start: a resume's new --epochs is what `report` shows as asked for). Never what an
    earlier config.json said: a damaged one would be carried on (attacker hour h26v: latent_dim -3, rewritten)."""
    atomic_write_json(session.run_dir / rundir.CONFIG, {
        "gentool_version": gentool.__version__, "model": session.model.name, "model_source": session.source,
        "config": session.model.config.to_dict(), "options": asdict(session.opts), "data": session.data_meta(),
        "precision": session.precision.to_dict()})


def prepare_model(model: GenerativeModel, opts: TrainOptions, device: torch.device,
                  precision: PrecisionChoice) -> None:
    """Device, precision, memory format and compilation for training (runtime settings, not saved with the run)."""
    prepare(model, device, precision, opts.channels_last, opts.compile)


def resumed_precision(choice: PrecisionChoice, saved: dict | None, device: torch.device) -> PrecisionChoice:
    """A resumed run's precision, given --precision resolved (`choice`). `auto` keeps the one the run trained in on
    the same kind of machine (CPU model and flags, torch version): deciding again could pick the other precision
    and end the run's bit-exact continuation. On another kind of machine, or for a checkpoint that predates the
    record, auto's new choice stands."""
    if choice.requested != "auto" or not saved or saved.get("host") != host_id() or saved["used"] == choice.used:
        return choice
    try:
        check_precision(saved["used"], device)
    except UsageError:  # the device cannot run it (a run moved to another device)
        return choice
    return PrecisionChoice("auto", saved["used"], f"the run's own since its start on this kind of machine "
                                                  f"(auto now: {choice.used}, {choice.reason})")


def _resumed_ema(ckpt, decay: float | None) -> EMA | None:
    """The run's EMA as saved (a different --ema is refused), or a new one when --ema is first given on resume."""
    saved = ckpt.ema_meta
    if saved is None:
        return EMA(ckpt.model, decay) if decay else None
    if decay is not None and decay != saved["decay"]:
        raise bad_value("--ema", decay, f"the run's own decay {saved['decay']} (or leave it out)")
    return EMA(ckpt.model, saved["decay"], ckpt.ema_tensors, saved["updates"])


def write_metrics(session: Session) -> None:
    """Rewrite metrics.json (atomically) from the session's history (see RunHistory.write: a NaN is written null)."""
    session.run.write(session.run_dir / rundir.METRICS, model=session.model.name, run_dir=str(session.run_dir))
