"""How a run starts: new, resumed from a checkpoint, or started again in a run directory that never reached its
first checkpoint. Decided from the command line and the run's files before anything heavy is built.

A resume takes the model and every recorded option from the run; options given again are checked against the
rules in `gentool.train_options` (FIXED ones must match, RESTORED ones may differ and are reported, KEPT ones may
change freely). `--resume auto --out DIR` makes one command line right for every start and restart of a job.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shlex
import sys
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from gentool import rundir
from gentool.errors import GentoolError, UsageError
from gentool.hooks import TrainHook, hook_name
from gentool.train_options import (AUTO, FIELDS, FIXED, FREE, MODEL_SETTINGS, NOT_RERUN, RESTORED, RESUME_RULES,
                                   TrainOptions, flag)

BUILTIN_DATA = ("mnist", "cifar10", "mnist-sample")
# Recorded in every checkpoint (state.options): the options a resume takes from the run. The model's own settings
# (MODEL_SETTINGS, --param, --ema) live in the checkpoint's config and EMA metadata instead.
RUN_OPTIONS = tuple(name for name, rule in RESUME_RULES.items()
                    if rule != FREE and name not in ("model", "params", "ema", *MODEL_SETTINGS))


@dataclass
class Start:
    """How `train` begins: the options with every value filled in, the checkpoint to resume from (None for a new
    run in opts.out or a default directory) and what to tell the user about it."""

    opts: TrainOptions
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)


def command_name() -> str:
    """How the user called gentool, for the commands it prints ("gentool", or "python -m gentool")."""
    return "python -m gentool" if Path(sys.argv[0]).name == "__main__.py" else "gentool"


def resume_command(run_dir: Path, epochs: int, opts: TrainOptions | None = None, budget: bool = False,
                   minutes: float | None = None) -> str:
    """The command that continues a run, quoted so that it runs as printed. The machine options this invocation was
    given (--threads, --device) come along: a resume never takes them from the run, and a user who limited the
    threads on a shared machine would not want the printed line to take every core. `budget`: the run stopped at
    its --max-minutes, which is this invocation's, not the run's; the line asks for as many minutes again (without
    it, the printed command would train to --epochs with no bound); `minutes`, when given, instead of the run's."""
    minutes = minutes or (opts.max_minutes if opts is not None else None)
    machine = f" --max-minutes {minutes:g}" if budget and minutes else ""
    if opts is not None and opts.threads:
        machine += f" --threads {opts.threads}"
    if opts is not None and opts.device not in (None, "auto"):
        machine += f" --device {shlex.quote(str(opts.device))}"
    return f"{command_name()} train --resume {shlex.quote(str(run_dir))} --epochs {epochs}{machine}"


def budget_line(session, hooks) -> str:
    """The command that continues a run its --max-minutes stopped, asking for that budget again (or the one a
    hook names: distill's student was given what the drawing left of the user's)."""
    named = (getattr(h, "resume_minutes", lambda: None)() for h in hooks)  # a plugin's may not subclass TrainHook
    minutes = next((float(m) for m in named if isinstance(m, (int, float)) and not isinstance(m, bool)
                    and math.isfinite(m) and m > 0), None)
    return resume_command(session.run_dir, session.opts.epochs, session.opts, budget=True, minutes=minutes)


def say_epochs_ended(session, reporter) -> None:
    """With --max-minutes, a run that reached --epochs first says so: a new user's 3-minute run on a small folder
    stopped after the default 10 epochs (30 steps) without a word of why it ended before its budget."""
    opts = session.opts
    if session.world.main and opts.max_minutes and session.deadline and time.monotonic() < session.deadline:
        more = resume_command(session.run_dir, max(10 * opts.epochs, opts.epochs + 1), opts, budget=True)
        reporter.message(f"done: --epochs {opts.epochs} reached before --max-minutes {opts.max_minutes:g} ran out; "
                         f"to train on in a budget, raise --epochs: {more}")


def plan(opts: TrainOptions) -> Start:
    """Decide how the run starts and fill in every option (see the module docstring)."""
    opts.validate()
    if opts.resume is None:
        return Start(_new_run(opts))
    auto = opts.resume == AUTO
    target = Path(opts.out if auto else opts.resume).expanduser()
    if not auto and opts.out and not _same_path(opts.out, opts.resume):
        raise UsageError(f"--out: got {opts.out!r} with --resume {opts.resume!r}; a resumed run stays in its own "
                         f"directory (leave --out out)")
    if not auto and not target.exists():
        raise UsageError(f"--resume: {target} does not exist; expected a run directory or a checkpoint file (or "
                         f"auto, with --out)")
    checkpoint = target / rundir.LAST if target.is_dir() or auto else target
    # lexists, not is_file: a pipe, a folder or a link to a device named last.safetensors is refused there, named
    # as what it is (it is not "no checkpoint", and the run is not started again over it)
    if os.path.lexists(checkpoint) or not (auto or target.is_dir()):
        return _resume(opts, checkpoint)  # a missing checkpoint file is refused there, with the usual message
    return _restart(opts, target, auto)


