"""Run directories: naming, refusing to reuse one by accident, checking they can be written, and their files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from gentool.errors import GentoolError, UsageError

CONFIG = "config.json"
METRICS = "metrics.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
SAMPLES = "samples"
OWNED_GLOBS = (CONFIG, METRICS, "*.safetensors", f"{SAMPLES}/*.png", "*.png", "*.gif")


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:04d}.safetensors"


def default_run_dir(model: str, data_name: str, root: str = "runs") -> Path:
    """runs/<model>-<data>-<timestamp>, with a suffix if that name is taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{model}-{data_name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def prepare_new(path: Path, overwrite: bool) -> Path:
    """Create the run folder; an existing non-empty one is refused unless `overwrite` (then only gentool's own files
    in it are removed)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out: {path} exists and is not a directory; expected a run directory path")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UsageError(f"--out: run directory {path} already exists; pass --resume {path} to continue it "
                             f"or --overwrite to replace it")
        for pattern in OWNED_GLOBS:
            for f in path.glob(pattern):
                f.unlink()
    try:
        (path / SAMPLES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create run directory {path} ({exc.strerror})") from None
    check_writable(path)
    return path


def check_writable(path: Path, need_bytes: int = 0) -> None:
    """Fail before training when the folder cannot be written or lacks the space for a few checkpoints."""
    probe = path / ".gentool-write-test"
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
