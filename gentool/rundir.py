"""Run directories: naming, refusing to reuse one by accident, checking they can be written, and their files."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path

from gentool.errors import GentoolError, UsageError

RUNS_ENV = "GENTOOL_RUNS"  # the folder default run directories go in (else runs/)
CONFIG = "config.json"
METRICS = "metrics.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
SAMPLES = "samples"
WRITE_PROBE = ".gentool-write-test"
OWNED_GLOBS = (CONFIG, METRICS, "*.safetensors", f"{SAMPLES}/*.png", "*.png", "*.gif")


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:04d}.safetensors"


def default_run_dir(model: str, data_name: str, root: str | None = None) -> Path:
    """$GENTOOL_RUNS (else runs)/<model>-<data>-<timestamp>, with a suffix if that name is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root or os.environ.get(RUNS_ENV) or "runs").expanduser() / f"{model}-{data_name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def unstarted(path: Path) -> bool:
    """Whether `path` holds a run that never reached its first checkpoint and nothing else: gentool's config.json
    with only its metrics, sample grids, figures and temporaries beside it (or just the empty samples/ folder of a
    start killed before it wrote config.json). Starting the run again there loses nothing."""
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not (path / CONFIG).is_file():
        return all(_temporary(f) or (f.name == SAMPLES and f.is_dir() and not any(f.iterdir())) for f in entries)
    try:
        if "gentool_version" not in json.loads((path / CONFIG).read_text()):
            return False
    except (OSError, ValueError, TypeError):
        return False
    for f in entries:
        if f.name == SAMPLES and f.is_dir():
            if not all(g.match("epoch_*.png") or _temporary(g) for g in f.iterdir()):
                return False
        elif not (f.name in (CONFIG, METRICS, "loss.png", "progress.gif") or _temporary(f)):
            return False
    return True


def _temporary(f: Path) -> bool:
    """gentool's hidden files: half-written temporaries (.NAME.XXXX.tmp) and its own .gentool* files."""
    return f.name.startswith(".") and f.name.endswith(".tmp") or f.name.startswith(".gentool")


def prepare_new(path: Path, overwrite: bool) -> bool:
    """Create the run folder; returns whether it was created here. A folder holding only the leftovers of a run
    that never reached its first checkpoint is started again; any other non-empty one is refused unless
    `overwrite` (then only gentool's own files in it are removed)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out: {path} exists and is not a directory; expected a run directory path")
    created = not path.exists()
    if path.is_dir() and any(path.iterdir()):
        if not overwrite and not unstarted(path):
            quoted = shlex.quote(str(path))
            raise UsageError(f"--out: run directory {path} already holds a run; continue it with --resume {quoted} "
                             f"(or --resume auto), or pass --overwrite to replace it")
        remove_own_files(path)
    try:
        (path / SAMPLES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create run directory {path} ({exc.strerror})") from None
    return created


def remove_own_files(path: Path) -> None:
    """Delete gentool's own files in a run folder (anything else in it stays)."""
    for pattern in OWNED_GLOBS:
        for f in path.glob(pattern):
            f.unlink()
    remove_stale_temporaries(path)


def discard_unstarted(path: Path, created: bool) -> None:
    """Undo a start that failed before the run's first checkpoint: its files go, and the folder too when this start
    created it, so that no dead-end run directory is left behind."""
    if not unstarted(path):
        return
    remove_own_files(path)
    for f in path.iterdir():
        if f.is_file() and _temporary(f):
            f.unlink(missing_ok=True)
    for folder in (path / SAMPLES, path) if created else (path / SAMPLES,):
        try:
            folder.rmdir()
        except OSError:  # not empty (something else is in it) or already gone
            pass


def check_writable(path: Path, need_bytes: int = 0) -> None:
    """Fail before training when the folder cannot be written or lacks the space for a few checkpoints."""
    probe = path / WRITE_PROBE
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out: run directory {path} is not writable ({exc.strerror})") from None
    free = shutil.disk_usage(path).free
    if need_bytes and free < need_bytes:
        raise GentoolError(f"--out: only {free / 2**20:.0f} MiB free in {path}; training needs about "
                           f"{need_bytes / 2**20:.0f} MiB for its checkpoints")


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written temporaries (.NAME.XXXX.tmp) that a killed run left behind."""
    for f in list(path.glob(".*.tmp")) + list((path / SAMPLES).glob(".*.tmp")):
        f.unlink(missing_ok=True)
