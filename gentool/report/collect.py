"""What a run, a sweep or a folder of runs recorded, read and checked field by field, as plain dicts for the
templates. The report is a view: nothing here computes a number the run did not record. The one thing rebuilt is
the architecture table, from the recorded config, on torch's meta device (shapes and counts, no weights, no memory),
so even a hostile width cannot allocate anything.

Files read may be hostile: every JSON file and image is size-checked before it is read, every field used is
type-checked, a sweep's trial folders must lie inside the sweep, and nothing is unpickled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gentool import rundir
from gentool import seed_stats
from gentool import sweep as sw
from gentool.errors import GentoolError, UsageError
from gentool.figures import PROGRESS_GIF
from gentool.history import is_partial, partial_records, read_history
from gentool.sweep_figures import MATRIX_PNG
from gentool.registry import get_entry
from gentool.fileio import MISSING, not_regular
from gentool.meta import shapes_only
from gentool.report.readers import (Picture, as_object, clean_events, is_number, is_scalar,
                                    read_json_file, read_picture, readable)
from gentool.results import find_runs
from gentool.summary import summarize

MAX_EVAL_FILES = 50
GRID_NAME = re.compile(r"epoch_([0-9]{1,9})\.png")  # ASCII digits (\d takes any script's)
ACCEPTED = "a run directory (holding config.json), a sweep directory (holding sweep.json) or a folder of run directories"


def kind_of(path: Path) -> str:
    """'run', 'sweep' or 'folder'; a one-line error naming PATH otherwise."""
    if not path.exists():
        raise UsageError(f"PATH: {path} does not exist; expected {ACCEPTED}")
    if not path.is_dir():
        raise UsageError(f"PATH: {path} is not a directory; expected {ACCEPTED}")
    # os.path.lexists: a pipe or a folder there still makes the kind (its reader then names what it is, rather
    # than "holds no config.json")
    if os.path.lexists(path / sw.MANIFEST):
        return "sweep"
    if os.path.lexists(path / rundir.CONFIG):
        return "run"
    if find_runs(path):
        return "folder"
    rundir.refuse_if_written(path, "PATH")  # a run another process is starting has no config.json yet
    raise UsageError(f"PATH: {path} holds no config.json, no sweep.json and no run directories; expected {ACCEPTED}")


def epoch_grids(run_dir: Path) -> dict[int, Path]:
    """samples/epoch_NNNN.png by epoch (whatever is there under such a name: one that is no regular file is named
    as left out when it is read)."""
    folder = run_dir / rundir.SAMPLES
    if not folder.is_dir():
        return {}
    found = (GRID_NAME.fullmatch(p.name) for p in folder.iterdir())
    return {int(m.group(1)): folder / m.group(0) for m in found if m}


def evaluation_files(run_dir: Path, notes: list[str]) -> list[dict]:
    """`gentool evaluate … --out RUN/NAME.json` results: every *.json at the top of the run directory (other than
    config.json and metrics.json) whose content is an evaluate result (an object with "metrics", "extractor",
    "split" and "n"). An export's description (NAME.onnx.json) is passed over; other JSON files are named in a note
    and left out."""
    results = []
    for path in sorted(run_dir.glob("*.json"))[:MAX_EVAL_FILES]:
        if path.name in (rundir.CONFIG, rundir.METRICS):
            continue  # (one that is no regular file is named as left out, as when it cannot be read)
        try:
            content = read_json_file(path)
        except GentoolError as exc:
            notes.append(f"{exc}; left out")
            continue
        if isinstance(content, dict) and {"inputs", "output", "checkpoint_sha256"} <= content.keys():
            continue  # `gentool export`'s description of the file beside it (README: written into the run)
        if not (isinstance(content, dict) and isinstance(content.get("metrics"), dict)
                and isinstance(content.get("extractor"), dict) and isinstance(content.get("split"), str)
                and is_number(content.get("n"))):
            notes.append(f"{path.name}: not a gentool evaluate result (no metrics, extractor, split and n); left out")
            continue
        results.append({"file": path.name, **content})
    return results


def _read_config(run_dir: Path) -> dict:
    where = run_dir / rundir.CONFIG
    config = as_object(read_json_file(where), str(where))
    if not isinstance(config.get("model"), str):
        raise GentoolError(f"{where}: \"model\" must be the model's name")
    for key in ("config", "options", "data"):
        if not isinstance(config.get(key, {}), dict):
            raise GentoolError(f"{where}: \"{key}\" must be a JSON object")
    return config


def _read_history(run_dir: Path, notes: list[str]) -> dict:
    where = run_dir / rundir.METRICS
    if not readable(where, notes):  # a pipe or a folder there is named as left out; nothing there is no epoch yet
        if not_regular(where) == MISSING:
            notes.append(f"no {rundir.METRICS}: the run recorded no epoch yet")
        return {"epochs": [], "events": []}
    history = read_history(where, "PATH")  # checked as summary, sweeps and resume check it
    history["epochs"] = history.get("epochs", [])
    history["events"] = clean_events(history.get("events", []), str(where))  # the report shows kind and message
    for key in ("evaluation", "best", "heldout"):
        if not isinstance(history.get(key) or {}, dict):
            raise GentoolError(f"{where}: \"{key}\" must be a JSON object")
    return history


def architecture(config: dict) -> tuple[dict | None, str | None]:
    """`gentool summary`'s tables for the recorded config (networks built on the meta device), or a note why not."""
    try:
        entry = get_entry(config["model"])
    except UsageError:
        source = config.get("model_source")
        hint = f" (install the plugin package {source!r})" if isinstance(source, str) and source != "built-in" else ""
        return None, f"model {config['model']!r} is not installed here{hint}, so its networks cannot be listed"
    try:
        model_config = entry.cls.config_class.from_dict(config.get("config", {}))
        model_config.validate()
        with shapes_only():
            model = entry.cls(model_config)
        return summarize(model), None
    except Exception as exc:  # a config this gentool cannot build: say so, the rest of the report still stands
        return None, f"the recorded config does not build a {config['model']} here ({type(exc).__name__}: {exc})"


