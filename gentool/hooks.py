"""The training loop's extension interface, in the style of Lightning's callbacks, and the hooks plugins contribute.

`gentool.train.train(opts, reporter, hooks)` runs the hooks its caller passes, in list order; the caller builds the
list (`gentool.api.default_hooks`: the training watch, figures, TensorBoard with --tensorboard, then each plugin's).
This module is the leaf every hook imports: it imports nothing heavy and none of the loop's modules, so a hook
never imports `gentool.train` and the loop never imports a hook.

Plugins contribute hooks through the entry-point group `gentool.hooks`, loaded lazily (when a run builds its
hooks, never for `--help`) through the same code that loads model plugins; one that fails to load, or whose hook
fails while the run goes on, is a one-line warning and the run continues without it.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gentool.errors import GentoolError
from gentool.plugin_exits import no_exit

if TYPE_CHECKING:  # for annotations only: importing these here would load torch and the loop
    import numpy as np

    from gentool.progress import Reporter
    from gentool.train_options import TrainOptions

ENTRY_POINT_GROUP = "gentool.hooks"
# Record keys that an evaluation during training (--eval-every) adds to an epoch's record.
EVALUATION_KEYS = ("fid", "modes", "class_kl")


# What a hook reads of the run (gentool.session.Session's fields of these names); the loop's own machinery (its
# optimizers, signal handlers, timers, the state of an epoch in progress) is not shown.
VISIBLE = ("batch", "data", "ema", "epoch", "history", "model", "precision", "run_dir", "source", "step",
           "stop_reason", "world")


class RunView:
    """What a hook sees of a run: the session's values under their names (`epoch`, `step`, `opts`, `model`, `data`,
    `run_dir`, `history`, `precision`, `sample_settings`, `ema`, `world`: VISIBLE), none of which a hook can rebind,
    so the loop's counters and state stay its own. `opts` is a copy taken when the view is made. What a hook may do
    to the run it does through `history` (the metrics.json document: events, best, evaluation), `save`, and `stop`;
    setting `stop_reason`, as hooks did before the view, still calls `stop`."""

    __slots__ = ("_opts", "_session")

    def __init__(self, session: Any):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_opts", copy.deepcopy(session.opts))

    @property
    def opts(self) -> TrainOptions:
        return self._opts

    @property
    def sample_settings(self) -> dict:
        return dict(self._session.sample_settings)

    def save(self, path) -> None:
        """Write a checkpoint of the run as it is now to `path` (e.g. best.safetensors), atomically: a
        NAME.safetensors in the run directory (a relative path is taken from there). Anywhere else is refused: a
        hook's save replaced a user's file outside the run, and one over config.json left a run that neither
        `report` nor `--resume` could read."""
        self._session.save(checkpoint_path(self._session.run_dir, path))

    def sampling(self):
        """A context in which the model samples as `gentool sample` would (with the EMA weights when kept)."""
        return self._session.sampling()

    def stop(self, reason: str) -> None:
        """End the run after this epoch, with `reason` printed and recorded (as a time budget ends it)."""
        self._session.stop_reason = reason

    def __copy__(self) -> RunView:  # nothing to copy: a hook cannot change the view
        return self

    def __getattr__(self, name: str):  # the session's other values, read-only
        if name not in VISIBLE:
            raise AttributeError(f"session.{name}: a hook sees the run through gentool.hooks.RunView, which has "
                                 f"opts, sample_settings, {', '.join(VISIBLE)}, save, sampling and stop")
        return getattr(self._session, name)

    def __setattr__(self, name: str, value) -> None:
        if name != "stop_reason":
            raise AttributeError(f"session.{name} is read-only for hooks (a hook sees the run through "
                                 f"gentool.hooks.RunView; it may add to session.history, save, or stop the run)")
        self.stop(value)


def checkpoint_path(run_dir, path):
    """`path` (relative: to `run_dir`) when it names a .safetensors file directly in `run_dir`; GentoolError else."""
    run_dir = Path(run_dir)
    try:
        target = Path(os.path.normpath(run_dir / os.fspath(path)))
    except TypeError as exc:  # not a path
        raise GentoolError(f"session.save({path!r}): not a file path ({exc})") from None
    if "\0" in str(target):
        raise GentoolError(f"session.save({str(path)!r}): a file name cannot hold a NUL character")
    if target.parent != Path(os.path.normpath(run_dir)) or target.suffix != ".safetensors" or target.stem == "":
        raise GentoolError(f"session.save({str(path)!r}): a hook saves checkpoints as NAME.safetensors in the run "
                           f"directory {run_dir}, nowhere else")
    return target


class TrainHook:
    """Extension point of the training loop; override the events you need (each default does nothing). Hooks run
    on rank 0 only (under torchrun) and in list order, so a later hook sees what an earlier one added to a record.
    Each event gets a `RunView` of the run (named `session`, as before the view), not the loop's session itself.
    Work done in `on_sample_grid`, `on_epoch_end` and `on_train_end` cannot change what training draws next (the
    loop restores the RNG state after them)."""

    def setup(self, opts: TrainOptions) -> None:
        """The run's final options (a resume has filled in the run's own), before any data is loaded or any file
        written: keep what you need and raise gentool.errors.UsageError to refuse options you cannot work with. An
        option changed here is checked as the command line's (gentool.resume.check_changes); where and how the run
        starts (out, resume, overwrite) is not a hook's to change."""

    def resume_minutes(self) -> float | None:
        """The --max-minutes the line printed when the time budget stops the run asks for (None: the run's own). A
        caller that gave the run what was left of a larger budget (distill's student) asks for that budget again."""
        return None

    def on_train_start(self, session: RunView, reporter: Reporter) -> None:
        """The run is set up (its directory, model, data; `session.epoch`/`session.step` where a resume starts)."""

    def on_step(self, session: RunView, losses: dict) -> None:
        """After each optimizer step (`session.step` counts it), with the step's reported quantities as detached
        scalar tensors ({} for a step dropped by --skip-nonfinite). Called thousands of times: reading a value
        (`.item()`) waits for the device, so a hook that logs does it every so many steps, not at every one."""

    def on_sample_grid(self, session: RunView, epoch: int, grid: np.ndarray) -> None:
        """The epoch's fixed-noise sample grid was written to samples/epoch_NNNN.png; `grid` is that image
        (uint8, H×W×C)."""

    def on_epoch_end(self, session: RunView, record: dict, reporter: Reporter) -> None:
        """After the epoch's checkpoint and sample grid are written and before metrics.json is: a hook may add to
        `record` (the training watch adds EVALUATION_KEYS with --eval-every) or `session.history["events"]`, save
        extra checkpoints with `session.save`, or end the run with `session.stop(reason)` (or, as before, by
        setting `session.stop_reason`)."""

    def on_progress(self, session: RunView, history: dict, reporter: Reporter) -> None:
        """Every few minutes inside a long epoch, and when a signal stops the run: `history` is the run's history
        with the epoch in progress as a partial record (`"partial": true`), and samples/latest.png holds the
        fixed-noise grid as the weights draw it now. For figures that should not wait for the epoch's end."""

    def on_train_end(self, session: RunView, reporter: Reporter) -> None:
        """The loop is over: all epochs done, --max-minutes used up, or a hook ended the run (not after a signal
        or an error: see `teardown`)."""

    def teardown(self, session: RunView | None) -> None:
        """Last, always, also when the run stops for a signal or an error: release what the hook holds (close
        files). `session` is None when the run failed before it was set up."""


