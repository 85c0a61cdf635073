"""Run directories: naming, refusing to reuse one by accident, checking they can be written, their files, and the
lock that gives a run one writer at a time."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from gentool import schema as s
from gentool.errors import UsageError
from gentool import environment, fileio, links, paths
from gentool.fileio import atomic_copy, read_regular
from gentool.history import PartialEpoch
from gentool.runlock import (  # noqa: F401 (the lock's names, as the commands import them from here)
    _HELD, LOCK, LOCK_FILES, PROCESS, SWEEP_LOCK, ProcessLock, holds, in_use, refuse_if_written, release_run,
    release_runs, undo_before_release, writer)

RUNS_ENV = environment.RUNS_ENV
CONFIG = "config.json"
METRICS = "metrics.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
LOSS_PNG, PROGRESS_GIF = "loss.png", "progress.gif"  # the run's figures
SAMPLES = "samples"
LATEST_GRID = "latest.png"  # samples/latest.png: the fixed-noise grid as the weights drew it last (inside an epoch)
TENSORBOARD = "tensorboard"  # train --tensorboard without DIR writes its event files here
TENSORBOARD_AUTO = "auto"  # the --tensorboard value meaning that folder
EVENTS = "events.out.tfevents.*"
TEACHER_GRID = "teacher.png"  # samples/teacher.png of a distilled student: the teacher's samples from the same noise
# The names a run writes, and only those: --overwrite removes what matches, so a file of the user's in the folder
# (a grid drawn with `gentool sample --out RUN/x.png`, a copied checkpoint) must not (*.png, *.safetensors did).
OWNED_GLOBS = (CONFIG, METRICS, LAST, BEST, "epoch_[0-9]*.safetensors", "step_[0-9]*.safetensors", LOSS_PNG,
               PROGRESS_GIF, f"{SAMPLES}/epoch_[0-9]*.png", f"{SAMPLES}/{LATEST_GRID}", f"{SAMPLES}/{TEACHER_GRID}",
               f"{TENSORBOARD}/{EVENTS}")
TEMPORARY_GLOBS = (".*.tmp", f"{SAMPLES}/.*.tmp")


def step_checkpoint(run_dir: Path, step: int) -> Path:
    """The checkpoint --checkpoint-minutes keeps at `step` (steps count on across resumes: names never repeat)."""
    return run_dir / f"step_{step:08d}.safetensors"


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:04d}.safetensors"


def default_run_dir(model: str, data_name: str, root: str | None = None) -> Path:
    """$GENTOOL_RUNS (else runs)/<model>-<data>-<timestamp>, with a suffix if that name is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    home = Path(root).expanduser() if root else environment.runs_folder()
    base = (home or Path("runs")) / f"{model}-{data_name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def taken(path: Path, resume: str) -> UsageError:
    """The refusal of a non-empty --out that is no unstarted run. A run (its config.json or checkpoint is there) is
    offered `resume`, the command that continues it; a folder of other files is said to hold no run (it was told it
    held one, and to resume what is not there)."""
    if any(os.path.lexists(path / name) for name in (CONFIG, LAST)):
        return UsageError(f"--out: run directory {path} already holds a run; continue it with {resume} (and "
                          f"--epochs N to train past the epochs it was asked for), or pass --overwrite to replace it")
    first = next((f.name for f in path.iterdir()), "")  # one name: a folder may hold very many
    return UsageError(f"--out: {path} holds files that are not a gentool run ({first!r} among them); choose a new or "
                      f"empty folder, or pass --overwrite to start the run there (gentool's own files only are "
                      f"replaced; the others stay)")


def unstarted(path: Path) -> bool:
    """Whether `path` holds a run that never reached its first checkpoint and nothing else: gentool's config.json
    with only its metrics, sample grids, figures and temporaries beside it (or just the empty samples/ folder of a
    start killed before it wrote config.json). Starting the run again there loses nothing."""
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    if any(f.is_symlink() for f in entries):  # gentool makes no links: a run folder holding one is not its own
        return False
    if not (path / CONFIG).is_file():
        return all(temporary(f) or (f.name == SAMPLES and f.is_dir() and not any(f.iterdir())) for f in entries)
    try:
        if "gentool_version" not in json.loads(read_regular(path / CONFIG, 1 << 20)):
            return False
    except (OSError, ValueError, TypeError, RecursionError):
        return False
    for f in entries:
        if f.name == SAMPLES and f.is_dir():
            if not all(g.match("epoch_*.png") or temporary(g) for g in f.iterdir()):
                return False
        elif f.name == TENSORBOARD and f.is_dir():
            if not all(g.match(EVENTS) for g in f.iterdir()):
                return False
        elif not (f.name in (CONFIG, METRICS, LOSS_PNG, PROGRESS_GIF) or temporary(f)):
            return False
    return True