def _checkpoints(run_dir: Path, notes: list[str]) -> list[dict]:
    return [{"file": p.name, "bytes": p.stat().st_size} for p in sorted(run_dir.glob("*.safetensors"))
            if readable(p, notes)]


def best_checkpoint(history: dict, run_dir: Path, notes: list[str]) -> str:
    """Which epoch best.safetensors holds and why (from metrics.json's "best"), in one sentence."""
    best = history.get("best") or {}
    state = not_regular(run_dir / rundir.BEST)  # None: a checkpoint file; a pipe or a folder: _checkpoints names it
    epoch, fid = best.get("epoch"), best.get("fid")
    if not is_number(epoch):
        if state is None:
            notes.append(f"{rundir.BEST} exists but metrics.json does not say which epoch it holds")
        return ("No best checkpoint: the run was trained without --eval-every or --stop-on-divergence, so "
                "last.safetensors is the one to use.")
    evaluation = history.get("evaluation") or {}
    if is_number(fid):
        every = evaluation.get("every")
        how = f"; --eval-every {every}" if is_number(every) else ""
        text = f"best.safetensors holds epoch {epoch}, whose samples scored the lowest FID of the run ({fid:.4g}{how})."
        if isinstance(best.get("rule"), str) and is_number(best.get("fid_high")):
            text = (f"best.safetensors holds epoch {epoch}, FID {fid:.4g} (interval up to {best['fid_high']:.4g}"
                    f"{how}), kept as {best['rule']}.")
    else:
        text = (f"best.safetensors holds epoch {epoch}: the last epoch without a divergence (kept by "
                f"--stop-on-divergence, without --eval-every).")
    if state == MISSING:
        notes.append(f"metrics.json names a best epoch ({epoch}) but {rundir.BEST} is missing")
    return text


def samples(run_dir: Path, records: list[dict], best_epoch, notes: list[str], animation: bool) -> dict[str, Picture]:
    """The fixed-noise grids of the last epoch that wrote one ("last") and of the best epoch ("best"), and, with
    `animation`, progress.gif ("progress"); what is missing or left out is said in a note."""
    written = epoch_grids(run_dir)
    grids = {epoch: path for epoch, path in written.items() if readable(path, notes)}  # the others are named
    found = {}
    last_epoch = records[-1]["epoch"] if records else None
    if grids:
        last = max(grids)
        when = "the last epoch" if last == last_epoch else "the last grid written" + (
            f" (the run reached epoch {last_epoch})" if last_epoch is not None else "")  # None: no epochs read
        when += " and the best checkpoint" if last == best_epoch else ""
        found["last"] = _picture(grids[last], notes, f"Grid of samples drawn from the fixed noise at epoch {last}",
                                 f"Epoch {last}: {when}.")
    found.update(_stop_and_teacher_grids(run_dir, grids, records, notes))
    if not written and "latest" not in found:  # (grids that are no regular files are named above as left out)
        notes.append("no sample grids (samples/epoch_NNNN.png): the run wrote none (--sample-every 0) or no epoch ended")
    if is_number(best_epoch) and best_epoch in grids:
        if best_epoch != max(grids):
            found["best"] = _picture(grids[best_epoch], notes, f"Grid of samples drawn from the fixed noise at epoch "
                                     f"{best_epoch}, the best checkpoint's", f"Epoch {best_epoch}: the best checkpoint.")
    elif is_number(best_epoch) and best_epoch not in written:
        notes.append(f"no sample grid for the best epoch ({best_epoch}) was written (--sample-every)")
    gif = run_dir / PROGRESS_GIF
    if os.path.lexists(gif) and not animation:
        notes.append(f"{PROGRESS_GIF} left out (--no-animations)")
    elif os.path.lexists(gif):  # read (or named as left out: a pipe, a folder) by _picture
        span = f"epochs {min(grids)} to {max(grids)}" if grids else "the epochs"
        found["progress"] = _picture(gif, notes, f"Animation of the fixed-noise sample grid over {span}, each frame "
                                     f"captioned with its epoch", f"{PROGRESS_GIF}: the grid over the epochs.")
    else:
        notes.append(f"no {PROGRESS_GIF}: it is drawn when a run ends")
    return {k: v for k, v in found.items() if v is not None}


