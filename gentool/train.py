"""The one training loop: data batches in, metrics, sample grids and checkpoints out, for every model family."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import gentool
from gentool import rundir
from gentool.checkpoint import checkpoint_size_hint, load_checkpoint, restore_rng, save_checkpoint
from gentool.data import ImageData, batches, load_dataset
from gentool.device import pick_device, seed_everything
from gentool.errors import UsageError, bad_value
from gentool.fileio import atomic_write_json, read_json
from gentool.guards import GuardState, Interrupted, NonFinite, StopSignals, check_weights, guard_optimizers, preserved_rng
from gentool.images import write_grid
from gentool.models.base import GenerativeModel
from gentool.progress import Reporter
from gentool.registry import get_entry

GRID = 8  # fixed-noise sample grids are GRID × GRID


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
        from gentool.metrics.watch import check_watch_options  # the watch imports this module (TrainHook)

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

    def save(self, path: Path) -> None:
        """Write a checkpoint of the current state (weights, optimizers, RNG, counters) to `path`, atomically."""
        save_checkpoint(path, self.model, self.optimizers, self.run_state(), self.data_meta(), self.source)

    def data_meta(self) -> dict:
        return {"name": self.data.name, "source": self.opts.data, "geometry": self.data.geometry.to_dict(),
                "pixel_range": list(self.model.pixel_range), "class_names": self.data.class_names}

    def run_state(self) -> dict:
        o = self.opts
        options = {"data": o.data, "limit": o.limit, "image_size": o.image_size, "seed": o.seed,
                   "checkpoint_every": o.checkpoint_every, "sample_every": o.sample_every}
        return {"epoch": self.epoch, "step": self.step, "seed": o.seed, "options": options,
                "stopped": self.stop_reason, "batch": self.batch, "partial": self.partial}


def _load_data(opts: TrainOptions) -> ImageData:
    return load_dataset(opts.data, opts.data_dir, train=True, image_size=opts.image_size, limit=opts.limit)


def new_session(opts: TrainOptions, device: torch.device) -> Session:
    """Build data, model, optimizers and an empty run directory for a fresh run."""
    entry = get_entry(opts.model)
    data = _load_data(opts)
    overrides = {"lr": opts.lr, "batch_size": opts.batch_size, **opts.params}
    config = entry.cls.config_class.create(data.geometry, opts.latent_dim, opts.width, **overrides)
    seed_everything(opts.seed)
    model = entry.cls(config).to(device)
    run_dir = Path(opts.out) if opts.out else rundir.default_run_dir(entry.name, data.name)
    rundir.prepare_new(run_dir, opts.overwrite)
    rundir.check_writable(run_dir, 4 * checkpoint_size_hint(model))
    session = Session(opts, model, model.build_optimizers(), data, run_dir, entry.source)
    config_json = {"gentool_version": gentool.__version__, "model": entry.name, "model_source": entry.source,
                   "config": config.to_dict(), "options": asdict(opts), "data": session.data_meta()}
    atomic_write_json(run_dir / rundir.CONFIG, config_json)
    write_metrics(session)
    return session


def resume_session(opts: TrainOptions, device: torch.device) -> Session:
    """Reopen a run from RUN_DIR/last.safetensors (or a given checkpoint): weights, optimizers, RNG, counters."""
    path = Path(opts.resume)
    ckpt_path = path / rundir.LAST if path.is_dir() else path
    ckpt = load_checkpoint(ckpt_path, device, arg="--resume")
    rundir.remove_stale_temporaries(ckpt_path.parent)
    saved = ckpt.state.get("options", {})
    if opts.data is not None and opts.data != saved.get("data"):
        raise bad_value("--data", opts.data, f"the run's own data set {saved.get('data')!r} (or leave it out)")
    for key in ("data", "limit", "image_size", "seed", "checkpoint_every", "sample_every"):
        if key in saved:
            setattr(opts, key, saved[key])
    data = _load_data(opts)
    if tuple(data.geometry.shape) != tuple(ckpt.data["geometry"][k] for k in ("channels", "height", "width")):
        raise UsageError(f"--resume: data geometry {data.geometry.shape} differs from the checkpoint's")
    optimizers = ckpt.model.build_optimizers()
    ckpt.load_optimizers(optimizers)
    restore_rng(ckpt.rng)
    session = Session(opts, ckpt.model, optimizers, data, ckpt_path.parent, ckpt.meta.get("model_source", "built-in"),
                      epoch=int(ckpt.state["epoch"]), step=int(ckpt.state["step"]),
                      batch=int(ckpt.state.get("batch", 0)), partial=ckpt.state.get("partial") or {})
    metrics_path = session.run_dir / rundir.METRICS
    if metrics_path.exists():
        history = read_json(metrics_path)
        history["epochs"] = [r for r in history.get("epochs", []) if r["epoch"] <= session.epoch]
        history["events"] = [e for e in history.get("events", []) if e.get("epoch", 0) <= session.epoch]
        session.history = history
    return session


def run_epoch(session: Session, epoch: int, images: torch.Tensor, labels: torch.Tensor, reporter: Reporter) -> dict:
    """Train one pass over the data (continuing a pass interrupted mid-epoch); returns the epoch's record (means of
    each reported quantity). Stops after the current step when a signal arrived."""
    model, opts = session.model, session.opts
    index_batches = batches(len(images), model.config.batch_size, opts.seed, epoch, images.device)
    reporter.epoch_start(epoch, len(index_batches))
    part = session.partial
    sums = {k: torch.tensor(v, device=images.device) for k, v in part.get("sums", {}).items()}
    counts: dict[str, int] = dict(part.get("counts", {}))
    seen, before = part.get("seen", 0), part.get("seconds", 0.0)
    start, session.guard.epoch = time.perf_counter(), epoch
    optimizers = guard_optimizers(session.optimizers, session.guard)
    for i in range(session.batch, len(index_batches)):
        idx = index_batches[i]
        session.guard.step, skipped = session.step, session.guard.skipped
        out = model.train_step(model.normalize(images[idx]), labels[idx], optimizers, session.step)
        session.step += 1
        seen += len(idx)
        # A step the guard dropped (--skip-nonfinite) reports non-finite losses: leave them out of the means.
        if session.guard.skipped == skipped:
            for k, v in out.items():
                sums[k] = sums[k] + v if k in sums else v
                counts[k] = counts.get(k, 0) + 1
        elapsed = before + time.perf_counter() - start
        reporter.step(i + 1, lambda: _means(sums, counts), seen / max(elapsed, 1e-9))
        if session.signals and session.signals.signum:
            session.batch = i + 1
            session.partial = {"sums": {k: float(v) for k, v in sums.items()}, "counts": counts,
                               "seen": seen, "seconds": elapsed}
            raise Interrupted(f"interrupted in epoch {epoch} at step {session.step}", session.signals.signum)
    seconds = before + time.perf_counter() - start
    session.batch, session.partial = 0, {}
    record = {"epoch": epoch, "step": session.step, "seconds": round(seconds, 3),
              "images_per_second": round(seen / max(seconds, 1e-9), 1)}
    record.update(_means(sums, counts))
    if session.guard.skipped:
        record["skipped_steps"], session.guard.skipped = session.guard.skipped, 0
    _check_finite(record, epoch, session.step)
    check_weights(model, epoch)
    return record


def _means(sums: dict, counts: dict) -> dict[str, float]:
    """The means of the reported quantities (one device synchronisation per quantity)."""
    return {k: (sums[k] / counts[k]).item() for k in sums}


def _check_finite(record: dict, epoch: int, step: int) -> None:
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFinite(f"training diverged: {', '.join(bad)} became non-finite in epoch {epoch} "
                           f"(by step {step}); the last good checkpoint is kept")


class TrainHook:
    """Extension point of the loop. `on_epoch_end` runs after the epoch's checkpoint and samples are written and
    before metrics.json is; it may add to `record` or `session.history["events"]`, save extra checkpoints with
    `session.save`, or end the run by setting `session.stop_reason`. `on_train_end` runs once the loop is over."""

    def on_epoch_end(self, session: Session, record: dict, reporter: Reporter) -> None: ...

    def on_train_end(self, session: Session, reporter: Reporter) -> None: ...


def build_hooks(opts: TrainOptions) -> list[TrainHook]:
    """The hooks a run uses, in order."""
    from gentool.figures import FigureHook  # figures imports this module (TrainHook)
    from gentool.metrics.watch import TrainingWatch  # likewise

    return [TrainingWatch(opts), FigureHook()]


def write_epoch_files(session: Session, record: dict, fixed_noise: torch.Tensor) -> None:
    """Write the epoch's checkpoints and sample grid."""
    opts, run_dir, epoch = session.opts, session.run_dir, record["epoch"]
    if opts.checkpoint_every and epoch % opts.checkpoint_every == 0:
        session.save(rundir.epoch_checkpoint(run_dir, epoch))
    if opts.sample_every and (epoch % opts.sample_every == 0 or epoch == opts.epochs):
        with torch.no_grad():
            was = session.model.training
            session.model.eval()
            images = session.model.decode(fixed_noise.to(session.model.device)).float()
            session.model.train(was)
        write_grid(run_dir / rundir.SAMPLES / f"epoch_{epoch:04d}.png", images, GRID, GRID)