def refuse_links(path: Path, arg: str) -> None:
    """Refuse, before any work, a run folder where a file or folder gentool writes is a symbolic link, or a file
    it writes or deletes is a hard link (a file with other names: writing or deleting it changes the user's)."""
    try:
        link = next((f for f in path.iterdir() if _gentool_name(f) and links.link_kind(f)), None)
        if link is not None:
            raise links.LinkRefused(str(link))
        files = links.refuse_linked(path, OWNED_GLOBS + TEMPORARY_GLOBS)  # in samples/ and tensorboard/ too
    except links.LinkRefused as exc:
        raise UsageError(f"{arg}: {exc}") from None
    refuse_special_files(files, arg)


def refuse_special_files(files, arg: str) -> None:
    """Refuse, before any work, a device, named pipe or socket where gentool writes, replaces or moves a run's file
    (a pipe at a later epoch's grid stopped a run hours in, exit 2 and no resume line; --overwrite deleted them)."""
    for f in files:
        why = fileio.special_file(f)
        if why:
            raise UsageError(f"{arg}: {f} {why}")


def _gentool_name(f: Path) -> bool:
    """Whether gentool writes, cleans or locks a file or folder of this name in a run directory."""
    return temporary(f) or f.name in (SAMPLES, TENSORBOARD) or any(f.match(g) for g in OWNED_GLOBS if "/" not in g)


def temporary(f: Path) -> bool:
    """gentool's hidden files: half-written temporaries (.NAME.XXXX.tmp) and its own .gentool* files."""
    return f.name.startswith(".") and f.name.endswith(".tmp") or f.name.startswith(".gentool")


def remove_own_files(path: Path) -> None:
    """Delete gentool's own files in a run folder (anything else in it stays); refused, before anything is deleted,
    when a folder in it is a link (its files are not the run's)."""
    fileio.remove_matching(path, OWNED_GLOBS + TEMPORARY_GLOBS)


def check_writable(path: Path, need_bytes: int = 0, longest: str = CONFIG, arg: str = "--out",
                   what: str = "run") -> None:
    """Fail before any work when the folder (made later, if it is not there yet) cannot be written, cannot hold the
    run's longest path (`longest`, relative to it: see `longest_path`) or lacks the space for a few checkpoints.
    `what` the folder is (a run's, a sweep's), for the message."""
    try:
        paths.write_probe(path, longest)
    except OSError as exc:
        raise paths.refusal(exc, f"{arg}: {what} directory {path} is not writable ({fileio.cause(exc)}; tried a name "
                                 f"as long as the {what}'s longest, {longest})") from None
    paths.require_free(path, need_bytes, arg, f"this {what} (its checkpoints)")


def check_room(run_dir: Path, opts, steps: int, need_bytes: int = 0, arg: str = "--out") -> None:
    """`check_writable` for a run with these train options (its longest path, `longest_path`), and the same for
    the folder `--tensorboard DIR` puts its event files in, outside the run directory."""
    check_writable(run_dir, need_bytes, longest_path(opts, steps), arg)
    if opts.tensorboard and opts.tensorboard != TENSORBOARD_AUTO:
        events = Path(opts.tensorboard).expanduser()
        try:
            paths.write_probe(events, f"{Path(run_dir).name}/{events_name()}")
        except OSError as exc:
            tried = events / Path(run_dir).name / events_name()
            raise paths.refusal(exc, f"--tensorboard: {events} cannot hold the run's event files "
                                     f"({fileio.cause(exc)}; tried {tried})") from None


def run_bytes(model, opts, steps: int | None, resumed: bool = False) -> int:
    """The disk a run of `model` with these train options and up to `steps` steps asks for before it starts: four
    checkpoints (last, best, an epoch copy and one being written) and the step copies --checkpoint-minutes keeps;
    `resumed` (last and best are there already): two, last.safetensors' replacement (a temporary until it is renamed
    over the old one) and an epoch or best copy, and the copies (a resume that counted only the copies passed on a
    nearly full disk and failed at its first save, every time it was run again). train checks its own run against
    it; distill its student's, sweep its largest trial's, before any work."""
    from gentool.checkpoint import checkpoint_size_hint

    return ((2 if resumed else 4) + kept_copies(opts, steps)) * checkpoint_size_hint(model)


def kept_copies(opts, steps: int | None) -> int:
    """How many step_NNNNNNNN.safetensors copies --checkpoint-minutes will keep, as far as the start can count
    them: one per interval of --max-minutes, at most one a step (`steps` None: not known yet, as when a sweep plans
    trials whose data it has not read; then the intervals alone bound it). Without --max-minutes the run's length in
    minutes is unknown, so none are counted here; `room_for_copy` checks each when it is due."""
    if not opts.checkpoint_minutes or not opts.max_minutes:
        return 0
    copies = math.ceil(opts.max_minutes / opts.checkpoint_minutes)
    return copies if steps is None else min(max(steps, 0), copies)