def _stop_and_teacher_grids(run_dir: Path, grids: dict[int, Path], records: list[dict], notes: list[str]) -> dict:
    """samples/latest.png when the run's last record is of an epoch stopped inside (or in progress) and the grid is
    newer than every epoch grid (a run stopped inside its first epoch has no other grid; one stopped between
    epochs drew the last epoch's weights again), and a distilled student's samples/teacher.png (the teacher's
    samples from the same noise as the student's grids)."""
    found, folder = {}, run_dir / rundir.SAMPLES
    latest = folder / rundir.LATEST_GRID
    inside = records[-1] if records and is_partial(records[-1]) else None
    if inside and os.path.lexists(latest) and (not grids or _mtime(latest) > max(map(_mtime, grids.values()))):
        share = inside.get("epoch_fraction")
        where = f"epoch {inside['epoch']}" + (f" ({share:.0%} of its steps)" if is_number(share) else "")
        found["latest"] = _picture(latest, notes, f"Grid of samples drawn from the fixed noise part-way through "
                                   f"{where}", f"{rundir.LATEST_GRID}: the weights part-way through {where}, where "
                                   f"the run stopped (or is).")
    teacher = folder / rundir.TEACHER_GRID
    if os.path.lexists(teacher):
        found["teacher"] = _picture(teacher, notes, "Grid of the teacher's samples from the same fixed noise",
                                    f"{rundir.TEACHER_GRID}: the teacher's samples from the same noise (distill).")
    return found


def _mtime(path: Path) -> int:
    return os.lstat(path).st_mtime_ns  # lstat: a link is not followed to read when it was made


def _picture(path: Path, notes: list[str], alt: str, caption: str) -> Picture | None:
    try:
        return read_picture(path, alt, caption)
    except GentoolError as exc:
        notes.append(f"{exc}; left out")
        return None


def collect_run(run_dir: Path, name: str, anchor: str, animation: bool = True) -> dict:
    """Everything a run's section shows, read from its files."""
    notes: list[str] = []
    config = _read_config(run_dir)
    history = _read_history(run_dir, notes)
    records = history["epochs"]
    arch, why = architecture(config)
    if why:
        notes.append(why)
    best = history.get("best") or {}
    return {"name": name, "anchor": anchor, "path": str(run_dir), "config": config, "history": history,
            "records": records, "events": history["events"], "architecture": arch,
            "partial": [r["epoch"] for r in partial_records(records)],
            "best_text": best_checkpoint(history, run_dir, notes), "best_epoch": best.get("epoch"),
            "checkpoints": _checkpoints(run_dir, notes),
            "samples": samples(run_dir, records, best.get("epoch"), notes, animation),
            "evaluations": evaluation_files(run_dir, notes), "notes": notes}