def write_metrics(session: Session) -> None:
    """Rewrite metrics.json (atomically) from the session's history."""
    session.history.update({"model": session.model.name, "run_dir": str(session.run_dir)})
    atomic_write_json(session.run_dir / rundir.METRICS, session.history)


def train(opts: TrainOptions, reporter: Reporter | None = None) -> dict:
    """Train (or resume) a run to `opts.epochs` total epochs; returns the run summary printed by `--json`.

    SIGINT/SIGTERM end the run after the current step with last.safetensors saved (exit 130/143)."""
    reporter = reporter or Reporter()
    opts.validate()
    device = pick_device(opts.device)
    session = resume_session(opts, device) if opts.resume else new_session(opts, device)
    session.guard = GuardState(opts.skip_nonfinite)
    if session.epoch >= opts.epochs:
        reporter.message(f"nothing to do: {session.run_dir} already has {session.epoch} of {opts.epochs} epochs")
    reporter.start(opts.epochs, session.epoch + 1)
    try:
        with StopSignals() as session.signals:
            _loop(session, build_hooks(opts), reporter)
    except Interrupted as exc:
        session.save(session.run_dir / rundir.LAST)
        write_metrics(session)
        exc.args = (f"{exc}; saved {session.run_dir / rundir.LAST}. Resume with: gentool train --resume "
                    f"{session.run_dir} --epochs {opts.epochs}",)
        raise
    finally:
        reporter.close()
    return result(session)