def setup_hooks(opts: TrainOptions, hooks: typing.Sequence[TrainHook]) -> None:
    """Each hook's `setup(opts)`, in order, each followed by the checks of what it changed (see `check_changes`)."""
    for hook in hooks:
        before = copy.deepcopy(opts)
        hook.setup(opts)
        check_changes(before, opts, hook_name(hook))


def check_changes(before: TrainOptions, opts: TrainOptions, who: str) -> None:
    """The options a hook's setup (`who`) changed from `before`, checked as the command line's are: each value's
    type and its option's own check (as a --config file's value), then how they go together (validate); where and
    how the run starts (NOT_RERUN: --out, --resume, --overwrite) and, on a resume, what the run fixes are not a
    hook's to change. A refusal is one UsageError naming the hook and the option, before anything is written."""
    changed = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)
               if type(getattr(opts, f.name)) is not type(getattr(before, f.name))
               or getattr(opts, f.name) != getattr(before, f.name)}  # (NaN differs from itself: checked, refused)
    if not changed:
        return
    fixed = [name for name in changed if name in NOT_RERUN or (opts.resume and RESUME_RULES[name] == FIXED)]
    if fixed:
        what = "where and how the run starts" if fixed[0] in NOT_RERUN else "what the resumed run is"
        raise UsageError(f"{who} changed {fixed[0]} in setup; a hook may not change {what} (options it changes are "
                         f"checked as the command line's, and these are the command line's alone)")
    from gentool import config_file

    config_file.check(changed, TrainOptions, f"{who}, in setup")  # each value ("{who}, in setup: limit = -64; ...")
    try:
        opts.validate()
    except GentoolError as exc:
        raise UsageError(f"{who}, in setup: {exc}") from None
    if not opts.resume:  # a folder it named is recorded absolute, as the command line's (a resume finds it)
        for name, value in dataclasses.asdict(_absolute_paths(opts)).items():
            setattr(opts, name, value)


def _new_run(opts: TrainOptions) -> TrainOptions:
    opts.check_new_run()
    return _absolute_paths(opts.with_fallbacks())


def _restart(opts: TrainOptions, run_dir: Path, auto: bool) -> Start:
    """No checkpoint in run_dir: start the run there from the beginning, from the command line (when it names the
    model) or from the options its config.json recorded."""
    if run_dir.exists() and not rundir.unstarted(run_dir):
        rundir.refuse_if_written(run_dir, "--out" if auto else "--resume")  # being started: that is the news
        raise UsageError(f"{'--out' if auto else '--resume'}: {run_dir} holds no {rundir.LAST} and files that are "
                         f"not gentool's; expected a run directory (or a new folder with --resume auto)")
    recorded = _config_options(run_dir)
    if auto and opts.model:
        fresh = dataclasses.replace(opts, resume=None, out=str(run_dir))
        return Start(_new_run(fresh))
    if not recorded:
        rundir.refuse_if_written(run_dir, "--resume")  # another process is starting it (its config.json comes next)
        raise UsageError(f"--resume: {run_dir} holds no checkpoint and no {rundir.CONFIG}; give MODEL and --data "
                         f"to start a run there")
    if opts.model and opts.model.lower() != str(recorded.get("model")).lower():
        raise UsageError(f"MODEL: got {opts.model!r}, but the run in {run_dir} is a {recorded.get('model')!r} run; "
                         f"leave MODEL out when resuming, or give {recorded.get('model')}")
    given = {k: v for k, v in opts.given().items() if k not in ("resume", "out")}
    fresh = TrainOptions(**{**recorded, **given, "out": str(run_dir)})
    note = f"{run_dir} has no checkpoint yet (its run stopped before the first one): starting it from the beginning"
    return Start(_new_run(fresh), notes=[note])


def _resume(opts: TrainOptions, checkpoint: Path) -> Start:
    from gentool.checkpoint import read_metadata  # torch: only once a run is being resumed

    meta = read_metadata(checkpoint, arg="--resume")
    run_dir = checkpoint.parent
    _check_model(opts, meta, run_dir)
    recorded = {**_config_options(run_dir), **_checked(meta["state"].get("options", {}), f"{checkpoint} (state)")}
    values, notes = {}, []
    for name in RUN_OPTIONS:
        given, saved = getattr(opts, name), recorded.get(name)
        if given is None or (name == "data" and _same_data(given, saved)):
            values[name] = saved
            continue
        differs = name in recorded and given != saved
        if RESUME_RULES[name] == FIXED and differs:
            raise UsageError(f"{flag(name)}: got {given!r}, but the run in {run_dir} uses {saved!r}; leave "
                             f"{flag(name)} out when resuming (or start a new run with another --out)")
        if RESUME_RULES[name] == RESTORED and differs:
            notes.append(f"{flag(name)} {given} differs from the {saved} the run in {run_dir} recorded; using {given}")
        values[name] = given
    resolved = dataclasses.replace(opts, model=meta["model"], resume=str(checkpoint), out=str(run_dir), **values)
    resolved = resolved.with_fallbacks()
    resolved = dataclasses.replace(resolved, **_absolute_tensorboard(resolved))
    _validate_recorded(resolved, checkpoint)
    for note in notes:
        warnings.warn(note)
    return Start(resolved, checkpoint)