# --- hooks from plugins ------------------------------------------------------------------------------------------

_factories: list[tuple[str, Any]] | None = None  # (where from, factory) of each entry point that loaded
_unloaded: list[str] = []  # where from, of each entry point that failed to load (warned)


def _factories_loaded() -> list[tuple[str, Any]]:
    global _factories, _unloaded
    if _factories is None:
        from gentool.registry import entry_text, load_entry_points

        found: list[tuple[str, Any]] = []
        failed = load_entry_points(ENTRY_POINT_GROUP, lambda name, dist, obj: found.append((entry_text(dist, name),
                                                                                           obj)), kind="hook plugin")
        _factories, _unloaded = found, [entry_text(dist, name) for name, dist in failed]
    return _factories


def plugin_hooks(failed: list[str] | None = None) -> list[TrainHook]:
    """A fresh hook from each `gentool.hooks` entry point, whose value names a TrainHook subclass or a function
    called without arguments that returns a hook, a list of hooks or None (to stay out of this run). Each hook is
    guarded: one that fails is turned off for the run with a warning. A factory that fails is a warning too (its
    source added to `failed`); one that hangs is said on stderr after a few seconds, as a slow import is."""
    from gentool.registry import watched

    hooks = []
    for source, factory in _factories_loaded():
        try:
            with watched(f"the factory of hook plugin {source}"):
                made = factory()
                made = [] if made is None else list(made) if isinstance(made, (list, tuple)) else [made]
                bad = [h for h in made if not isinstance(h, TrainHook)]
            if bad:
                raise TypeError(f"returned {type(bad[0]).__name__}, expected a gentool.hooks.TrainHook")
        except (Exception, SystemExit) as exc:  # a broken plugin must not break the run (not even with sys.exit)
            warnings.warn(f"gentool: hook plugin {source} failed: {type(exc).__name__}: {exc}")
            if failed is not None:
                failed.append(source)
            continue
        hooks += [Guarded(h, source) for h in made]
    return hooks