def room_for_copy(last: Path, minutes: float, warned: set) -> bool:
    """Whether the disk holds a kept copy of `last` with room to spare for the next saves (three times its size: the
    copy, last.safetensors' next temporary and an epoch copy); when it
    does not, the copies stop with one warning per run (`warned`: the run's own record of it; last.safetensors is
    still saved, so --resume loses nothing), rather than a tiny --checkpoint-minutes filling the disk a copy a
    step."""
    size, free = last.stat().st_size, shutil.disk_usage(last.parent).free
    if free >= 3 * size:  # after the copy: room for last.safetensors' next temporary and an epoch copy
        return True
    if "disk" not in warned:
        warned.add("disk")
        warnings.warn(f"--checkpoint-minutes {minutes:g}: only {free / 2**20:.0f} MiB free in {last.parent}; no more "
                      f"step_*.safetensors copies are kept ({last.name} is still saved, and --resume continues it)")
    return False


def sample_grid(run_dir: Path, epoch: int) -> Path:
    """The sample grid a run draws after `epoch`."""
    return run_dir / SAMPLES / f"epoch_{epoch:04d}.png"


def longest_path(opts, steps: int) -> str:
    """The longest path, relative to the run directory, that a run with these train options (epochs and what is
    saved when) and up to `steps` steps writes: each file as the temporary it is written through, which is longer
    than its name. Options not given count as a new run's values (a sweep's trial or distill's student is checked
    before train fills them in)."""
    opts = opts.with_fallbacks()
    here = Path()
    names = [CONFIG, METRICS, LAST, BEST, LOSS_PNG, PROGRESS_GIF, LOCK + ".owner"]
    names += [epoch_checkpoint(here, opts.epochs)] if opts.checkpoint_every else []
    names += [step_checkpoint(here, steps)] if opts.checkpoint_minutes else []
    names += [sample_grid(here, opts.epochs)] if opts.sample_every else []
    written = [Path(n).parent / fileio.temporary_name(Path(n).name) for n in map(str, names)]
    if opts.tensorboard == TENSORBOARD_AUTO:
        written.append(Path(TENSORBOARD) / events_name())
    return str(max(written, key=lambda p: len(str(p))))


def events_name() -> str:
    """The name of the event file a run's TensorBoard writer makes (written directly, not through a temporary), as
    tensorboard's EventFileWriter names it: time, host, process, then a count of the writers this process opened
    (six digits are more than it opens)."""
    return f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{10**5}"


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written temporaries (.NAME.XXXX.tmp) that a killed run left behind."""
    fileio.remove_matching(path, TEMPORARY_GLOBS)


def lock_run(run_dir: Path, arg: str) -> None:
    """Make this process the run directory's one writer until `release_runs` (or its end); a run another process
    is writing is refused with a message naming that process. Taking a lock this process holds is a no-op."""
    key = Path(run_dir).resolve()
    if key in _HELD:
        return
    try:
        links.own(run_dir)
    except links.LinkRefused as exc:
        raise UsageError(f"{arg}: {exc}") from None
    try:  # the lock's files are named by the absolute path: one too long for the system is refused here, in one line
        paths.write_probe(key, fileio.temporary_name(LOCK_FILES[1]))
    except OSError as exc:
        raise paths.refusal(exc, f"{arg}: run directory {run_dir} cannot be written ({fileio.cause(exc)})") from None
    lock = ProcessLock(key / LOCK)
    try:
        acquired = lock.acquire(wait=False)
    except links.LinkRefused as exc:
        raise UsageError(f"{arg}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{arg}: cannot lock run directory {run_dir} ({exc.strerror or exc})") from None
    if not acquired:
        raise in_use(arg, run_dir, lock.holder())
    _HELD[key] = lock


def restore_periodic(ckpt_path: Path, state: dict) -> Path | None:
    """The periodic checkpoint of the epoch `ckpt_path` (a run's last.safetensors) ends, when the schedule asked for
    one and it is missing: a kill between the two writes loses it, and the two files hold the same state, so it is
    copied back. Returns the restored path, if any."""
    every = (state.get("options") or {}).get("checkpoint_every")
    epoch = state["epoch"]
    inside_epoch = PartialEpoch.from_state(state) is not None  # taken inside the next epoch: not an epoch's end
    if ckpt_path.name != LAST or inside_epoch or not every or not epoch or epoch % every:
        return None
    target = epoch_checkpoint(ckpt_path.parent, epoch)
    if target.exists():
        return None
    atomic_copy(ckpt_path, target)
    return target


# config.json as gentool reads it back (from runs that may have been edited or damaged); metrics.json's own
# reading, checking and cutting back on resume is gentool.history's.
RUN_CONFIG = s.Obj({}, {"model": s.Opt(s.Str(200)), "config": s.Map(s.SCALAR, max_len=200),
                        "data": s.Opt(s.Obj({}, {"name": s.Opt(s.Str(200))}))})


def read_run_config(path: Path, arg: str = "RUN_DIR") -> dict:
    """A run's config.json, every field gentool uses checked; an unreadable or invalid file is one line naming
    `arg`, the file and the field."""
    return s.read_checked(path, RUN_CONFIG, arg)