def _check_model(opts: TrainOptions, meta: dict, run_dir: Path) -> None:
    """MODEL and the model's settings, when given, must be the run's own."""
    if opts.model and opts.model.lower() != meta["model"]:
        raise UsageError(f"MODEL: got {opts.model!r}, but the run in {run_dir} is a {meta['model']!r} run; leave "
                         f"MODEL out when resuming, or give {meta['model']}")
    config = meta["config"]
    given = {name: getattr(opts, name) for name in MODEL_SETTINGS if getattr(opts, name) is not None}
    for name, value in [*given.items(), *opts.params.items()]:
        shown = flag(name) if name in FIELDS else f"--param {name}"
        if name not in config:
            raise UsageError(f"{shown}: {meta['model']!r} has no setting {name!r}")
        if config[name] != value:
            raise UsageError(f"{shown}: got {value!r}, but the run in {run_dir} was built with {config[name]!r}; "
                             f"a resumed run keeps its model settings (leave {shown} out)")


def _config_options(run_dir: Path) -> dict:
    """The options a run's config.json recorded (the fallback for checkpoints that predate a recorded option), or
    {} when there is none."""
    from gentool.fileio import cannot_read, read_json

    path = run_dir / rundir.CONFIG
    if not os.path.lexists(path):
        return {}
    from gentool import schema

    try:  # not through a link: the resumed run writes there (a link is named, not read as the run's config)
        recorded = read_json(path, follow=False)
        # the fields `summary` and `report` check: a run resumed with a damaged one would be refused by them after
        options = schema.check(recorded, rundir.RUN_CONFIG, "").get("options", {})
    except OSError as exc:  # a link, a pipe, a folder, too large, unreadable: said as such
        raise UsageError(f"--resume: {cannot_read(path, exc)}") from None
    except (ValueError, AttributeError) as exc:  # schema.Invalid is a ValueError
        raise GentoolError(f"--resume: {path} is not a readable run config ({exc})") from None
    if not isinstance(options, dict):
        raise GentoolError(f"--resume: {path}: options must be a JSON object")
    keep = set(RUN_OPTIONS) | {"model", "params", "ema", *MODEL_SETTINGS}
    return _checked({k: v for k, v in options.items() if k in keep}, str(path))


def _checked(options, source: str) -> dict:
    """Recorded options whose names are known and whose values have their field's type (files may be hostile)."""
    if not isinstance(options, dict):
        raise GentoolError(f"--resume: {source}: options must be a JSON object")
    hints = typing.get_type_hints(TrainOptions)
    checked = {}
    for name, value in options.items():
        if name not in FIELDS or RESUME_RULES[name] == FREE:
            continue
        if not _has_type(value, hints[name]):
            raise GentoolError(f"--resume: {source}: recorded option {name} is {value!r}, which is not a "
                               f"valid {flag(name)} value")
        checked[name] = value
    return checked


def _has_type(value, hint) -> bool:
    kinds = typing.get_args(hint) or (hint,)
    if value is None:
        return type(None) in kinds
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and (int in kinds or float in kinds):
        return True
    if isinstance(value, dict):
        return dict in kinds and all(isinstance(k, str) for k in value)
    return any(k in (str, float) and isinstance(value, k) for k in kinds)


def _validate_recorded(opts: TrainOptions, checkpoint: Path) -> None:
    try:
        opts.validate()
    except UsageError as exc:
        raise GentoolError(f"--resume: {checkpoint}: the run's options are invalid ({exc})") from None


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _same_data(given: str, saved) -> bool:
    if not isinstance(saved, str):
        return False
    if given.lower() in BUILTIN_DATA or saved.lower() in BUILTIN_DATA:
        return given.lower() == saved.lower()
    return _same_path(given, saved)


def _absolute_tensorboard(opts: TrainOptions) -> dict:
    """--tensorboard DIR as an absolute path (it is recorded: a resume from elsewhere logs to the same place)."""
    if not opts.tensorboard or opts.tensorboard == FIELDS["tensorboard"].metadata["bare"]:
        return {}
    return {"tensorboard": str(Path(opts.tensorboard).expanduser().absolute())}


def _absolute_paths(opts: TrainOptions) -> TrainOptions:
    """Record data folders as absolute paths, so that a resume from another working directory finds them."""
    changes = {}
    if opts.data_dir:
        changes["data_dir"] = str(Path(opts.data_dir).expanduser().absolute())
    if opts.data and opts.data.lower() not in BUILTIN_DATA and Path(opts.data).expanduser().is_dir():
        changes["data"] = str(Path(opts.data).expanduser().absolute())
    changes.update(_absolute_tensorboard(opts))
    return dataclasses.replace(opts, **changes)


__all__ = ["Start", "plan", "resume_command", "RUN_OPTIONS", "setup_hooks"]