def slug(text: str, taken: set[str]) -> str:
    """An HTML id from `text` (letters, digits, dashes), made unique among `taken` (which it joins)."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"
    base = base if base[0].isalpha() else f"r-{base}"
    anchor, k = base, 2
    while anchor in taken:
        anchor, k = f"{base}-{k}", k + 1
    taken.add(anchor)
    return anchor


def find_sweeps(root: Path) -> list[Path]:
    """Sweep directories (holding sweep.json) below `root`, sorted."""
    return sorted({p.parent for p in Path(root).rglob(sw.MANIFEST)})  # one that is no regular file: said when read


def collect_runs(root: Path, taken: set[str], animations: bool = True, skip: list[Path] = ()) -> list[dict]:
    """Every run directory below `root` (except those inside the folders in `skip`: a sweep's trials), each read
    on its own: one that cannot be read keeps its place with the reason instead of failing the report."""
    runs = []
    for run_dir in find_runs(root):
        if any(run_dir.is_relative_to(folder) for folder in skip):
            continue
        name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        anchor = slug(name, taken)
        try:
            runs.append(collect_run(run_dir, name, anchor, animations))
        except (GentoolError, OSError) as exc:
            runs.append({"name": name, "anchor": anchor, "path": str(run_dir), "error": str(exc)})
    return runs


def _check_grid(grid, where: str) -> dict[str, list]:
    if not (isinstance(grid, dict) and grid and all(isinstance(v, list) and v and all(is_scalar(x) for x in v)
                                                    for v in grid.values())):
        raise GentoolError(f"{where}: \"grid\" must map each axis to a non-empty list of values")
    return grid


def _check_trial(trial, i: int, grid: dict, sweep_dir: Path, where: str) -> dict:
    trial = as_object(trial, f"{where}: trials[{i}]")
    values, name = trial.get("values"), trial.get("run_dir")
    if not (isinstance(values, dict) and values.keys() == grid.keys()
            and all(values[a] in grid[a] for a in grid)):
        raise GentoolError(f"{where}: trials[{i}].values must give one value of the grid for each axis")
    # a hostile manifest must not point the report at files outside the sweep
    if not (isinstance(name, str) and name and Path(name).name == name and name not in (".", "..")):
        raise GentoolError(f"{where}: trials[{i}].run_dir must be a folder name inside the sweep")
    for key in ("final", "metrics"):
        if not isinstance(trial.get(key) or {}, dict):
            raise GentoolError(f"{where}: trials[{i}].{key} must be a JSON object")
    if not isinstance(trial.get("status"), str):
        raise GentoolError(f"{where}: trials[{i}].status must be text")
    return {**trial, "index": i, "path": sweep_dir / name}


def collect_sweeps(root: Path, folders: list[Path], taken: set[str], animations: bool = True) -> list[dict]:
    """The sweeps in a folder's page, each named by its place in `root`; one that cannot be read keeps its place
    with the reason."""
    sweeps = []
    for folder in folders:
        name = str(folder.relative_to(root))
        anchor = slug(f"sweep-{name}", taken)
        try:
            sweeps.append({**collect_sweep(folder, taken, animations), "name": name, "anchor": anchor})
        except (GentoolError, OSError) as exc:
            sweeps.append({"name": name, "anchor": anchor, "path": str(folder), "error": str(exc)})
    return sweeps


def collect_sweep(sweep_dir: Path, taken: set[str], animations: bool = True) -> dict:
    """The sweep's manifest (checked), each trial's run section, and its recorded sample matrix."""
    where = sweep_dir / sw.MANIFEST
    manifest = as_object(read_json_file(where), str(where))
    version = manifest.get("format_version")
    if manifest.get("format") != sw.FORMAT or not (is_number(version) and version <= sw.FORMAT_VERSION):
        raise GentoolError(f"{where}: not a sweep manifest this gentool reads (format {manifest.get('format')!r}, "
                           f"version {version!r})")
    grid = _check_grid(manifest.get("grid"), str(where))
    if not isinstance(manifest.get("trials"), list):
        raise GentoolError(f"{where}: \"trials\" must be a list")
    trials = [_check_trial(t, i, grid, sweep_dir, str(where)) for i, t in enumerate(manifest["trials"])]
    notes: list[str] = []
    for trial in trials:
        trial["anchor"] = slug(f"trial-{trial['index']:03d}", taken)
        if not os.path.lexists(trial["path"] / rundir.CONFIG):  # not started; a pipe there is said when read
            trial["run"] = None
            continue
        try:
            trial["run"] = collect_run(trial["path"], trial["run_dir"], trial["anchor"], animations)
        except (GentoolError, OSError) as exc:
            trial["run"], trial["error_reading"] = None, str(exc)
    matrix = None
    if os.path.lexists(sweep_dir / MATRIX_PNG):  # read, or named as left out (a pipe, a folder), by _picture
        which = "each configuration's first seed" if seed_stats.seeded(grid) else "each trial"
        matrix = _picture(sweep_dir / MATRIX_PNG, notes, f"Sample matrix: a strip of 8 samples from {which}'s "
                          "last checkpoint, rows by the other axes, columns by latent size",
                          f"{MATRIX_PNG} as the sweep drew it from {which}'s last checkpoint.")
    else:
        notes.append(f"no {MATRIX_PNG}: the sweep draws it when its last trial finishes")
    return {"name": sweep_dir.name, "path": str(sweep_dir), "manifest": manifest, "grid": grid, "trials": trials,
            "matrix": matrix, "notes": notes}