def unloaded_plugin_hooks() -> list[str]:
    """`gentool models --check`: the hook plugins that do not load, each warned about as `train` warns: its import
    failed, or its factory failed or returned no hook. The factories are called, as every `train` calls them before
    it reads its options: a factory is the plugin's code `train` runs first, so one that hangs, raises or exits is
    found only so (the hint printed for a slow one sends the user here). Calling one commits to nothing: a factory
    takes no arguments and is called afresh for each run, so making a hook must not act; hooks act from `setup` on.
    Their `teardown` is not called: it is code a run calls after its events, and the check's process ends now."""
    _factories_loaded()
    failed = list(_unloaded)
    plugin_hooks(failed)
    return failed


def describe_hooks(warn: bool = True) -> list[tuple[str, str, str]]:
    """Each `gentool.hooks` entry point as `gentool models` lists it, without running any plugin code: (its name,
    its distribution, the first line of the docstring of what it names, read from source; else the package's
    summary). One whose source cannot be read is a warning, as a model plugin's is (unless not `warn`: `models
    --check` has warned of its import)."""
    from gentool.declared import first_doc_line
    from gentool.registry import Failures, dist_summary, entry_points, read_entry  # the entry points it loads

    found = []
    with Failures() as failures:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist, text = read_entry(ep, first_doc_line, failures if warn else None, "hook plugin")
            found.append((ep.name, dist, text or dist_summary(ep)))
    return sorted(found)


def hook_name(hook: TrainHook) -> str:
    """How messages name a hook: its class, and the plugin a plugin's hook (Guarded) came from."""
    if isinstance(hook, Guarded):
        return f"hook {type(hook.hook).__name__} from plugin {hook.source}"
    return f"hook {type(hook).__name__}"


class Guarded(TrainHook):
    """A plugin's hook whose failure costs the run nothing: the first exception it raises is a warning and the hook
    is off for the rest of the run. (A gentool error raised by `setup` to refuse the options still stops the run.)"""

    def __init__(self, hook: TrainHook, source: str):
        self.hook, self.source, self.off = hook, source, False

    def _call(self, event: str, *args) -> None:
        if self.off:
            return
        try:
            with no_exit(hook_name(self)):  # os._exit: a warning too
                getattr(self.hook, event)(*args)
        except (Exception, SystemExit) as exc:  # sys.exit in a hook ended the run mid-epoch, with its exit code
            if event == "setup" and isinstance(exc, GentoolError):
                raise
            self.off = True
            warnings.warn(f"gentool: {hook_name(self)} failed in {event} and is off for the rest of this run "
                          f"({type(exc).__name__}: {exc})")

    def setup(self, opts):
        self._call("setup", opts)

    def on_train_start(self, session, reporter):
        self._call("on_train_start", session, reporter)

    def on_step(self, session, losses):
        self._call("on_step", session, losses)

    def on_sample_grid(self, session, epoch, grid):
        self._call("on_sample_grid", session, epoch, grid)

    def on_epoch_end(self, session, record, reporter):
        self._call("on_epoch_end", session, record, reporter)

    def on_progress(self, session, history, reporter):
        self._call("on_progress", session, history, reporter)

    def on_train_end(self, session, reporter):
        self._call("on_train_end", session, reporter)

    def teardown(self, session):
        self._call("teardown", session)
