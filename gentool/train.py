"""The one training loop: data batches in, metrics, sample grids and checkpoints out, for every model family."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from gentool import rundir, stops
from gentool.data import batches
from gentool.device import (
    PrecisionChoice,
    check_precision,
    choose_precision,
    default_threads,
    pick_device,
    use_deterministic,
    use_threads,
)
from gentool.distributed import (
    World,
    average_buffers,
    average_values,
    barrier,
    check_in_sync,
    join,
    leave,
)
from gentool.folders import listed_once
from gentool.history import EpochRecord, PartialEpoch
from gentool.hooks import TrainHook
from gentool.load import load_warning
from gentool.guards import (
    GuardState,
    Interrupted,
    NonFinite,
    StopSignals,
    check_weights,
    guard_optimizers,
    preserved_rng,
)
from gentool.grids import draw_latest_grid, fixed_noise_grid
from gentool.images import write_png
from gentool.progress import Reporter
from gentool.registry import plugin_failure, plugin_source
from gentool.resume import budget_line, plan, resume_command, say_epochs_ended, setup_hooks
from gentool.session import (
    HOOK_STOP,
    SIGNALLED,
    TIME_UP,
    Session,
    TrainOptions,
    new_session,
    resume_session,
    stop_code,
    write_metrics,
)

__all__ = ["Session", "TrainHook", "TrainOptions", "run_epoch", "train"]

PROGRESS_SECONDS = 120.0  # inside an epoch, samples/latest.png and the figures are redrawn this often


def run_epoch(session: Session, epoch: int, images: torch.Tensor, labels: torch.Tensor, reporter: Reporter,
              hooks: Sequence[TrainHook] = (), latents: torch.Tensor | None = None) -> EpochRecord:
    """Train one pass over the data (continuing a pass interrupted mid-epoch); returns the epoch's record (means of
    each reported quantity). Stops after the current step when a signal arrived. `latents`: the noise each image
    was drawn from, when the data are couplings (passed to the family's train_step beside the images)."""
    model, opts = session.model, session.opts
    world = session.world
    index_batches = batches(len(images), model.config.batch_size, opts.seed, epoch, images.device, world.rank, world.size)
    reporter.epoch_start(epoch, len(index_batches))
    part = session.partial or PartialEpoch(0)
    sums = {k: torch.tensor(v, device=images.device) for k, v in part.sums.items()}
    counts: dict[str, int] = dict(part.counts)
    seen, before = part.seen, part.seconds
    view = session.view
    start, session.guard.epoch = time.perf_counter(), epoch
    optimizers = guard_optimizers(session.optimizers, session.guard)
    for i in range(part.batch, len(index_batches)):
        idx = index_batches[i]
        session.guard.step, skipped = session.step, session.guard.skipped
        coupled = {} if latents is None else {"latents": latents[idx]}
        with model.amp.autocast():
            out = session.guard.run_step(model, optimizers, lambda: model.train_step(
                model.normalize(images[idx]), labels[idx], optimizers, session.step, **coupled))
        if session.ema:
            session.ema.update(model)
        session.step += 1
        seen += len(idx)
        # A step the guard dropped (--skip-nonfinite) reports non-finite losses: leave them out of the means.
        kept = out if session.guard.skipped == skipped else {}
        _accumulate(sums, counts, kept)
        for hook in hooks:
            hook.on_step(view, kept)
        if not session.run.intact():  # (cheap, at every step; the whole document is tidied at the next write)
            session.run.tidy()
        elapsed = before + time.perf_counter() - start
        reporter.step(i + 1, lambda: _means(sums, counts), seen / max(elapsed, 1e-9))
        _after_step(session, epoch, sums, counts, (i + 1, len(index_batches)), seen, elapsed, hooks, reporter)
    session.partial = None  # the epoch is done
    record = _record(session, epoch, sums, counts, seen, before + time.perf_counter() - start)
    if world.enabled:
        average_buffers(model, world)
        check_in_sync(model, world)
    if session.guard.skipped:
        record = replace(record, metrics={**record.metrics, "skipped_steps": session.guard.skipped})
        session.guard.skipped = 0
    _check_finite(record, epoch, session.step)
    check_weights(model, epoch)
    return record


def _after_step(session: Session, epoch: int, sums: dict, counts: dict, progress: tuple[int, int], seen: int,
                elapsed: float, hooks: Sequence[TrainHook], reporter: Reporter) -> None:
    """Inside an epoch, after step `done` of `total`: the state a checkpoint or a stop takes, the
    --checkpoint-minutes save, the progress figures on their interval, and the stop itself (Interrupted or
    OutOfTime, the epoch's partial record kept)."""
    done, total = progress
    stop = stop_code(session, time_up=done < total)
    # --checkpoint-minutes: a save inside the epoch (at its end the epoch's own save comes a moment later)
    due = session.next_save is not None and done < total and time.monotonic() >= session.next_save
    if stop or due:  # what a checkpoint taken here resumes from
        session.partial = PartialEpoch(done, {k: float(v) for k, v in sums.items()}, dict(counts), seen, elapsed)
    if due and not stop:
        session.save_timed()
    if not stop and session.next_figures is not None and time.monotonic() >= session.next_figures:
        session.next_figures = time.monotonic() + PROGRESS_SECONDS
        if session.world.main and done < total:
            draw_progress(session, hooks, reporter, _partial_record(session, epoch, sums, counts, done, total, seen,
                                                                    elapsed))
    if stop:
        session.run.keep(_partial_record(session, epoch, sums, counts, done, total, seen, elapsed))
        if stop == SIGNALLED:
            signum = session.signum()
            raise Interrupted(f"{stops.word(signum)} in epoch {epoch} at step {session.step}", signum)
        raise OutOfTime(f"in epoch {epoch} at step {session.step}")


def _record(session: Session, epoch: int, sums: dict, counts: dict, seen: int, seconds: float) -> EpochRecord:
    """An epoch's record: where it ended, how long it took, and the means of what the steps reported (averaged
    over the ranks)."""
    world = session.world
    return EpochRecord(epoch, session.step, round(seconds, 3), round(seen * world.size / max(seconds, 1e-9), 1),
                       average_values(_means(sums, counts), world, session.model.device))


def _partial_record(session: Session, epoch: int, sums: dict, counts: dict, done: int, total: int,
                    seen: int, seconds: float) -> EpochRecord:
    """The record of an epoch after `done` of its `total` steps, marked partial, so that a run stopped inside its
    first epoch still shows its means (and figures drawn inside a long epoch show it). The epoch's full record
    replaces it once a resumed run finishes the epoch."""
    record = _record(session, epoch, sums, counts, seen, seconds)
    # A non-finite mean is left out rather than written: JSON has no NaN.
    means = {k: v for k, v in record.metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}
    return replace(record, metrics=means, partial=True, images_seen=seen * session.world.size,
                   epoch_fraction=round(done / total, 4))


def draw_progress(session: Session, hooks: Sequence[TrainHook], reporter: Reporter,
                  running: EpochRecord | None = None) -> None:
    """samples/latest.png (the fixed-noise grid as the weights draw it now) and the hooks' figures of the history,
    with `running` (the epoch in progress) in place of any older record of its epoch. Between epochs nothing
    showed a long first epoch's progress: a run stopped at 4 minutes left no grid and no loss.png."""
    history = dict(session.history) if running is None else session.run.with_running(running)
    with preserved_rng():
        draw_latest_grid(session)
        _send(session, hooks, "on_progress", history, reporter)


def _send(session: Session, hooks: Sequence[TrainHook], event: str, *args) -> None:
    """Send `event` to each hook, with the run's view, then put back what they did to the history that gentool
    could not write or read back (RunHistory.tidy, with a warning): the loop's next use of it must not fail on a
    hook's damage, whichever event it was done in."""
    for hook in hooks:
        getattr(hook, event)(session.view, *args)
    session.run.tidy()


def _accumulate(sums: dict, counts: dict, out: dict) -> None:
    """Add one step's reported quantities to the epoch's sums, in fp32 (or fp64) whatever their dtype: a loss
    computed under bf16 autocast is bf16, and a bf16 sum of a few hundred values near 2 stops growing (its spacing
    reaches 4 at 512), so an epoch's mean came out wrong (1.63 for a critic loss of 2.0)."""
    for k, v in out.items():
        v = v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.element_size() < 4 else v
        sums[k] = sums[k] + v if k in sums else v
        counts[k] = counts.get(k, 0) + 1


def _means(sums: dict, counts: dict) -> dict[str, float]:
    """The means of the reported quantities (one device synchronisation per quantity)."""
    return {k: (sums[k] / counts[k]).item() for k in sums}


def _check_finite(record: EpochRecord, epoch: int, step: int) -> None:
    bad = [k for k, v in record.to_json().items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFinite(f"training diverged: {', '.join(bad)} became non-finite in epoch {epoch} "
                           f"(by step {step}); the last good checkpoint is kept")


class OutOfTime(Exception):
    """--max-minutes ran out in the middle of an epoch (the loop's own signal to stop, not an error)."""


def write_epoch_files(session: Session, record: dict, hooks: Sequence[TrainHook] = (),
                      reporter: Reporter | None = None) -> None:
    """Write the epoch's checkpoints and sample grid (drawn from the run's seed, so every epoch's grid starts from
    the same noise, unless grids take too much of the run: `gentool.grids`), and show the grid to the hooks."""
    opts, run_dir, epoch = session.opts, session.run_dir, record["epoch"]
    if opts.checkpoint_every and epoch % opts.checkpoint_every == 0:
        session.save(rundir.epoch_checkpoint(run_dir, epoch))
    if session.grids.due(epoch, opts.sample_every, opts.epochs):
        draw_epoch_grid(session, epoch, hooks)
    elif opts.sample_every and epoch % opts.sample_every == 0:
        line = session.grids.skip(epoch)
        if line and reporter is not None:
            reporter.message(line)


def draw_epoch_grid(session: Session, epoch: int, hooks: Sequence[TrainHook] = ()) -> None:
    """samples/epoch_NNNN.png, shown to the hooks."""
    with session.grids.timed():
        grid = fixed_noise_grid(session)
    write_png(rundir.sample_grid(session.run_dir, epoch), grid)
    _send(session, hooks, "on_sample_grid", epoch, grid)


@listed_once  # an image folder is listed once (its defaults, its geometry, its data)
def train(opts: TrainOptions, reporter: Reporter | None = None, hooks: Sequence[TrainHook] = ()) -> dict:
    """Train (or resume) a run to `opts.epochs` total epochs, running `hooks` (the caller's list, in order; see
    gentool.hooks; `gentool.api.default_hooks` gives the command line's); returns the run summary printed by
    `--json`.

    SIGINT/SIGTERM/SIGUSR1 end the run after the current step with last.safetensors saved (exit 128 + the signal:
    130/143/138)."""
    start = plan(opts)
    opts = start.opts
    setup_hooks(opts, hooks)  # every rank checks the options alike (and what hooks changed); rank 0 runs the rest
    device = pick_device(opts.device)
    check_precision(opts.precision, device)  # refuse an unsupported precision before any data is loaded
    world, device = join(device)
    reporter = (reporter or Reporter()) if world.main else Reporter()
    threads = opts.threads or (max(1, default_threads() // world.local_size) if world.enabled else None)
    use_threads(threads, device)
    if opts.deterministic:
        use_deterministic(device)
    precision = choose_precision(opts.precision, device)  # resolved once (auto's probe: on the threads just set)
    for note in start.notes:
        reporter.message(note)
    try:
        return _train(opts, device, world, reporter, list(hooks) if world.main else [], precision)
    finally:
        rundir.release_runs()
        leave(world)


def _train(opts: TrainOptions, device: torch.device, world: World, reporter: Reporter,
           hooks: list[TrainHook], precision: PrecisionChoice) -> dict:
    session = None
    try:
        start = resume_session if opts.resume else new_session
        session = start(opts, device, precision, world, reporter)
        return _run(session, device, reporter, hooks)
    except Exception as exc:  # a plugin model's own failure is one line naming the plugin (GENTOOL_DEBUG: traceback)
        failure = plugin_failure(exc, session.source if session else plugin_source(opts.model),
                                 session.model.name if session else opts.model)
        if failure is exc:
            raise
        raise failure from exc
    finally:
        if session is not None and session.start:  # a start that ended before its loop ran: put back (else kept)
            session.start.undo()
        for hook in hooks:
            hook.teardown(session.view if session else None)


def _run(session: Session, device: torch.device, reporter: Reporter, hooks: list[TrainHook]) -> dict:
    opts, world = session.opts, session.world
    session.guard = GuardState(opts.skip_nonfinite, world)
    verb = ("starting" if not opts.resume else f"resuming in epoch {session.epoch + 1} at step {session.step}"
            if session.batch else f"resuming after epoch {session.epoch}, step {session.step}")
    reporter.message(f"run directory: {session.run_dir} ({session.model.name}, {verb})")
    if session.precision.requested == "auto":
        reporter.message(f"precision: {session.precision.used} (auto: {session.precision.reason})")
    busy = load_warning(torch.get_num_threads()) if device.type == "cpu" else None
    if busy:
        reporter.message(f"note: {busy}")
    if session.epoch >= opts.epochs:
        more = resume_command(session.run_dir, max(2 * session.epoch, session.epoch + 1), opts)
        reporter.message(f"nothing to do: {session.run_dir} already has {session.epoch} of {opts.epochs} epochs; "
                         f"to train longer, raise --epochs: {more}")
    budget = 60 * opts.max_minutes if opts.max_minutes else None  # seconds of training --max-minutes allows
    reporter.start(opts.epochs, session.epoch + 1, budget)
    if budget:
        session.deadline = time.monotonic() + budget
    if opts.checkpoint_minutes:
        session.next_save = time.monotonic() + 60 * opts.checkpoint_minutes
    session.next_figures = time.monotonic() + PROGRESS_SECONDS
    _send(session, hooks, "on_train_start", reporter)
    try:
        with StopSignals() as session.signals:
            session.started()
            try:
                _loop(session, hooks, reporter)
            except OutOfTime as exc:
                _stop_for_time(session, hooks, reporter, str(exc))
    except Interrupted as exc:
        if world.main:
            session.save(session.run_dir / rundir.LAST)
            write_metrics(session)
            draw_progress(session, hooks, reporter)
        barrier(world)  # torchrun ends every rank once one exits: let rank 0 finish writing first
        exc.args = (f"{exc}; saved {session.run_dir / rundir.LAST}. Resume with: "
                    f"{resume_command(session.run_dir, opts.epochs, opts)}",)
        raise
    finally:
        reporter.close()
    return result(session)


def _stop_for_time(session: Session, hooks: list[TrainHook], reporter: Reporter, where: str) -> None:
    """End a run whose --max-minutes ran out mid-epoch: save the resumable state and finish like a normal run."""
    session.stop_reason = (f"time budget of {session.opts.max_minutes:g} min used up {where}; resume with: "
                           f"{budget_line(session, hooks)}")
    if session.world.main:
        session.save(session.run_dir / rundir.LAST)
        write_metrics(session)
        draw_latest_grid(session)  # as a Ctrl-C's stop does (a budget inside epoch 1 left no grid); the hooks'
        # figures follow in their on_train_end, so not draw_progress, which would draw loss.png a second time
        reporter.message(session.stop_reason)
        with preserved_rng():
            _send(session, hooks, "on_train_end", reporter)
    barrier(session.world)


def _loop(session: Session, hooks: list[TrainHook], reporter: Reporter) -> None:
    opts, device = session.opts, session.model.device
    images, labels = session.data.images.to(device), session.data.labels.to(device)
    latents = None if session.data.latents is None else session.data.latents.to(device)
    session.model.train()
    first = session.epoch
    for epoch in range(session.epoch + 1, opts.epochs + 1):
        # kept as the dict that hooks are shown (and add to) and metrics.json writes
        record = session.run.keep(run_epoch(session, epoch, images, labels, reporter, hooks, latents))
        session.epoch = epoch
        if session.world.main:
            _epoch_files(session, record, hooks, reporter)
        stop = stop_code(session, time_up=epoch < opts.epochs, hook_stop=session.stop_reason is not None)
        if stop and session.world.main and session.grids.skipped == epoch:
            with preserved_rng():  # the run ends on these weights: their grid, though the share skipped it
                draw_epoch_grid(session, epoch, hooks)
        if stop == TIME_UP:
            session.stop_reason = (f"time budget of {opts.max_minutes:g} min used up after epoch {epoch}; resume "
                                   f"with: {budget_line(session, hooks)}")
        elif stop == HOOK_STOP:
            session.stop_reason = session.stop_reason or "stopped by rank 0's checks (see its output)"
        elif stop == SIGNALLED:
            raise Interrupted(f"{stops.word(session.signum())} after epoch {epoch}", session.signum())
        if session.stop_reason:
            if session.world.main:
                write_metrics(session)
                reporter.message(session.stop_reason)
            break
    else:
        if session.epoch > first:  # (not after "nothing to do")
            say_epochs_ended(session, reporter)
    if session.world.main:
        with preserved_rng():
            _send(session, hooks, "on_train_end", reporter)
    barrier(session.world)  # as after a time stop: the ranks leave the process group together


def _epoch_files(session: Session, record: dict, hooks: list[TrainHook], reporter: Reporter) -> None:
    """After an epoch: metrics.json, last.safetensors, epoch checkpoint and grid, then the hooks."""
    # metrics.json first: a kill between the two writes leaves a record that resume drops and redoes, never a
    # checkpoint whose epoch has no record.
    write_metrics(session)
    session.save(session.run_dir / rundir.LAST)
    with preserved_rng():
        write_epoch_files(session, record, hooks, reporter)
        _send(session, hooks, "on_epoch_end", record, reporter)
    write_metrics(session)
    reporter.epoch_end(record)


def result(session: Session) -> dict:
    """What `train --json` prints: where things are and the last epoch's metrics."""
    run_dir = session.run_dir
    checkpoints = {"last": str(run_dir / rundir.LAST)}
    for pattern in ("epoch_*.safetensors", "step_*.safetensors"):
        checkpoints.update({p.stem: str(p) for p in sorted(run_dir.glob(pattern))})
    final = session.history["epochs"][-1] if session.history["epochs"] else {}
    if (run_dir / rundir.BEST).exists():
        checkpoints["best"] = str(run_dir / rundir.BEST)
    return {"run_dir": str(run_dir), "model": session.model.name, "epochs": session.epoch, "step": session.step,
            "checkpoints": checkpoints, "metrics_file": str(run_dir / rundir.METRICS), "final_metrics": final,
            "events": session.history.get("events", []), "stopped": session.stop_reason,
            "world_size": session.world.size, "rank": session.world.rank,
            "precision": session.precision.to_dict()}