def _loop(session: Session, hooks: list[TrainHook], reporter: Reporter) -> None:
    opts, device = session.opts, session.model.device
    images, labels = session.data.images.to(device), session.data.labels.to(device)
    fixed_noise = session.model.sample_latent(GRID * GRID, torch.Generator().manual_seed(opts.seed))
    session.model.train()
    for epoch in range(session.epoch + 1, opts.epochs + 1):
        record = run_epoch(session, epoch, images, labels, reporter)
        session.epoch = epoch
        session.history["epochs"].append(record)
        # metrics.json first: a kill between the two writes leaves a record that resume drops and redoes, never a
        # checkpoint whose epoch has no record.
        write_metrics(session)
        session.save(session.run_dir / rundir.LAST)
        with preserved_rng():
            write_epoch_files(session, record, fixed_noise)
            for hook in hooks:
                hook.on_epoch_end(session, record, reporter)
        write_metrics(session)
        reporter.epoch_end(record)
        if session.stop_reason:
            reporter.message(session.stop_reason)
            break
        if session.signals and session.signals.signum:
            raise Interrupted(f"interrupted after epoch {epoch}", session.signals.signum)
    with preserved_rng():
        for hook in hooks:
            hook.on_train_end(session, reporter)


def result(session: Session) -> dict:
    """What `train --json` prints: where things are and the last epoch's metrics."""
    run_dir = session.run_dir
    checkpoints = {"last": str(run_dir / rundir.LAST)}
    checkpoints.update({p.stem: str(p) for p in sorted(run_dir.glob("epoch_*.safetensors"))})
    final = session.history["epochs"][-1] if session.history["epochs"] else {}
    if (run_dir / rundir.BEST).exists():
        checkpoints["best"] = str(run_dir / rundir.BEST)
    return {"run_dir": str(run_dir), "model": session.model.name, "epochs": session.epoch, "step": session.step,
            "checkpoints": checkpoints, "metrics_file": str(run_dir / rundir.METRICS), "final_metrics": final,
            "events": session.history.get("events", []), "stopped": session.stop_reason}
